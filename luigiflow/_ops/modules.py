"""Importing the user's task modules and finding task classes; from command-line words
to a task instance: `--module M TASK --param value ...`.

Values are parsed by each Luigi parameter's own `parse`, so every Luigi parameter type
works as it does with the `luigi` command; every bad word is reported at once.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

import luigi
import luigi.task_register

from luigiflow._engine import luigi_compat
from luigiflow._errors import ParameterError, TaskNotFoundError


def import_module(module: str | None) -> None:
    """Import the user's task module; the working directory is importable, as in Luigi."""
    if not module:
        return
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise TaskNotFoundError(
                f"module {module!r} not found (from {os.getcwd()}); pass an importable "
                "module path such as examples.tabular"
            ) from exc
        raise


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
        hint = f"tasks in {module}: {', '.join(known)}" if known else "did you pass --module?"
        raise TaskNotFoundError(not_found or f"unknown task {name!r}; {hint}") from exc


def build_task(module: str | None, words: Sequence[str]) -> luigi.Task:
    """Instantiate `TASK --param value ...` with values parsed by Luigi's parameters."""
    if not words:
        raise TaskNotFoundError("no task named; usage: luigiflow run --module M TASK [--param v]")
    name, rest = words[0], list(words[1:])
    import_module(module)
    cls = task_class(name, module)
    params = dict(cls.get_params())
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
        attr = key.replace("-", "_")
        param = params.get(attr)
        if param is None:
            problems.append(f"unknown parameter --{key} (known: {_known(params)})")
            i += 1
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
            values[attr] = param.parse(raw)
        except Exception as exc:  # Luigi raises ValueError, TypeError, json errors...
            problems.append(f"--{key} {raw!r}: {type(exc).__name__}: {exc}")
    if problems:
        raise ParameterError(f"{name}: " + "; ".join(problems))
    try:
        return cls(**values)
    except ParameterError:
        raise
    except (luigi.parameter.ParameterException, ValueError, TypeError) as exc:
        raise ParameterError(f"{name}: {exc}") from exc


def _known(params: dict[str, luigi.Parameter]) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in params) or "none"
