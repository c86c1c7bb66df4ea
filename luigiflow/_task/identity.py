"""A task's parameters and identity: what makes two tasks the same task.

`MlflowTask` (`_task/task.py`) takes these methods from `TaskIdentity`; the class is
not meant to be used on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import luigi
import luigi.parameter

from luigiflow import _settings
from luigiflow._core import provenance, redaction
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
from luigiflow._engine import luigi_compat
from luigiflow._engine.protocol import is_tracked
from luigiflow._errors import ParameterError, TaskDefinitionError

# A plain mixin at run time (Luigi's metaclass registers every subclass of luigi.Task
# as a task family, and this is none); mypy sees Luigi's methods it builds on.
if TYPE_CHECKING:
    _LuigiTask = luigi.Task
else:
    _LuigiTask = object


class TaskIdentity(_LuigiTask):
    """Parameters, upstream tasks and the identity of an `MlflowTask`."""

    # Set by MlflowTask (where a user reads and overrides them).
    experiment_name: ClassVar[str | None]
    version: ClassVar[int | str]
    code_in_identity: ClassVar[bool]
    identity_module: ClassVar[str | None]

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
                isinstance(dep, TaskIdentity) and dep._reads_files()
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
