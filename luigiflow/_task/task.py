"""MlflowTask: a Luigi task whose every execution is one MLflow run.

What a task is lives in this package: its parameters and identity (`identity.py`),
its completion and outputs (`outputs.py`), and here the class itself with what is
used inside `run_task`. Deciding completion and recording an execution are the
engine's (`_engine`), which sees the task through its `TrackedTask` protocol.
"""

from __future__ import annotations

import pathlib
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import luigi

from luigiflow._core import serializers
from luigiflow._core.definition import validate_class
from luigiflow._core.parameters import StepsParameter
from luigiflow._engine import checkpoints, execution, luigi_compat, steps
from luigiflow._engine.luigi_compat import TypedRegister, replace_earlier_definitions
from luigiflow._engine.protocol import RUN_STATE
from luigiflow._errors import (
    ArtifactError,
    LuigiflowError,
    StrArtifactWarning,
    TaskDefinitionError,
)
from luigiflow._store import current as _current
from luigiflow._store import schema as _schema
from luigiflow._task.outputs import TaskOutputs

if TYPE_CHECKING:
    from luigiflow._store.artifacts import RunWriter
    from luigiflow._store.records import RunRecord


class MlflowTask(TaskOutputs, luigi.Task, metaclass=TypedRegister):
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

    # ----- the run -----------------------------------------------------------------

    def run_task(self) -> None:
        """The work of the task; runs inside an active MLflow run. Override it."""
        raise NotImplementedError(f"{self.get_task_family()} must define run_task()")

    def run(self) -> Iterator[luigi.Task] | None:
        # A generator when another worker holds the task: Luigi runs other ready tasks
        # first (see _engine/held.py).
        return execution.execute(self)

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
        """Store declared artifacts and metrics: `{name: obj}`, `{name: (obj, save_fn)}`,
        or `{name: (obj, save_fn, load_fn)}`, whose `load_fn(path)` then reads it back
        (a function at the top level of a module: the run records its name)."""
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
        """Log a metric now (visible live in the MLflow UI while the task runs).

        In a `[sweep.optuna]` search with a `pruner`, a value of the search's metric
        logged with a `step` is reported to the trial, and the pruner may stop the task
        here (`TrialPrunedError`: the run ends KILLED, tagged `luigiflow.pruned`)."""
        state = self._state("log_metric")
        per_step = step is not None
        step = step or 0
        number = _metric_value(self, key, value)
        _current.get_store(state.uri).log_metric(state.run_id, key, number, step=step)
        # A value given to save(metrics=...) for this key later must be the run's
        # latest: MLflow ranks a metric's values by step, then time.
        state.steps[key] = max(step, state.steps.get(key, step))
        state.last_metric_ms = int(time.time() * 1000)
        if per_step:  # an adaptive search's pruner may stop the trial here
            steps.report(self, key, number, step)

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
    # MlflowTask's members include those of the classes it is assembled from.
    own = {
        n
        for k in MlflowTask.__mro__[: MlflowTask.__mro__.index(luigi.Task)]
        for n in vars(k)
        if not n.startswith("_")
    }
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
