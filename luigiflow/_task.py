"""MlflowTask: a Luigi task whose every execution is one MLflow run.

What a task is (parameters, identity, artifacts, completion, loading) lives here; how
one execution is recorded as a run lives in `_execution`.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import luigi
import luigi.parameter

from luigiflow import _artifacts, _lookup, _provenance, _tracking
from luigiflow._definition import TypedRegister, validate_class
from luigiflow._errors import (
    ArtifactError,
    LuigiflowError,
    ParameterError,
    TaskDefinitionError,
)
from luigiflow._identity import (
    UnencodableValueError,
    compute_identity,
    encode_value,
    seed_from_identity,
)
from luigiflow._parameters import FileParameter, check_value, encode_param
from luigiflow._recording import RunState, verify

if TYPE_CHECKING:
    from mlflow.entities import Run

FAMILY_TAG = "luigiflow.task_family"
PARAMS_TAG = "luigiflow.params"
UPSTREAM_TAG_PREFIX = "luigiflow.upstream."
# Facts about the task that made a run, one JSON tag: id, module, version, seed and
# the code fingerprint/source. Every tag is a row each completion scan loads, so the
# facts nobody filters on share one.
TASK_TAG = "luigiflow.task"
ERROR_TAG = "luigiflow.error"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
MAX_TAG_LENGTH = 8000  # MLflow's limit on a tag value


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

    experiment_name: ClassVar[str | None] = None
    artifacts: ClassVar[dict[str, str]] = {}
    version: ClassVar[int | str] = 0
    code_in_identity: ClassVar[bool] = False
    seed_random: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        validate_class(cls)

    # ----- parameters and identity -------------------------------------------------

    @classmethod
    def get_param_values(
        cls, params: list[tuple[str, luigi.Parameter]], args: Any, kwargs: Any
    ) -> list[tuple[str, Any]]:
        """Luigi's parameter resolution, with every problem reported at once."""
        family = cls.get_task_family()
        try:
            values = super().get_param_values(params, args, kwargs)
        except (luigi.parameter.ParameterException, ValueError, TypeError) as exc:
            raise ParameterError(f"{family}: {exc}") from exc
        by_name = dict(params)
        problems = []
        for name, value in values:
            problem = check_value(by_name[name], value)
            if problem:
                problems.append(f"parameter {name!r}: {problem}")
        if problems:
            raise ParameterError(f"{family}: " + "; ".join(problems))
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
        upstream = {
            name: dep.identity if isinstance(dep, MlflowTask) else f"luigi:{dep.task_id}"
            for name, dep in self.requires_dict().items()
        }
        code = _provenance.code_fingerprint(type(self)) if self.code_in_identity else None
        return compute_identity(self.get_task_family(), self.version, params, upstream, code)

    @property
    def seed(self) -> int:
        """A seed derived from the identity: same task, same seed, in every process."""
        return seed_from_identity(self.identity)

    def encoded_params(self) -> dict[str, Any]:
        """Every parameter value in canonical, type-tagged form (for exact reproduction)."""
        return {name: encode_value(getattr(self, name)) for name, _ in self.get_params()}

    # ----- completion and outputs --------------------------------------------------

    def find_run(self) -> Run | None:
        """The FINISHED MLflow run that makes this task complete, or None."""
        run = _lookup.find_finished_run(self)
        self.__dict__["_lf_run"] = run
        return run

    def complete(self) -> bool:
        return self.find_run() is not None

    def deps(self) -> list[luigi.Task]:
        # Luigi calls deps() right before asking each dependency complete(): decide
        # them all in one batch here (see _lookup for the freshness rule).
        deps = super().deps()
        _lookup.prefetch(deps)
        return deps

    def output(self) -> dict[str, _artifacts.ArtifactTarget]:
        return {name: _artifacts.ArtifactTarget(self, name) for name in self.artifacts}

    def _bound_run(self) -> Run:
        run = self.__dict__.get("_lf_run") or self.find_run()
        if run is None:
            raise ArtifactError(
                f"{self!r} has no FINISHED run in experiment "
                f"{self.get_experiment_name()!r}; build it first (luigiflow.build or luigiflow run)"
            )
        return run

    def artifact_path(self, name: str) -> pathlib.Path:
        """Local, readable path of one artifact of this task's run (downloaded if remote)."""
        if name not in self.artifacts:
            raise ArtifactError(
                f"{self.get_task_family()} declares no artifact {name!r}; "
                f"declared: {', '.join(self.artifacts) or 'none'}"
            )
        run = self._bound_run()
        filename = self.artifacts[name]
        path = _artifacts.local_artifact_path(run.info.run_id, run.info.artifact_uri, filename)
        verify(run, name, filename, path)
        return path

    def load_output(self, name: str | None = None) -> Any:
        """This task's artifact `name`, deserialized (the only one when `name` is omitted)."""
        name = self._single_artifact_name(name)
        return _artifacts.read_value(str(self.artifact_path(name)), self.artifacts[name])

    def _single_artifact_name(self, name: str | None) -> str:
        if name is not None:
            return name
        if len(self.artifacts) != 1:
            raise ArtifactError(
                f"{self.get_task_family()} has {len(self.artifacts)} artifacts "
                f"({', '.join(self.artifacts)}); name the one to load"
            )
        return next(iter(self.artifacts))

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
        from luigiflow import _execution  # imported here: it builds on this module

        _execution.execute(self)

    def _upstream_runs(self) -> dict[str, Run]:
        runs: dict[str, Run] = {}
        for name, dep in self.requires_dict().items():
            if isinstance(dep, MlflowTask):
                runs[name] = dep._bound_run()
        return runs

    # ----- used inside run_task ----------------------------------------------------

    def _state(self, what: str) -> RunState:
        state = self.__dict__.get("_lf_state")
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
        unknown = [n for n in artifacts if n not in self.artifacts]
        if unknown:
            raise ArtifactError(
                f"{self.get_task_family()} (run {state.run_id}) saved undeclared artifact(s) "
                f"{', '.join(map(repr, unknown))}; declared: {', '.join(self.artifacts) or 'none'}"
            )
        for name, value in artifacts.items():
            state.write(name, self.artifacts[name], value)
        for key, val in (metrics or {}).items():
            state.metrics[key] = _metric_value(self, key, val)

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Log a metric now (visible live in the MLflow UI while the task runs)."""
        state = self._state("log_metric")
        _tracking.get_client().log_metric(
            state.run_id, key, _metric_value(self, key, value), step=step or 0
        )

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
        self._state("log_model_bundle")
        from luigiflow.models._bundle import log_pipeline_model

        return log_pipeline_model(
            self, stages, input_example, name, predict_method, registered_model_name
        )

    @property
    def run_id(self) -> str:
        """The id of the MLflow run this task is writing (inside run_task) or completed by."""
        state = self.__dict__.get("_lf_state")
        if state is not None:
            return str(state.run_id)
        return str(self._bound_run().info.run_id)


def _metric_value(task: MlflowTask, key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ArtifactError(
            f"{task.get_task_family()}: metric {key!r} must be a number, got {value!r}"
        ) from None
    return number


def task_facts(tags: Mapping[str, str]) -> dict[str, Any]:
    """The `luigiflow.task` facts recorded on a run ({} when absent or unreadable)."""
    try:
        facts = json.loads(tags.get(TASK_TAG, "{}"))
    except ValueError:
        return {}
    return facts if isinstance(facts, dict) else {}
