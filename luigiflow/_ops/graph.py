"""The task graph of a build: every task reachable from the roots, in order."""

from __future__ import annotations

from collections.abc import Iterable

import luigi

from luigiflow._engine.protocol import is_tracked
from luigiflow._errors import LuigiflowError


def walk_graph(roots: Iterable[luigi.Task]) -> list[luigi.Task]:
    """Every task reachable from `roots`, upstream before downstream."""
    order: list[luigi.Task] = []
    seen: set[str] = set()

    def visit(task: luigi.Task, path: tuple[str, ...]) -> None:
        if task.task_id in seen:
            return
        if task.task_id in path:
            raise LuigiflowError(f"dependency cycle through {task.task_id}")
        deps = (
            list(task.requires_dict().values())
            if is_tracked(task)
            else luigi.task.flatten(task.requires())
        )
        for dep in deps:
            visit(dep, (*path, task.task_id))
        seen.add(task.task_id)
        order.append(task)

    for root in roots:
        visit(root, ())
    return order
