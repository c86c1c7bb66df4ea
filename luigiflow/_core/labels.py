"""How a task is named for people: `Family(param=value, ...)`, never Luigi's hashed id."""

from __future__ import annotations

from typing import Any

from luigiflow._core import redaction


def task_label(task: Any, width: int = 24) -> str:
    """`Family(param=value, ...)`, long values cut: readable, unlike Luigi's hashed ids."""
    family = task.get_task_family()
    parts = []
    # A stage's values carried from upstream stages are shown only where they differ
    # from the pipeline file's (a sweep point, a value given on the command line).
    carried = getattr(task, "carried_params", ())
    for name, param in task.get_params():
        if not param.significant:
            continue
        if name in carried and getattr(task, name) == getattr(param, "_default", None):
            continue
        if redaction.looks_secret(name):  # printed on terminals and in CI logs
            parts.append(f"{name}={redaction.REDACTED}")
            continue
        try:
            text = str(param.serialize(getattr(task, name)))
        except Exception:
            text = repr(getattr(task, name))
        if len(text) > width:
            text = text[: width - 1] + "…"
        parts.append(f"{name}={text}")
    return f"{family}({', '.join(parts)})"
