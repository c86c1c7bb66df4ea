"""Stages as task classes: one CommandTask subclass (or a named Python task) per stage.

A stage's parameters are Luigi parameters named by their dotted keys (`train.n_est`),
so they are logged, compared by `diff`, shown by `runs` and hashed into the identity
like any task's. A stage depends on another when it reads a path the other declares
as an output; the upstream run's artifact is then placed at that path.

In a pipeline file, a stage also carries the parameters of every stage upstream of it
(`evaluate` has `train.n_est`), as a class task exposes a step's parameter to sweep
it: a sweep or a command-line value given to the stage built reaches the stage that
uses it, and each point is another task (another Luigi task id, another identity).
A key of the file's [params] tree keeps its name (`train.n_est`, one value for every
stage naming it); a stage's own table value or a Python task stage's parameter is
carried as `STAGE.NAME`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import pathlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import luigi

from luigiflow._command.task import CommandTask
from luigiflow._core import provenance
from luigiflow._engine import luigi_compat
from luigiflow._engine.protocol import bind_run
from luigiflow._errors import ConfigError, ParameterError, RunNotFoundError, TaskNotFoundError
from luigiflow._ops.modules import parse_param_words
from luigiflow._ops.stages.dvc import read as read_dvc
from luigiflow._ops.stages.pipeline_file import read as read_pipeline_file
from luigiflow._ops.stages.spec import CommandStage, Stage, StageSource, TaskStage
from luigiflow._store import current, schema

KINDS = ("pipeline", "dvc")


class Pipeline:
    """The stages of one file, as task factories, in the order declared."""

    def __init__(
        self,
        source_kind: str,
        path: pathlib.Path,
        stages: list[Stage],
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.kind = source_kind
        self.path = path
        # dvc.yaml: params-file values given on the command line (`--set train.n_est=60`)
        self.overrides = dict(overrides or {})
        # A frozen DVC stage does not run: the stages reading its outputs read them as
        # data files of the workspace (content in their identity), as `dvc repro` does.
        self.frozen = [s.name for s in stages if isinstance(s, CommandStage) and s.frozen]
        self.stages = {s.name: s for s in stages if s.name not in self.frozen}
        self.factories: dict[str, Callable[[], luigi.Task]] = {}
        self.classes: dict[str, type[luigi.Task]] = {}
        # stage -> its Luigi parameter name -> the pipeline-wide key of that value
        self.keys: dict[str, dict[str, str]] = {}
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
        carried = self._carried(upstream)
        for name, stage in self.stages.items():
            if isinstance(stage, TaskStage):
                self.classes[name] = stage.task_class
                self.keys[name] = {n: pk for pk, (n, _p) in _offered(self.kind, stage).items()}
            else:
                own = {n: pk for pk, (n, _p) in _offered(self.kind, stage).items()}
                clash = [pk for pk in carried[name] if pk in own and own[pk] != pk]
                if clash:
                    raise ConfigError(
                        f"{self.path}: stage {name!r}: its own parameter(s) "
                        f"{', '.join(map(repr, clash))} have the name of an upstream stage's "
                        "value; rename one of them"
                    )
                self.keys[name] = {**own, **{pk: pk for pk in carried[name]}}
                self.classes[name] = _command_class(self, stage, upstream[name], carried[name])
            self.factories[name] = functools.partial(self.make, name, {})

    def _carried(self, upstream: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
        """stage -> the parameters (key -> Luigi parameter) of its upstream stages that it
        does not declare itself (a dvc.yaml's `evaluate` shows `train.n_est` in `runs`)."""
        reach: dict[str, dict[str, Any]] = {}
        visiting: list[str] = []

        def walk(name: str) -> dict[str, Any]:
            if name in reach:
                return reach[name]
            if name in visiting:
                cycle = " -> ".join([*visiting[visiting.index(name) :], name])
                raise ConfigError(f"{self.path}: stages depend on each other: {cycle}")
            visiting.append(name)
            found = {
                pk: param for pk, (_n, param) in _offered(self.kind, self.stages[name]).items()
            }
            for other in upstream.get(name, {}).values():
                for pk, param in walk(other).items():
                    found.setdefault(pk, param)
            visiting.pop()
            reach[name] = found
            return found

        carried = {}
        for name, stage in self.stages.items():
            own = _offered(self.kind, stage)
            carried[name] = {pk: p for pk, p in walk(name).items() if pk not in own}
        return carried

    def make(
        self, stage: str, values: Mapping[str, Any], own: Mapping[str, Any] | None = None
    ) -> luigi.Task:
        """The task of `stage` given values by pipeline-wide key, or by the stage's own
        parameter names (`own`); the rest are the file's."""
        given = {n: values[pk] for n, pk in self.keys[stage].items() if pk in values}
        given.update(own or {})
        declared = self.stages[stage]
        if isinstance(declared, TaskStage):
            return declared.task_class(**{**declared.values, **given})
        return self.classes[stage](**given)

    @property
    def always_changed(self) -> list[str]:
        """Stages that run in every build (DVC's `always_changed: true`)."""
        return [n for n, s in self.stages.items() if getattr(s, "always_changed", False)]

    def values_of(self, task: luigi.Task, stage: str) -> dict[str, Any]:
        """A stage task's parameter values by pipeline-wide key."""
        return {pk: getattr(task, n) for n, pk in self.keys[stage].items()}

    def leaves(self) -> list[str]:
        """The stages no other stage reads from."""
        used = {
            source.partition(".")[0]
            for s in self.stages.values()
            if isinstance(s, CommandStage)
            for source in s.inputs.values()
        }
        return [n for n in self.stages if _upstream_name(n) not in used]

    def check_stage(self, stage: str) -> None:
        if stage in self.frozen:
            raise TaskNotFoundError(
                f"{self.path}: stage {stage!r} is frozen (frozen: true): it never runs; "
                "unfreeze it to run it"
            )
        if stage not in self.classes:
            raise TaskNotFoundError(
                f"{self.path} has no stage {stage!r}; stages: {', '.join(self.stages)}"
            )

    def roots(self, stage: str | None = None, words: Sequence[str] = ()) -> list[luigi.Task]:
        """The tasks to build: one stage, or every stage no other stage reads from, with
        parameter values given as `--name value` words (`--train.n_est 50`)."""
        if stage is not None:
            self.check_stage(stage)
        names = [stage] if stage is not None else self.leaves()
        if not words:
            return [self.make(n, {}) for n in names]
        if self.kind != "pipeline":
            raise ParameterError(
                f"{self.path}: a DVC stage reads its parameters from its params files: "
                f"give {words[0]} as --set KEY=VALUE (e.g. --set train.n_est=60)"
            )
        params: dict[str, luigi.Parameter] = {}
        for name in names:
            for key, param in self.classes[name].get_params():
                params.setdefault(key, param)
        label = f"stage {stage!r}" if stage is not None else f"stages {', '.join(names)}"
        values = parse_param_words(label, params, words, dashes=False)
        roots = []
        for name in names:
            own = dict(self.classes[name].get_params())
            roots.append(self.make(name, {}, {k: v for k, v in values.items() if k in own}))
        return roots

    @contextlib.contextmanager
    def params_overlay(self, overrides: Mapping[str, Any] | None = None) -> Iterator[list[str]]:
        """While a build runs, the params files hold the values given with `--set` (or
        `overrides`, {"[file:]key": value}): the scripts read them there, as after `dvc
        exp run --set-param`; afterwards each file gets its own bytes back, even after
        SIGKILL (`dvc_params`). Yields the files changed."""
        from luigiflow._core import datafiles
        from luigiflow._ops.stages import dvc_params
        from luigiflow._ops.stages.dvc_overrides import overridden_tree, override_files

        chosen = self.overrides if overrides is None else overrides
        files = override_files(self.path.parent, chosen)
        texts = {
            file: datafiles.tree_text(file, overridden_tree(file, values))
            for file, values in files.items()
        }
        with dvc_params.overlay(self.path.parent, texts) as changed:
            yield changed

    def file_overrides(self, task: luigi.Task) -> dict[str, Any]:
        """The values ({"file:key": value}) a dvc.yaml stage task was made with that its
        params files do not hold: what they must hold while it runs (a sweep point)."""
        stage = type(task).stage_source["stage"]  # type: ignore[attr-defined]
        read = {
            key: (rel, stage_.params[key])
            for stage_ in self.stages.values()
            if isinstance(stage_, CommandStage)
            for key, rel in stage_.params_from.items()
        }
        found = {}
        for key, value in self.values_of(task, stage).items():
            if isinstance(value, tuple):  # a ListParameter's value; the file holds a list
                value = json.loads(json.dumps(value))
            if key in read and value != read[key][1]:
                found[f"{read[key][0]}:{key}"] = value
        return found

    def restore_workspace(self, runs: Mapping[luigi.Task, str]) -> list[str]:
        """Outputs of stages run in place made to match the runs of this build (as
        `dvc checkout` does); returns the paths restored.

        `runs` is the build's run of each task: looking a task up again could answer with
        what `plan` saw before the build (a stage that runs in every build, `always_changed`,
        would get its previous run's outputs back)."""
        from luigiflow._command.run import restore_outputs

        in_place = [t for t in runs if isinstance(t, CommandTask) and t.in_place]
        records = current.get_store().get_runs([runs[t] for t in in_place])
        restored: list[str] = []
        for task in in_place:
            bind_run(task, records.get(runs[task]))
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


def _offered(kind: str, stage: Stage) -> dict[str, tuple[str, luigi.Parameter]]:
    """A stage's parameters by pipeline-wide key: key -> (its own name, a parameter whose
    default is the file's value)."""
    if isinstance(stage, TaskStage):
        found = {}
        for name, param in stage.task_class.get_params():
            has_default, default = luigi_compat.param_default(param)
            if not param.significant or not (name in stage.values or has_default):
                continue
            carried = copy.copy(param)
            carried._default = stage.values.get(name, default)
            found[f"{stage.name}.{name}"] = (name, carried)
        return found
    shared = stage.shared_params or kind != "pipeline"
    return {
        (name if shared else f"{stage.name}.{name}"): (name, parameter_for(value))
        for name, value in stage.params.items()
    }


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


def _command_class(
    pipeline: Pipeline, stage: CommandStage, needs: dict[str, str], carried: dict[str, Any]
) -> type:
    collisions = [k for k in stage.params if hasattr(CommandTask, k)]
    if collisions:
        raise ConfigError(
            f"{pipeline.path}: stage {stage.name!r}: parameter name(s) "
            f"{', '.join(map(repr, collisions))} clash with task attributes; nest them "
            "under a section (e.g. train.seed)"
        )

    def requires(self: Any) -> dict[str, luigi.Task]:
        values = pipeline.values_of(self, stage.name)
        return {name: pipeline.make(other, values) for name, other in needs.items()}

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
        "host_environment": dict(stage.host_environment),
        "joins_mlflow_run": stage.joins_mlflow_run,
        "quote_values": stage.quote_values,
        "always_changed": stage.always_changed,
        "stage_metadata": copy.deepcopy(stage.metadata),
        "stage_source": StageSource(pipeline.kind, str(pipeline.path), stage.name).as_dict(),
        provenance.SOURCE_ATTRIBUTE: str(pipeline.path),
        "requires": requires,
        "__reduce__": _reduce_stage,
    }
    for key, value in stage.params.items():
        attrs[key] = parameter_for(value)
    attrs.update(carried)
    attrs["carried_params"] = tuple(carried)
    try:
        return type(stage.name, (CommandTask,), attrs)
    except Exception as exc:  # TaskDefinitionError and Luigi's own complaints
        raise ConfigError(f"{pipeline.path}: stage {stage.name!r}: {exc}") from exc


def load(
    kind: str, path: str | pathlib.Path, overrides: Mapping[str, Any] | None = None
) -> Pipeline:
    """Read a pipeline file (`kind` "pipeline") or a dvc.yaml (`kind` "dvc"; `overrides`
    as `dvc exp run --set-param`: {"[file:]key": value})."""
    path = pathlib.Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"{kind} file {path} does not exist")
    if kind == "dvc":
        from luigiflow._ops.stages.dvc_params import restore_leftovers

        # Before anything reads the params files: a killed build's --set values go.
        for line in restore_leftovers(path.parent):
            print(f"luigiflow: {line}", file=sys.stderr)
        pipeline = Pipeline(kind, path, read_dvc(path, overrides), overrides)
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
