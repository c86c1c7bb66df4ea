"""How a task is named for people: `Family(param=value, ...)`, never Luigi's hashed id."""

from __future__ import annotations

from typing import Any


def task_label(task: Any, width: int = 24) -> str:
    """`Family(param=value, ...)`, long values cut: readable, unlike Luigi's hashed ids."""
    family = task.get_task_family()
    parts = []
    for name, param in task.get_params():
        if not param.significant:
            continue
        try:
            text = str(param.serialize(getattr(task, name)))
        except Exception:
            text = repr(getattr(task, name))
        if len(text) > width:
            text = text[: width - 1] + "…"
        parts.append(f"{name}={text}")
    return f"{family}({', '.join(parts)})"
