"""A task's completion and outputs: the FINISHED run that completes it, its artifacts.

`MlflowTask` (`_task/task.py`) takes these methods from `TaskOutputs`; the class is
not meant to be used on its own.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any, ClassVar, cast

import luigi

from luigiflow._engine import session as _session
from luigiflow._engine.protocol import bind_run, bound_run
from luigiflow._errors import ArtifactError
from luigiflow._store import artifacts as _artifacts
from luigiflow._task.identity import TaskIdentity

if TYPE_CHECKING:
    from luigiflow._engine.protocol import TrackedTask
    from luigiflow._store.records import RunRecord


class TaskOutputs(TaskIdentity):
    """Completion, outputs and loading of an `MlflowTask`."""

    # Set by MlflowTask (where a user reads and overrides them).
    artifacts: ClassVar[dict[str, str]]
    models: ClassVar[dict[str, str]]

    def find_run(self) -> RunRecord | None:
        """The FINISHED run that makes this task complete, or None.

        It reads like MLflow's `Run`: `run.info.run_id`, `run.data.metrics`, ...
        """
        # self is an MlflowTask (the only class built on this one): a TrackedTask.
        run = _session.of(self).completion.find_finished_run(cast("TrackedTask", self))
        bind_run(self, run)
        return run

    def complete(self) -> bool:
        return self.find_run() is not None

    @classmethod
    def bulk_complete(cls, parameter_tuples: Any) -> list[Any]:
        """Those of `parameter_tuples` whose task is complete, decided in one batch.

        Luigi's range tools (`RangeDaily`, `RangeHourly`, ...) call this instead of
        reading output paths; `cls` may be a `functools.partial` of the class with
        the range's other parameters bound, as Luigi passes it.
        """
        given = list(parameter_tuples)  # Luigi may pass a one-shot iterator
        tasks = [_task_of(cls, values) for values in given]
        if not tasks:
            return []
        _session.of(tasks[0]).completion.prefetch(tasks)
        return [values for values, task in zip(given, tasks, strict=True) if task.complete()]

    def deps(self) -> list[luigi.Task]:
        # Luigi calls deps() right before asking each dependency complete(): decide
        # them all in one batch here (see _lookup for the freshness rule).
        deps = super().deps()
        _session.of(self).completion.prefetch(deps)
        return deps

    def output(self) -> dict[str, ArtifactTarget]:
        return {name: ArtifactTarget(self, name) for name in self.artifacts}

    def _bound_run(self) -> RunRecord:
        run = bound_run(self) or self.find_run()
        if run is None:
            raise ArtifactError(
                f"{self!r} has no FINISHED run in experiment "
                f"{self.get_experiment_name()!r}; build it first (luigiflow.build or luigiflow run)"
            )
        return run

    def _declared(self, name: str) -> str:
        if name not in self.artifacts:
            raise ArtifactError(
                f"{self.get_task_family()} declares no artifact {name!r}; "
                f"declared: {', '.join([*self.artifacts, *self.models]) or 'none'}"
            )
        return self.artifacts[name]

    def artifact_path(self, name: str) -> pathlib.Path:
        """Local, verified path of one artifact of this task's run (downloaded if remote)."""
        filename = self._declared(name)
        return _artifacts.verified_path(self._bound_run(), name, filename)

    def load_output(self, name: str | None = None, flavour: str | None = None) -> Any:
        """This task's output `name`, deserialized (the only one when `name` is omitted).

        A model output is checked against its recorded checksum and loaded with its
        MLflow flavour's loader, or with `flavour` (e.g. "pyfunc").
        """
        name = self._single_artifact_name(name)
        if name in self.models:
            from luigiflow.models import outputs

            return outputs.load_model(
                self.get_task_family(), self._bound_run(), name, flavour or self.models[name]
            )
        filename = self._declared(name)
        return _artifacts.load(self._bound_run(), name, filename)

    def _single_artifact_name(self, name: str | None) -> str:
        if name is not None:
            return name
        names = [*self.artifacts, *self.models]
        if len(names) != 1:
            raise ArtifactError(
                f"{self.get_task_family()} has {len(names)} outputs "
                f"({', '.join(names)}); name the one to load"
            )
        return names[0]

    def load(self, upstream: str, artifact: str | None = None) -> Any:
        """Artifact `artifact` of the upstream task named `upstream` in `requires()`."""
        deps = self.requires_dict()
        if upstream not in deps:
            raise ArtifactError(
                f"{self.get_task_family()} has no upstream named {upstream!r}; "
                f"requires() names: {', '.join(deps) or 'none'}"
            )
        dep = deps[upstream]
        if not isinstance(dep, TaskOutputs):
            raise ArtifactError(
                f"upstream {upstream!r} of {self.get_task_family()} is a plain Luigi task; "
                "read it with self.input()"
            )
        return dep.load_output(artifact)


class ArtifactTarget(luigi.Target):
    """A Luigi target for one artifact of the run that completes a task.

    `path` is resolved lazily, so `task.input()` downloads only what is actually read.
    """

    def __init__(self, task: TaskOutputs, name: str) -> None:
        self.task = task
        self.name = name
        self.filename = task.artifacts[name]

    @property
    def path(self) -> str:
        return str(self.task.artifact_path(self.name))

    @property
    def fn(self) -> str:
        return self.path

    def exists(self) -> bool:
        return self.task.find_run() is not None

    def open(self, mode: str = "r") -> Any:
        if "w" in mode or "a" in mode:
            raise ArtifactError(
                f"artifact {self.name!r} of {self.task!r} is read-only; "
                "write artifacts with self.save()"
            )
        return open(self.path, mode)

    def load(self) -> Any:
        return self.task.load_output(self.name)

    def __repr__(self) -> str:
        return f"ArtifactTarget({self.task.task_id}, {self.name!r})"


def _task_of(cls: Any, values: Any) -> luigi.Task:
    # The shapes Luigi's own MixinNaiveBulkComplete accepts: positional values, keyword
    # values, or one value.
    if isinstance(values, (list, tuple)):
        return cls(*values)
    if isinstance(values, dict):
        return cls(**values)
    return cls(values)
