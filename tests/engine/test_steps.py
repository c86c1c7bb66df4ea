"""A watcher of per-step metrics (an adaptive search's pruner) may stop a run: the run
ends KILLED with the step it stopped at, and is never a result."""

from __future__ import annotations

import json

import luigiflow as lf
from luigiflow._engine import steps
from luigiflow._errors import TrialPrunedError
from tests.conftest import runs_of
from tests.luigi_users.search_tasks import Curve


class StopAtStep:
    """Stops the run when told a value of `score` at `step`."""

    name = "test pruner"

    def __init__(self, step: int) -> None:
        self.step = step
        self.told: list[tuple[str, float, int]] = []

    def __call__(self, key: str, value: float, step: int) -> None:
        self.told.append((key, value, step))
        if step == self.step:
            raise TrialPrunedError(f"stopped at step {step}")


def test_a_watcher_that_stops_a_run_leaves_it_killed_and_tagged_never_finished(client):
    task = Curve(quality=0.25)
    watcher = StopAtStep(1)
    steps.watch(task, watcher)
    result = lf.build([task], raise_on_failure=False)
    steps.watch(task, None)
    assert task in result.failed
    assert watcher.told == [("score", 0.25, 0), ("score", 0.5, 1)]
    [run] = runs_of(client, "Curve")
    assert run.info.status == "KILLED"
    assert json.loads(run.data.tags["luigiflow.pruned"]) == {
        "step": 1,
        "metric": "score",
        "value": 0.5,
        "pruner": "test pruner",
    }
    assert run.data.tags["luigiflow.error"] == "TrialPrunedError: stopped at step 1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "score")] == [0, 1]
    assert task.find_run() is None  # a pruned run is never the task's result

    # Unwatched, the same task runs to its end in a new run.
    lf.build([task])
    assert task.find_run() is not None
    assert [r.info.status for r in runs_of(client, "Curve")] == ["KILLED", "FINISHED"]
