"""MlflowTask: a Luigi task whose every execution is one MLflow run.

What a task is (parameters, identity, artifacts, loading) lives here; deciding
completion and recording an execution are the engine's (`_engine`), which sees the
task through its `TrackedTask` protocol.
"""

from __future__ import annotations

import pathlib
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import luigi
import luigi.parameter

from luigiflow import _settings
from luigiflow._core import provenance, redaction, serializers
from luigiflow._core.definition import validate_class
from luigiflow._core.identity import (
    UnencodableValueError,
    compute_identity,
    encode_value,
    keyed_value,
    seed_from_identity,
    training_line,
)
from luigiflow._core.parameters import (
    FileParameter,
    StepsParameter,
    check_value,
    encode_param,
    from_text,
)
from luigiflow._core.suggest import did_you_mean, listing
from luigiflow._engine import checkpoints, execution, luigi_compat
from luigiflow._engine import session as _session
from luigiflow._engine.luigi_compat import TypedRegister, replace_earlier_definitions
from luigiflow._engine.protocol import RUN_STATE, bind_run, bound_run, is_tracked
from luigiflow._errors import (
    ArtifactError,
    LuigiflowError,
    ParameterError,
    StrArtifactWarning,
    TaskDefinitionError,
)
from luigiflow._store import artifacts as _artifacts
from luigiflow._store import current as _current
from luigiflow._store import schema as _schema

if TYPE_CHECKING:
    from luigiflow._store.artifacts import RunWriter
    from luigiflow._store.records import RunRecord


