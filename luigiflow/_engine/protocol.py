"""How the engine sees a task: the `TrackedTask` protocol (MlflowTask implements it).

The engine never imports the task class; it asks `is_tracked` and uses these members.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, TypeGuard

import luigi

from luigiflow._store.records import RunRecord


class TrackedTask(Protocol):
    """A Luigi task recorded as one run (see `luigiflow.MlflowTask`)."""

    task_id: str
    artifacts: ClassVar[dict[str, str]]
    version: ClassVar[int | str]
    seed_random: ClassVar[bool]
    code_in_identity: ClassVar[bool]

    @property
    def identity(self) -> str: ...

    @property
    def seed(self) -> int: ...

    def get_task_family(self) -> str: ...

    def get_experiment_name(self) -> str: ...

    def get_params(self) -> list[tuple[str, luigi.Parameter]]: ...

    def requires_dict(self) -> dict[str, luigi.Task]: ...

    def encoded_params(self) -> dict[str, Any]: ...

    def upstream_runs(self) -> dict[str, RunRecord]: ...

    def training(self) -> tuple[str, str, int] | None: ...

    def run_task(self) -> None: ...


def is_tracked(obj: Any) -> TypeGuard[TrackedTask]:
    """Whether `obj` is a task luigiflow records (an MlflowTask or a look-alike)."""
    return bool(getattr(type(obj), "__luigiflow_task__", False))


# Per-instance slots the engine keeps in a task's __dict__ (Luigi tasks are flyweights:
# one instance per class and parameters, so these live as long as the instance).
BOUND_RUN = "_lf_run"  # the FINISHED run that completed the task (a RunRecord)
RUN_STATE = "_lf_state"  # the RunWriter of the run being written, inside run_task()
SESSION = "_lf_session"  # the build session the task belongs to (travels with pickles)
STEP_WATCHER = "_lf_steps"  # who is told each per-step metric (a search's pruner; pickled too)


def bound_run(task: Any) -> RunRecord | None:
    run: RunRecord | None = task.__dict__.get(BOUND_RUN)
    return run


def bind_run(task: Any, run: RunRecord | None) -> None:
    if run is None:
        task.__dict__.pop(BOUND_RUN, None)
    else:
        task.__dict__[BOUND_RUN] = run
