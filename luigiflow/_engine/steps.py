"""Per-step metrics told to whoever watches a task: an adaptive search's pruner.

A search hands each trial task a watcher before building it (`watch`); the watcher
lives in the task's `__dict__`, so it reaches a forked worker with the task and travels
inside it when a worker receives the task pickled. `self.log_metric(key, value, step=N)`
tells it each value (`report`); a watcher that decides the trial should stop raises
`TrialPrunedError`, and the run is then tagged `luigiflow.pruned` and ended KILLED
(never FINISHED: a pruned trial is never a result).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from luigiflow._engine import session as _session
from luigiflow._engine.protocol import RUN_STATE, STEP_WATCHER
from luigiflow._errors import TrialPrunedError
from luigiflow._store import schema


class StepWatcher(Protocol):
    """Told each per-step value; raises TrialPrunedError to stop the run."""

    name: str  # what stops the trial, for the run's tag: "median pruner"

    def __call__(self, key: str, value: float, step: int) -> None: ...


def watch(task: Any, watcher: StepWatcher | None) -> None:
    """Let `watcher` see the values `task` logs per step in its next run (None: nobody)."""
    if watcher is None:
        task.__dict__.pop(STEP_WATCHER, None)
    else:
        task.__dict__[STEP_WATCHER] = watcher


def report(task: Any, key: str, value: float, step: int) -> None:
    """Tell the task's watcher a value just logged; tag the run when it stops the trial."""
    watcher: StepWatcher | None = task.__dict__.get(STEP_WATCHER)
    if watcher is None:
        return
    try:
        watcher(key, value, step)
    except TrialPrunedError:
        state = task.__dict__.get(RUN_STATE)
        if state is not None:
            record = {"step": step, "metric": key, "value": value, "pruner": watcher.name}
            _session.of(task).store.set_tag(state.run_id, schema.PRUNED_TAG, json.dumps(record))
        raise
