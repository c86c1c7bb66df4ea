"""A task another worker's live run holds is set aside while other tasks are ready
(_engine/held.py): Luigi runs them first, then waits for the holder, then runs the task
again, which reuses the holder's FINISHED run or, if it failed, executes."""

from __future__ import annotations

import threading
import time

import luigi
import pytest

import luigiflow as lf
from luigiflow._engine import run_facts
from luigiflow._store import current
from tests.conftest import add_run
from tests.dags import note

BOUND_S = 30.0


class Urgent(lf.MlflowTask):
    """Index 0 ranks first (a higher priority): the worker picks it before index 1."""

    artifacts = {"out": "out.json"}
    index = luigi.IntParameter()

    @property
    def priority(self) -> int:  # type: ignore[override]
        return 10 if self.index == 0 else 0

    def run_task(self) -> None:
        note(f"Urgent({self.index})")
        self.save({"out": self.index})


class Both(lf.MlflowTask):
    artifacts = {"n": "n.json"}

    def requires(self) -> dict[str, luigi.Task]:
        return {f"u{i}": Urgent(index=i) for i in range(2)}

    def run_task(self) -> None:
        note("Both")
        self.save({"n": 2})  # loads nothing: the holder's run below has no artifacts


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("ends", ["FAILED", "FINISHED"])
def test_a_task_held_elsewhere_waits_until_other_ready_tasks_ran(
    store, tmp_path, monkeypatch, ends, workers
):
    ledger = tmp_path / "ledger"
    monkeypatch.setenv("LEDGER", str(ledger))
    runs = current.get_store()
    holder = add_run(runs, Urgent(index=0), status=None)  # another worker's live lease

    def end_the_holder_once_urgent_1_ran() -> None:
        deadline = time.monotonic() + BOUND_S  # before the fix: never; the test then fails
        while time.monotonic() < deadline:
            if ledger.exists() and "Urgent(1)" in ledger.read_text():
                break
            time.sleep(0.05)
        runs.terminate(holder.info.run_id, ends)

    other_worker = threading.Thread(target=end_the_holder_once_urgent_1_ran)
    other_worker.start()
    result = lf.build([Both()], workers=workers)  # 2: tasks run in worker processes
    other_worker.join()

    if ends == "FAILED":  # the task is free again: this build executes it
        assert ledger.read_text().split() == ["Urgent(1)", "Urgent(0)", "Both"]
        assert result.runs[Urgent(index=0)] != holder.info.run_id
    else:  # the holder's run is reused
        assert ledger.read_text().split() == ["Urgent(1)", "Both"]
        assert result.runs[Urgent(index=0)] == holder.info.run_id
        assert Urgent(index=0) in result.reused
    # The wait is Luigi's only: the build names the tasks of its graph, nothing else.
    assert {type(t).__name__ for t in result.runs} == {"Urgent", "Both"}


def test_among_other_workers_a_run_finished_while_ours_was_prepared_costs_no_killed_run(
    store, tmp_path, monkeypatch
):
    # Another worker builds beside this one (its live run of a task outside this graph),
    # and every re-check looks at the others' runs: this build knows it is not alone.
    # (A run another process FINISHED or FAILED before this build began would not say so.)
    runs = current.get_store()
    add_run(runs, Urgent(index=9), status=None)
    monkeypatch.setenv("LUIGIFLOW_RECHECK_S", "0")
    prepare = run_facts.start_tags

    def another_worker_finishes_urgent_1_meanwhile(task, *args, **kwargs):  # type: ignore[no-untyped-def]
        if task == Urgent(index=1):
            add_run(runs, task, status="FINISHED")
        return prepare(task, *args, **kwargs)

    monkeypatch.setattr(run_facts, "start_tags", another_worker_finishes_urgent_1_meanwhile)
    result = lf.build([Both()])

    assert Urgent(index=1) in result.reused
    exp_id = runs.experiment_id("Urgent")
    assert exp_id is not None
    statuses = [
        r.info.status for r in runs.runs_with_identity(exp_id, Urgent(index=1).identity, 50)
    ]
    assert statuses == ["FINISHED"]  # before: a KILLED run of ours too, yielding to it
