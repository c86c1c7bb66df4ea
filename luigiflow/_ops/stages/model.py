"""Stages as task classes: one CommandTask subclass (or a named Python task) per stage.

A stage's parameters are Luigi parameters named by their dotted keys (`train.n_est`),
so they are logged, compared by `diff`, shown by `runs` and hashed into the identity
like any task's. A stage depends on another when it reads a path the other declares
as an output; the upstream run's artifact is then placed at that path.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import luigi

from luigiflow._command.task import CommandTask
from luigiflow._errors import ConfigError, RunNotFoundError, TaskNotFoundError
from luigiflow._ops.stages.dvc import read as read_dvc
from luigiflow._ops.stages.pipeline_file import read as read_pipeline_file
from luigiflow._ops.stages.spec import CommandStage, Stage, StageSource, TaskStage
from luigiflow._store import schema

KINDS = ("pipeline", "dvc")


class Pipeline:
    """The stages of one file, as task factories, in the order declared."""

    def __init__(self, source_kind: str, path: pathlib.Path, stages: list[Stage]) -> None:
        self.kind = source_kind
        self.path = path
        self.stages = {s.name: s for s in stages}
        self.factories: dict[str, Callable[[], luigi.Task]] = {}
        self.classes: dict[str, type[luigi.Task]] = {}
        self._link()

    def _link(self) -> None:
        problems: list[str] = []
        produced: dict[str, tuple[str, str]] = {}  # path -> (stage, artifact name)
        for stage in self.stages.values():
            if isinstance(stage, CommandStage):
                for name, rel in stage.declared().items():
                    if rel in produced:
                        problems.append(
                            f"stages {produced[rel][0]!r} and {stage.name!r} both declare "
                            f"output {rel!r}"
                        )
                    produced[rel] = (stage.name, name)
        upstream: dict[str, dict[str, str]] = {}
        for stage in self.stages.values():
            if not isinstance(stage, CommandStage):
                continue
            needs: dict[str, str] = {}
            kept = []
            for dep in stage.deps:
                owner = _owner(dep, produced)
                if owner is None:
                    kept.append(dep)
                    continue
                out_path, (other, artifact) = owner
                if other == stage.name:
                    problems.append(f"stage {stage.name!r} depends on its own output {dep!r}")
                    continue
                stage.inputs.setdefault(out_path, f"{_upstream_name(other)}.{artifact}")
                needs[_upstream_name(other)] = other
            stage.deps = kept
            for rel, source in stage.inputs.items():
                name, _, _artifact = source.partition(".")
                match = [s for s in self.stages if _upstream_name(s) == name]
                if not match:
                    problems.append(
                        f"stage {stage.name!r}: input {rel!r} = {source!r} names no stage "
                        f"(stages: {', '.join(self.stages)})"
                    )
                    continue
                needs[name] = match[0]
            upstream[stage.name] = needs
            missing = [d for d in stage.deps if not (stage.root / d).exists()]
            if missing:
                problems.append(
                    f"stage {stage.name!r}: dep(s) {', '.join(map(repr, missing))} do not "
                    f"exist under {stage.root} and no stage declares them as output"
                )
        if problems:
            raise ConfigError(f"{self.path}: " + "; ".join(problems))
        for name, stage in self.stages.items():
            if isinstance(stage, TaskStage):
                self.classes[name] = stage.task_class
                self.factories[name] = _task_factory(stage)
            else:
                cls = _command_class(self, stage, upstream[name])
                self.classes[name] = cls
                self.factories[name] = cls

    def roots(self, stage: str | None = None) -> list[luigi.Task]:
        """The tasks to build: one stage, or every stage no other stage reads from."""
        if stage is not None:
            if stage not in self.factories:
                raise TaskNotFoundError(
                    f"{self.path} has no stage {stage!r}; stages: {', '.join(self.stages)}"
                )
            return [self.factories[stage]()]
        used = {
            source.partition(".")[0]
            for s in self.stages.values()
            if isinstance(s, CommandStage)
            for source in s.inputs.values()
        }
        leaves = [n for n in self.stages if _upstream_name(n) not in used]
        return [self.factories[n]() for n in leaves]

    def restore_workspace(self, tasks: list[luigi.Task]) -> list[str]:
        """Outputs of stages run in place made to match the runs of this build (as
        `dvc checkout` does); returns the paths restored."""
        from luigiflow._command.run import restore_outputs

        restored: list[str] = []
        for task in tasks:
            if isinstance(task, CommandTask) and task.in_place:
                restored.extend(restore_outputs(task))
        return restored


def _owner(dep: str, produced: Mapping[str, tuple[str, str]]) -> tuple[str, tuple[str, str]] | None:
    pure = pathlib.PurePosixPath(dep)
    for rel, owner in produced.items():
        if pure == pathlib.PurePosixPath(rel) or pure.is_relative_to(rel):
            return rel, owner
    return None


def _upstream_name(stage: str) -> str:
    # MLflow tag keys allow letters, digits, '_', '-', '.', ' ', '/': `split@a` -> `split_a`.
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in stage)


def _task_factory(stage: TaskStage) -> Callable[[], luigi.Task]:
    def make() -> luigi.Task:
        return stage.task_class(**stage.values)

    return make


def parameter_for(value: Any) -> Any:
    """A Luigi parameter whose type fits a value read from a file (its default)."""
    if isinstance(value, bool):
        return luigi.BoolParameter(default=value, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    if isinstance(value, int):
        return luigi.IntParameter(default=value)
    if isinstance(value, float):
        return luigi.FloatParameter(default=value)
    if isinstance(value, list):
        return luigi.ListParameter(default=tuple(value))
    if isinstance(value, dict):
        return luigi.DictParameter(default=value)
    if value is None:
        return luigi.OptionalParameter(default=None)
    return luigi.Parameter(default=str(value))


def _command_class(pipeline: Pipeline, stage: CommandStage, needs: dict[str, str]) -> type:
    collisions = [k for k in stage.params if hasattr(CommandTask, k)]
    if collisions:
        raise ConfigError(
            f"{pipeline.path}: stage {stage.name!r}: parameter name(s) "
            f"{', '.join(map(repr, collisions))} clash with task attributes; nest them "
            "under a section (e.g. train.seed)"
        )

    def requires(self: Any) -> dict[str, luigi.Task]:
        return {name: pipeline.factories[other]() for name, other in needs.items()}

    declared = stage.declared()
    outs = {n: p for n, p in declared.items() if p in stage.outs}
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": f"Stage {stage.name!r} of {pipeline.path}.",
        "_visible_in_registry": False,  # many files may declare a stage of one name
        "experiment_name": stage.experiment or stage.name,
        "command": stage.command if stage.command is not None else (),
        "commands": tuple(stage.commands),
        "project_dir": str(stage.root),
        "workdir": stage.workdir,
        "files": tuple(stage.deps),
        "inputs": dict(stage.inputs),
        "outs": outs,
        "params_file": stage.params_file,
        "params_from": dict(stage.params_from),
        "metrics_file": list(stage.metrics),
        "plots": tuple(stage.plots),
        "in_place": stage.in_place,
        "persist": tuple(stage.persist),
        "environment": dict(stage.environment),
        "joins_mlflow_run": stage.joins_mlflow_run,
        "quote_values": stage.quote_values,
        "stage_source": StageSource(pipeline.kind, str(pipeline.path), stage.name).as_dict(),
        "requires": requires,
        "__reduce__": _reduce_stage,
    }
    for key, value in stage.params.items():
        attrs[key] = parameter_for(value)
    try:
        return type(stage.name, (CommandTask,), attrs)
    except Exception as exc:  # TaskDefinitionError and Luigi's own complaints
        raise ConfigError(f"{pipeline.path}: stage {stage.name!r}: {exc}") from exc


def load(kind: str, path: str | pathlib.Path) -> Pipeline:
    """Read a pipeline file (`kind` "pipeline") or a dvc.yaml (`kind` "dvc")."""
    path = pathlib.Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"{kind} file {path} does not exist")
    if kind == "dvc":
        pipeline = Pipeline(kind, path, read_dvc(path))
    else:
        pipeline = Pipeline(kind, path, read_pipeline_file(path))
    _loaded[(kind, str(path))] = pipeline
    return pipeline


# The pipeline each file was last read as in this process: a stage task received
# pickled (worker processes under forkserver or spawn) is rebuilt from its classes.
_loaded: dict[tuple[str, str], Pipeline] = {}


def _reduce_stage(task: Any) -> tuple[Any, ...]:
    # Stage classes are made at run time, so pickle cannot find them by name: a task
    # travels as (file, stage, parameter values) plus its instance state.
    source = type(task).stage_source
    args = (source["kind"], source["path"], source["stage"], dict(task.param_kwargs))
    return (rebuild_stage, args, dict(task.__dict__))


def rebuild_stage(kind: str, path: str, stage: str, values: dict[str, Any]) -> luigi.Task:
    """A stage task from its file, stage name and parameter values."""
    pipeline = _loaded.get((kind, path)) or load(kind, path)
    return pipeline.classes[stage](**values)


def stage_class_for_run(tags: Mapping[str, str]) -> type[luigi.Task] | None:
    """The class of the stage that made a run, re-read from its file (None: not a stage)."""
    raw = tags.get(schema.STAGE_TAG)
    if not raw:
        return None
    try:
        source = json.loads(raw)
        kind, path, name = source["kind"], source["path"], source["stage"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RunNotFoundError(f"the stage record of this run is unreadable: {raw!r}") from exc
    if kind not in KINDS:
        raise RunNotFoundError(f"the stage record names an unknown file kind {kind!r}")
    pipeline = load(kind, path)
    if name not in pipeline.classes:
        raise TaskNotFoundError(
            f"{path} no longer declares stage {name!r}; stages: {', '.join(pipeline.classes)}"
        )
    return pipeline.classes[name]
