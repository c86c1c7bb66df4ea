"""Right before a task runs, runs that other workers finished meanwhile are found."""

from __future__ import annotations

import time
from typing import Any

import luigi
import pytest

import luigiflow as lf
from luigiflow._store import client as store_client
from luigiflow._store import current, schema
from tests.conftest import runs_of
from tests.dags import Gather

# What the "other worker" does while First runs: "finish" or "finish-then-delete".
_ACTION: dict[str, str] = {}


def _as_another_worker(task: lf.MlflowTask, action: str) -> str:
    client = store_client.get_client()
    exp_id = current.get_store().experiment_id(task.get_experiment_name(), create=True)
    assert exp_id is not None
    run = client.create_run(
        exp_id,
        tags={schema.IDENTITY_TAG: task.identity, schema.WORKER_TAG: "elsewhere/1/feedbeef"},
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    if action == "finish-then-delete":
        client.delete_run(run.info.run_id)
    return str(run.info.run_id)


class Second(lf.MlflowTask):
    artifacts: dict[str, str] = {}
    label = luigi.Parameter(default="x")

    def requires(self) -> dict[str, Any]:
        return {"first": First(label=self.label)}

    def run_task(self) -> None:
        pass


class First(lf.MlflowTask):
    artifacts: dict[str, str] = {}
    label = luigi.Parameter(default="x")

    def run_task(self) -> None:
        # Luigi has already decided Second is not complete; now another worker finishes it.
        _ACTION["run_id"] = _as_another_worker(Second(label=self.label), _ACTION["action"])


@pytest.mark.parametrize("interval", ["0", "1"])
def test_run_finished_by_another_worker_meanwhile_is_reused(client, monkeypatch, interval):
    monkeypatch.setenv("LUIGIFLOW_RECHECK_S", interval)
    _ACTION["action"] = "finish"
    second = Second(label=f"reuse-{interval}")
    result = lf.build([second])
    assert result.executed == [First(label=f"reuse-{interval}")]
    assert result.runs[second] == _ACTION["run_id"]
    assert [r.info.run_id for r in runs_of(client, "Second")] == [_ACTION["run_id"]]


class Link(lf.MlflowTask):
    """A chain in one experiment: Link(0) <- Link(1) <- Link(2)."""

    artifacts: dict[str, str] = {}
    i = luigi.IntParameter()
    tag = luigi.Parameter()

    def requires(self) -> dict[str, Any]:
        return {"prev": Link(i=self.i - 1, tag=self.tag)} if self.i else {}

    def run_task(self) -> None:
        if self.i == 0:  # meanwhile another worker finishes the last link
            _ACTION["run_id"] = _as_another_worker(Link(i=2, tag=self.tag), _ACTION["action"])


@pytest.mark.parametrize("interval", ["0", "3600"])
def test_watch_over_an_experiment_sees_runs_other_workers_finished(client, monkeypatch, interval):
    # Link(0) is checked exactly; Link(1) and Link(2) by the experiment's watch, whose
    # first look (before Link(1)) already sees the other worker's run.
    monkeypatch.setenv("LUIGIFLOW_RECHECK_S", interval)
    _ACTION["action"] = "finish"
    last = Link(i=2, tag=interval)
    result = lf.build([last])
    assert set(result.executed) == {Link(i=0, tag=interval), Link(i=1, tag=interval)}
    assert result.runs[last] == _ACTION["run_id"]


def test_deleted_run_of_another_worker_is_not_reused(client):
    _ACTION["action"] = "finish-then-delete"
    second = Second(label="deleted")
    result = lf.build([second])
    assert second in result.executed
    assert result.runs[second] != _ACTION["run_id"]


def test_completion_is_asked_in_batches_not_per_task(client, monkeypatch):
    # Each sibling's deps() names the shared upstream again, and every task re-checks
    # before it runs; neither may cost a query per task. Questions are counted at the
    # store port, whichever store answers them (MLflow's client or the SQL read path).
    calls: list[str] = []
    store_class = type(current.get_store())
    for name in (
        "find_finished",
        "finished_runs",
        "fetch_finished",
        "runs_with_identity",
        "running_runs",
        "get_runs",
    ):
        original = getattr(store_class, name)

        def counting(
            self: Any, *args: Any, _name: str = name, _f: Any = original, **kw: Any
        ) -> Any:
            calls.append(_name)
            return _f(self, *args, **kw)

        monkeypatch.setattr(store_class, name, counting)

    def settled(calls: list[str]) -> list[str]:
        # Exactly-once costs one look at the task's identity right after its run is
        # created (see _engine/claim.py): one per executed task, by design; the first
        # task of each experiment is also re-checked exactly with the same question.
        return [c for c in calls if c == "runs_with_identity"]

    monkeypatch.setenv("LUIGIFLOW_RECHECK_S", "3600")
    width = 40
    result = lf.build([Gather(width=width)])
    assert len(result.executed) == width + 2
    claims = settled(calls)
    # the first task of each of the 3 experiments is also re-checked exactly
    assert len(result.executed) <= len(claims) <= len(result.executed) + 3
    others = [c for c in calls if c != "runs_with_identity"]
    assert len(others) < width // 2, others
    calls.clear()
    again = lf.build([Gather(width=width + 5)])
    assert again.executed != []
    others = [c for c in calls if c != "runs_with_identity"]
    assert len(others) < width // 2, others


def test_a_look_marks_dead_workers_runs_killed(client, monkeypatch):
    monkeypatch.setenv("LUIGIFLOW_STALE_AFTER_S", "60")
    exp_id = current.get_store().experiment_id("Link", create=True)
    assert exp_id is not None
    dead, alive = (
        client.create_run(
            exp_id,
            tags={
                schema.IDENTITY_TAG: f"{name:0<64}",
                schema.WORKER_TAG: f"elsewhere/{name}/0",
                schema.HEARTBEAT_TAG: f"{beat:.3f}",
            },
        )
        for name, beat in (("dead", time.time() - 3600), ("alive", time.time()))
    )
    _ACTION["action"] = "finish"
    lf.build([Link(i=2, tag="retire")])  # Link(1) and Link(2) are re-checked by a look
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
    assert "abandoned" in client.get_run(dead.info.run_id).data.tags["luigiflow.error"]
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_bad_recheck_interval_is_a_clear_error(client, monkeypatch, value):
    # Checked before anything runs (this test passes alone and in any order).
    monkeypatch.setenv("LUIGIFLOW_RECHECK_S", value)
    with pytest.raises(lf.LuigiflowError, match=r"LUIGIFLOW_RECHECK_S=.*number of seconds"):
        lf.build([Link(i=1, tag=f"bad-{value}")])
    assert runs_of(client, "Link") == []