class MlflowTask(luigi.Task, metaclass=TypedRegister):
    """A Luigi task recorded as one MLflow run; complete when a FINISHED run has its identity.

    Example::

        class Train(lf.MlflowTask):
            artifacts = {"model": "model.pkl"}
            alpha = luigi.FloatParameter(default=1.0)

            def requires(self):
                return {"data": Prepare()}

            def run_task(self):
                X, y = self.load("data")
                self.save({"model": fit(X, y, self.alpha)}, metrics={"score": 0.9})
    """

    __luigiflow_task__: ClassVar[bool] = True  # what the engine's is_tracked() looks for
    experiment_name: ClassVar[str | None] = None
    artifacts: ClassVar[dict[str, str]] = {}
    version: ClassVar[int | str] = 0
    code_in_identity: ClassVar[bool] = False
    early_cutoff: ClassVar[bool] = True  # reuse results over byte-identical upstream outputs
    code_files: ClassVar[tuple[str, ...]] = ()  # files read as code (relative to the project)
    models: ClassVar[dict[str, str]] = {}  # model output name -> MLflow flavour
    seed_random: ClassVar[bool] = True
    # The module that enters the identity (default: the one defining the class). After
    # moving a class to another module, set it to the old module to keep its runs.
    identity_module: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _refuse_luigi_style(cls)
        validate_class(
            cls,
            reserved=_reserved_names(),
            has_work=cls.run_task is not MlflowTask.run_task or cls.run is not MlflowTask.run,
            abstract=bool(cls.__dict__.get(luigi_compat.ABSTRACT)),
        )
        steps = sorted(
            {n for k in cls.__mro__ for n, v in vars(k).items() if isinstance(v, StepsParameter)}
        )
        if len(steps) > 1:  # which one would a warm start grow?
            raise TaskDefinitionError(
                f"{cls.__name__} declares {len(steps)} StepsParameters ({', '.join(steps)}); "
                "a training has one length: keep one, make the others luigi.IntParameter"
            )
        replace_earlier_definitions(cls)

    # ----- parameters and identity -------------------------------------------------

    @classmethod
    def get_param_values(
        cls, params: list[tuple[str, luigi.Parameter]], args: Any, kwargs: Any
    ) -> list[tuple[str, Any]]:
        """Luigi's parameter resolution, with every problem reported at once.

        A string given for a typed parameter is parsed as Luigi's command line would
        (`Train(retrieved_on="2026-01-01")` is a date).
        """
        family = cls.get_task_family()
        by_name = dict(params)
        problems: dict[str, str] = {}
        kwargs = dict(kwargs)
        for name, value in list(kwargs.items()):
            param = by_name.get(name)
            if param is None:
                problems[name] = (
                    f"unknown parameter {name!r}{did_you_mean(name, by_name)}; "
                    f"known: {listing(by_name)}"
                )
                del kwargs[name]
            elif isinstance(value, str):
                kwargs[name], problem = from_text(param, value)
                if problem:
                    problems[name] = f"parameter {name!r}: {problem}"
        values: list[tuple[str, Any]] = []
        try:
            values = super().get_param_values(params, args, kwargs)
        except luigi.parameter.MissingParameterException as exc:
            # Luigi's text shows its repr (`T[args=(), kwargs={}]: requires the 'x'
            # parameter to be set`); say which are missing and how to give them.
            positional = {n for n, _ in params[: len(args)]}
            missing = [
                n
                for n, p in params
                if n not in kwargs and n not in positional and not luigi_compat.param_default(p)[0]
            ]
            problems[""] = (
                "missing required parameter(s) "
                + ", ".join(
                    f"{n!r} (--{n.replace('_', '-')} VALUE on the command line)" for n in missing
                )
                if missing
                else str(exc)
            )
        except (luigi.parameter.ParameterException, ValueError, TypeError) as exc:
            problems[""] = str(exc)
        for name, value in values:
            problem = None if name in problems else check_value(by_name[name], value)
            if problem:
                problems[name] = f"parameter {name!r}: {problem}"
        if problems:
            raise ParameterError(f"{family}: " + "; ".join(problems.values()))
        return values

    @classmethod
    def get_params(cls) -> list[tuple[str, luigi.Parameter]]:
        # Luigi rebuilds this list with dir() on every call, and it is called for every
        # task many times per build; a class's parameters do not change once defined.
        cached = cls.__dict__.get("_lf_params")
        if cached is None:
            cached = super().get_params()
            cls._lf_params = cached  # type: ignore[attr-defined]
        return list(cached)

    @classmethod
    def get_experiment_name(cls) -> str:
        """The MLflow experiment holding this class's runs (default: the class name)."""
        return cls.experiment_name or cls.get_task_family()

    def requires_dict(self) -> dict[str, luigi.Task]:
        """`requires()` checked to be a dict of name -> task (or nothing)."""
        cached = self.__dict__.get("_lf_requires")
        if cached is not None:
            return dict(cached)
        raw = self.requires()
        if raw is None or (isinstance(raw, list | tuple) and not raw):
            result: dict[str, luigi.Task] = {}
        elif isinstance(raw, Mapping):
            bad = [
                k for k, v in raw.items() if not isinstance(k, str) or not isinstance(v, luigi.Task)
            ]
            if bad:
                raise TaskDefinitionError(
                    f"{self.get_task_family()}.requires() must map names (str) to task "
                    f"instances; wrong entries: {', '.join(map(repr, bad))}"
                )
            result = dict(raw)
        else:
            raise TaskDefinitionError(
                f"{self.get_task_family()}.requires() returned {type(raw).__name__}; it must "
                "return a dict of name -> task (e.g. {'data': Load()}) or None"
            )
        self.__dict__["_lf_requires"] = result
        return dict(result)

    def requires(self) -> Any:  # Luigi's default is an empty list: no upstream
        return {}

    @property
    def identity(self) -> str:
        """Stable hash of family, version, significant parameters and upstream identities."""
        cached = self.__dict__.get("_lf_identity")
        if cached is not None:
            return str(cached)
        identity = self._compute_identity()
        # A file's content can change while the process lives: identities that depend
        # on a FileParameter (here or upstream) are recomputed each time; file hashes
        # themselves are cached by size/mtime/inode, so this costs a stat per file.
        if not self._reads_files():
            self.__dict__["_lf_identity"] = identity
        return identity

    def _reads_files(self) -> bool:
        cached = self.__dict__.get("_lf_reads_files")
        if cached is None:
            own = any(isinstance(p, FileParameter) for _, p in self.get_params())
            cached = own or any(
                isinstance(dep, MlflowTask) and dep._reads_files()
                for dep in self.requires_dict().values()
            )
            self.__dict__["_lf_reads_files"] = cached
        return bool(cached)

    def _compute_identity(self) -> str:
        return compute_identity(*self._identity_parts())

    def _identity_parts(
        self,
    ) -> tuple[str, str, Any, dict[str, Any], dict[str, str], str | None, dict[str, str] | None]:
        params = {}
        for name, param in self.get_params():
            if not param.significant:
                continue
            try:
                params[name] = encode_param(param, getattr(self, name))
            except (OSError, UnencodableValueError) as exc:
                raise ParameterError(
                    f"{self.get_task_family()}: parameter {name!r}: {exc}"
                ) from exc
            if redaction.looks_secret(name):  # see keyed_value: no guessing from the tag
                params[name] = keyed_value(_settings.identity_key(), params[name])
        upstream = {
            name: dep.identity if is_tracked(dep) else f"luigi:{dep.task_id}"
            for name, dep in self.requires_dict().items()
        }
        module = self.identity_module or provenance.importable_module(type(self))
        origin = None if self.identity_module else provenance.main_origin(type(self))
        main = {"origin": origin, "code": provenance.main_code(type(self))} if origin else None
        code = self._identity_code()
        return module, self.get_task_family(), self.version, params, upstream, code, main

    def training(self) -> tuple[str, str, int] | None:
        """(training line, steps parameter name, steps) of a task with a StepsParameter:
        its runs of any number of steps share the line (see docs/identity.md); None for
        a task without one."""
        names = [n for n, p in self.get_params() if isinstance(p, StepsParameter)]
        if not names:
            return None
        cached = self.__dict__.get("_lf_line")
        if cached is None or self._reads_files():
            cached = training_line(*self._identity_parts(), steps=names[0])
            self.__dict__["_lf_line"] = cached
        return str(cached), names[0], int(getattr(self, names[0]))

    def _identity_code(self) -> str | None:
        """What of the code enters the identity (CommandTask: its scripts and command)."""
        return provenance.code_fingerprint(type(self)) if self.code_in_identity else None

    def __repr__(self) -> str:
        """Luigi's `Family(param=value, ...)`, secret-looking values `<redacted>`: a task's
        repr is in error messages, logs and `luigiflow run`'s header."""
        params = self.get_params()
        if not any(redaction.looks_secret(name) for name, _ in params):
            return str(super().__repr__())
        parts = []
        for name, param in params:
            if param.significant:
                secret = redaction.looks_secret(name)
                value = redaction.REDACTED if secret else param.serialize(getattr(self, name))
                parts.append(f"{name}={value}")
        return f"{self.get_task_family()}({', '.join(parts)})"

    @property
    def seed(self) -> int:
        """A seed derived from the identity: same task, same seed, in every process.

        A StepsParameter is left out: trainings of any length share their seed."""
        training = self.training()
        return seed_from_identity(training[0] if training else self.identity)

    def encoded_params(self) -> dict[str, Any]:
        """Every parameter value in canonical, type-tagged form (for exact reproduction)."""
        return {name: encode_value(getattr(self, name)) for name, _ in self.get_params()}

    # ----- completion and outputs --------------------------------------------------

    def find_run(self) -> RunRecord | None:
        """The FINISHED run that makes this task complete, or None.

        It reads like MLflow's `Run`: `run.info.run_id`, `run.data.metrics`, ...
        """
        run = _session.of(self).completion.find_finished_run(self)
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
        if not isinstance(dep, MlflowTask):
            raise ArtifactError(
                f"upstream {upstream!r} of {self.get_task_family()} is a plain Luigi task; "
                "read it with self.input()"
            )
        return dep.load_output(artifact)

    # ----- the run -----------------------------------------------------------------

    def run_task(self) -> None:
        """The work of the task; runs inside an active MLflow run. Override it."""
        raise NotImplementedError(f"{self.get_task_family()} must define run_task()")

    def run(self) -> None:
        execution.execute(self)

    def upstream_runs(self) -> dict[str, RunRecord]:
        """The FINISHED run of each luigiflow upstream task, by its name in requires()."""
        runs: dict[str, RunRecord] = {}
        for name, dep in self.requires_dict().items():
            if isinstance(dep, MlflowTask):
                runs[name] = dep._bound_run()
        return runs

    # ----- used inside run_task ----------------------------------------------------

    def _state(self, what: str) -> RunWriter:
        state: RunWriter | None = self.__dict__.get(RUN_STATE)
        if state is None:
            raise LuigiflowError(
                f"{self.get_task_family()}.{what}() works only inside run_task(), "
                "while the task's MLflow run is active"
            )
        return state

    def save(
        self, artifacts: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        """Store declared artifacts (`{name: obj}` or `{name: (obj, save_fn)}`) and metrics."""
        state = self._state("save")
        declared = [*self.artifacts, *self.models]
        unknown = [n for n in artifacts if n not in declared]
        if unknown:
            raise ArtifactError(
                f"{self.get_task_family()} (run {state.run_id}) saved undeclared artifact(s) "
                f"{', '.join(map(repr, unknown))}; declared: {', '.join(declared) or 'none'}"
            )
        for name, value in artifacts.items():
            if name not in self.models and serializers.looks_like_a_path(value):
                # Since 0.2.0 a str is always a value; it used to store the file it named,
                # so say so where the user wrote it rather than change behaviour silently.
                warnings.warn(
                    f"{self.get_task_family()}: artifact {name!r} is the str {value!r}, saved "
                    f"as that text, not the file it names; to store the file pass "
                    f"pathlib.Path({value!r}) (docs/upgrading.md)",
                    StrArtifactWarning,
                    stacklevel=2,
                )
            if name in self.models:
                from luigiflow.models import outputs

                family = self.get_task_family()
                state.models[name] = outputs.log_model(family, name, self.models[name], value)
            else:
                state.write(name, self.artifacts[name], value)
        for key, val in (metrics or {}).items():
            state.metrics[key] = _metric_value(self, key, val)

    def artifact_path_for(self, name: str) -> pathlib.Path:
        """A writable path for artifact `name` inside the run: write a large file there,
        then `save({name: path})` records it without copying a byte.

        Example::

            path = self.artifact_path_for("weights")
            model.save_weights(path)
            self.save({"weights": path})
        """
        state = self._state("artifact_path_for")
        return state.path_for(name, self._declared(name))

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Log a metric now (visible live in the MLflow UI while the task runs)."""
        state = self._state("log_metric")
        step = step or 0
        _current.get_store(state.uri).log_metric(
            state.run_id, key, _metric_value(self, key, value), step=step
        )
        # A value given to save(metrics=...) for this key later must be the run's
        # latest: MLflow ranks a metric's values by step, then time.
        state.steps[key] = max(step, state.steps.get(key, step))
        state.last_metric_ms = int(time.time() * 1000)

    def checkpoint(self, state: Any, step: int, keep: bool = False) -> None:
        """Save `state` (picklable) as this run's newest checkpoint at `step`, with the
        random states of Python, NumPy and PyTorch (restored on resume: exact resume).

        If this attempt dies, the next build of the same task gets it back from
        `last_checkpoint()` and can resume there::

            resumed = self.last_checkpoint()
            model, start = (resumed.state, resumed.step + 1) if resumed else (new(), 0)
            for epoch in range(start, self.epochs):
                train_one_epoch(model)
                self.checkpoint(model, epoch)

        `keep=True` keeps this step's checkpoint after later ones replace it as the
        newest: a shorter training of the same task (StepsParameter) starts from it.
        """
        checkpoints.save(self, self._state("checkpoint"), state, step, keep)

    def last_checkpoint(self) -> checkpoints.Checkpoint | None:
        """The checkpoint this run continues from, verified by checksum; None when none.

        The newest one of an earlier attempt of this task that did not finish (FAILED,
        KILLED or its worker gone); else, for a task with a StepsParameter, the last one
        of a FINISHED shorter training of the same task (warm start). The run takes that
        run's metric history up to the checkpoint's step and records where it came from;
        random states saved with the checkpoint are restored."""
        return checkpoints.last(self, self._state("last_checkpoint"))

    def log_model_bundle(
        self,
        stages: list[Any],
        input_example: Any,
        name: str = "model",
        predict_method: str = "predict",
        registered_model_name: str | None = None,
    ) -> str:
        """Log fitted processing stages + a model as one MLflow pyfunc model on this run.

        `predict(raw_rows)` of the logged model applies every stage's `transform` and then
        the last stage's `predict_method`. Returns the model URI; serve it with
        `luigiflow serve RUN_ID`.
        """
        state = self._state("log_model_bundle")
        from luigiflow.models.bundle import log_pipeline_model

        uri = log_pipeline_model(
            state.run_id,
            self.get_task_family(),
            stages,
            input_example,
            name,
            predict_method,
            registered_model_name,
        )
        state.note_tag(_schema.MODEL_URI_TAG, uri)  # the run's signature covers it
        return uri

    @property
    def run_id(self) -> str:
        """The id of the MLflow run this task is writing (inside run_task) or completed by."""
        state = self.__dict__.get(RUN_STATE)
        if state is not None:
            return str(state.run_id)
        return str(self._bound_run().info.run_id)


def _reserved_names() -> frozenset[str]:
    """Names of MlflowTask's own members (and Luigi's essentials) no parameter may take."""
    own = {n for n in vars(MlflowTask) if not n.startswith("_")}
    return frozenset(
        own | {"task_id", "task_family", "param_kwargs", "input", "output", "run", "complete"}
    )


def _metric_value(task: MlflowTask, key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ArtifactError(
            f"{task.get_task_family()}: metric {key!r} must be a number, got {value!r}"
        ) from None
    return number


class ArtifactTarget(luigi.Target):
    """A Luigi target for one artifact of the run that completes a task.

    `path` is resolved lazily, so `task.input()` downloads only what is actually read.
    """

    def __init__(self, task: MlflowTask, name: str) -> None:
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


def _refuse_luigi_style(cls: type) -> None:
    # A task written the Luigi way runs its run() outside any MLflow run and writes
    # outputs luigiflow never records, so it can never become complete: say what to
    # change when the class is defined instead of failing every build.
    luigi_style = [name for name in ("run", "output") if name in cls.__dict__]
    if not luigi_style:
        return
    defined = " and ".join(f"{name}()" for name in luigi_style)
    raise TaskDefinitionError(
        f"task class {cls.__name__}: it defines Luigi's {defined}; a luigiflow task does "
        "its work in run_task() (rename run() to run_task()) and declares its outputs as "
        "artifacts = {name: filename}, written with self.save({name: value}) "
        "instead of output()"
    )
