"""Parameters of upstream tasks set from outside the graph: Luigi's `--Task-param value`
on the command line and `[steps.Task]` in an experiment config.

Both become Luigi config values (`[Task] param = value`), which Luigi applies to every
instance of the class that is not given that parameter explicitly. A task that builds
its upstream with an explicit value silently wins over the config; that is reported
as an error naming both places instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import luigi

from luigiflow._core import redaction
from luigiflow._core.parameters import param_text
from luigiflow._engine.protocol import is_tracked
from luigiflow._errors import LuigiflowError
from luigiflow._ops.graph import walk_graph


@dataclass(frozen=True)
class Override:
    """`family.param = text`, set by `source` (how the user wrote it, for errors)."""

    family: str
    param: str
    text: str
    source: str


def shown(param: str, text: str) -> str:
    """A value as an error may quote it: a secret-looking parameter's is redacted."""
    return redaction.REDACTED if redaction.looks_secret(param) else text


def apply(overrides: Iterable[Override]) -> None:
    """Make each override a Luigi config value, as Luigi's own command line does."""
    config = luigi.configuration.get_config()
    for o in overrides:
        if not config.has_section(o.family):
            config.add_section(o.family)
        config.set(o.family, o.param, o.text)


def check(
    roots: Iterable[luigi.Task],
    overrides: Iterable[Override],
    error: type[LuigiflowError],
) -> None:
    """Raise `error` for every override a task's requires() defeats with an explicit value."""
    wanted = {(o.family, o.param): o for o in overrides}
    if not wanted:
        return
    problems = []
    for parent in walk_graph(roots):
        deps = parent.requires_dict() if is_tracked(parent) else {}
        for dep in deps.values():
            for name, param in dep.get_params():
                o = wanted.get((dep.get_task_family(), name))
                if o is None:
                    continue
                actual = param_text(param, getattr(dep, name))
                if actual != param_text(param, param.parse(o.text)):
                    problems.append(
                        f"{o.source} is overridden by {parent.get_task_family()}.requires(), "
                        f"which passes {name}={shown(name, actual)} to {o.family} explicitly; "
                        "remove one of the two"
                    )
    if problems:
        raise error("; ".join(dict.fromkeys(problems)))
