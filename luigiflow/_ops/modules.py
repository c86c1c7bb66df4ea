"""Importing the user's task modules and finding task classes; from command-line words
to a task instance: `--module M TASK --param value ...`.

Values are parsed by each Luigi parameter's own `parse`, so every Luigi parameter type
works as it does with the `luigi` command; every bad word is reported at once.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pathlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import luigi
import luigi.task_register

from luigiflow._core import failures
from luigiflow._core.parameters import TEXT_FORMS, expected_text, param_text
from luigiflow._core.suggest import did_you_mean
from luigiflow._engine import luigi_compat
from luigiflow._errors import ParameterError, TaskDefinitionError, TaskNotFoundError
from luigiflow._ops import overrides


def import_module(module: str | None) -> str | None:
    """Import the user's task module and return the dotted name it was imported as.

    `module` is a dotted name or a path to a `.py` file; the working directory is
    importable, as in Luigi. A file below it is imported by its dotted path
    (`pipelines/tasks.py` -> `pipelines.tasks`, the name recorded on its runs), a file
    elsewhere from its own folder. A module that fails to import is one error naming
    the file and line; the original exception is chained for `--debug`.
    """
    if not module:
        return None
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    name = _dotted_name(module)
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise TaskNotFoundError(
                f"module {name!r} not found (from {os.getcwd()}); pass an importable "
                "module such as examples.tabular or a file such as examples/tabular.py"
            ) from exc
        raise _import_failed(name, exc) from exc
    except Exception as exc:  # the user's module raised while importing
        raise _import_failed(name, exc) from exc
    return name


def _dotted_name(module: str) -> str:
    if not (module.endswith(".py") or os.sep in module or "/" in module):
        return module
    path = pathlib.Path(module).resolve()
    if not path.is_file():
        raise TaskNotFoundError(f"module file {module!r} does not exist (from {os.getcwd()})")
    try:
        relative = path.relative_to(pathlib.Path.cwd())
    except ValueError:
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        return path.stem
    return ".".join(relative.with_suffix("").parts)


def _import_failed(name: str, exc: BaseException) -> TaskDefinitionError:
    where = failures.user_location(exc)
    return TaskDefinitionError(
        f"module {name} failed to import"
        + (f" at {where}" if where else "")
        + f": {failures.one_line(exc)} (luigiflow --debug ... shows the full traceback)"
    )


def task_class(name: str, module: str | None, not_found: str = "") -> type[luigi.Task]:
    """The task class registered as `name` (after importing its module); `not_found`
    replaces the error message when there is none."""
    try:
        return luigi.task_register.Register.get_task_cls(name)
    except luigi.task_register.TaskClassException as exc:
        known = sorted(
            n
            for n, cls in luigi_compat.registry().items()
            if module and getattr(cls, "__module__", "") == module
        )
        close = did_you_mean(name, luigi_compat.registry())
        hint = f"tasks in {module}: {', '.join(known)}" if known else "did you pass --module?"
        raise TaskNotFoundError(not_found or f"unknown task {name!r}{close}; {hint}") from exc


def build_task(module: str | None, words: Sequence[str]) -> luigi.Task:
    """Instantiate `TASK --param value ...` with values parsed by Luigi's parameters.

    `--Upstream-param value` (Luigi's own form) sets a parameter of every `Upstream`
    task of the graph that is not given it explicitly.
    """
    if not words:
        raise TaskNotFoundError("no task named; usage: luigiflow run --module M TASK [--param v]")
    name, rest = words[0], list(words[1:])
    cls = task_class(name, import_module(module))
    upstream: list[overrides.Override] = []
    values = parse_param_words(name, dict(cls.get_params()), rest, upstream=upstream)
    overrides.apply(upstream)
    try:
        task = cls(**values)
    except ParameterError:
        raise
    except (luigi.parameter.ParameterException, ValueError, TypeError) as exc:
        raise ParameterError(f"{name}: {exc}") from exc
    overrides.check([task], upstream, ParameterError)
    return task


def parse_param_words(
    label: str,
    params: dict[str, luigi.Parameter],
    rest: Sequence[str],
    dashes: bool = True,
    upstream: list[overrides.Override] | None = None,
) -> dict[str, object]:
    """`--param value` words (also `--param=value`, a bare `--flag`) parsed by Luigi's
    parameters; every mistake is reported at once, prefixed by `label` (the task).
    `dashes`: names are shown as `--n-est` (a class's), else as written (a stage's).
    `upstream`: where Luigi's `--TaskName-param value` words go (as overrides); without
    it they are unknown parameters."""

    def show(name: str) -> str:
        return "--" + (name.replace("_", "-") if dashes else name)

    rest = list(rest)
    values: dict[str, object] = {}
    problems: list[str] = []
    i = 0
    while i < len(rest):
        word = rest[i]
        if not word.startswith("--"):
            problems.append(f"unexpected argument {word!r} (parameters look like --name value)")
            i += 1
            continue
        key, _, inline = word[2:].partition("=")
        attr = key if key in params else key.replace("-", "_")
        param = params.get(attr)
        owner = ""  # the task itself
        if param is None and upstream is not None:
            owner, attr, param = _upstream_param(key)
        if param is None:
            attr = key if key in params else key.replace("-", "_")
            close = did_you_mean(attr, params, show=show)
            known = ", ".join(map(show, params)) or "none"
            hint = (
                "; an upstream task's parameter is --TaskName-param" if upstream is not None else ""
            )
            problems.append(f"unknown parameter --{key}{close} (known: {known}{hint})")
            given_value = not inline and i + 1 < len(rest) and not rest[i + 1].startswith("--")
            i += 2 if given_value else 1  # its value is not another mistake
            continue
        if isinstance(param, luigi.BoolParameter) and not inline:
            takes_value = i + 1 < len(rest) and rest[i + 1].lower() in ("true", "false")
            raw = rest[i + 1] if takes_value else "true"
            i += 2 if takes_value else 1
        elif inline or "=" in word:
            raw = inline
            i += 1
        elif i + 1 < len(rest):
            raw = rest[i + 1]
            i += 2
        else:
            problems.append(f"parameter --{key} needs a value")
            i += 1
            continue
        try:
            parsed = param.parse(raw)
        except Exception as exc:  # Luigi raises ValueError, TypeError, json errors...
            wanted = expected_text(param)
            problems.append(
                f"--{key} expects {wanted}, got {raw!r}"
                if wanted
                else f"--{key} {raw!r}: {type(exc).__name__}: {exc}"
            )
            continue
        if not owner:
            values[attr] = parsed
        elif upstream is not None:
            source = f"--{key} {overrides.shown(attr, raw)}"
            upstream.append(overrides.Override(owner, attr, raw, source))
    if problems:
        raise ParameterError(f"{label}: " + "; ".join(problems))
    return values


def _upstream_param(key: str) -> tuple[str, str, luigi.Parameter | None]:
    """`Family-param-name` -> (family, param_name, its parameter), as Luigi reads it."""
    for family, cls in sorted(luigi_compat.registry().items(), key=lambda kv: -len(kv[0])):
        if key.startswith(family + "-") and hasattr(cls, "get_params"):
            attr = key[len(family) + 1 :].replace("-", "_")
            param = dict(cls.get_params()).get(attr)
            if param is not None:
                return family, attr, param
    return "", "", None


@dataclass(frozen=True)
class ParameterHelp:
    """One parameter of a task class as `luigiflow run ... TASK --help` lists it."""

    option: str
    kind: str
    default: str | None  # None: required
    choices: list[str]
    description: str
    significant: bool
    name: str = ""  # the parameter's name in Python


def task_help(cls: type[luigi.Task]) -> tuple[str, list[ParameterHelp]]:
    """A task class's docstring and its parameters: type, default, choices."""
    found = []
    for name, param in cls.get_params():
        has_default, default = luigi_compat.param_default(param)
        kind = type(param).__name__.removesuffix("Parameter").lower() or "text"
        choices = sorted(str(c) for c in getattr(param, "_choices", None) or [])
        form = next((f for c, f in TEXT_FORMS if isinstance(param, c)), "")
        found.append(
            ParameterHelp(
                name=name,
                option="--" + name.replace("_", "-"),
                kind=kind + (f" ({form})" if form else ""),
                default=param_text(param, default) if has_default else None,
                choices=choices,
                # Luigi writes "Choices: {...}" into a choice parameter's description.
                description=(param.description or "").replace(luigi_choices(param), "").strip(),
                significant=param.significant,
            )
        )
    # The class's own docstring only: a bare subclass would inherit MlflowTask's.
    return inspect.cleandoc(cls.__dict__.get("__doc__") or ""), found


def luigi_choices(param: luigi.Parameter) -> str:
    """The text Luigi appends to a choice parameter's description ('' for others)."""
    choices = getattr(param, "_choices", None)
    if not choices:
        return ""
    return "Choices: {" + ", ".join(str(c) for c in choices) + "}"
