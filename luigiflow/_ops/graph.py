"""The task graph of a build: every task reachable from the roots, in order; and the
planned graph exported as Mermaid or Graphviz text."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import luigi

from luigiflow._core.labels import task_label
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


def export(entries: Iterable[Any], fmt: str) -> str:
    """The planned graph as Mermaid (`flowchart`) or Graphviz (`digraph`) text: one node
    per task, an edge from each upstream task to the task that consumes it, coloured by
    whether the task will run."""
    nodes: dict[str, tuple[str, str]] = {}  # task_id -> (label, status)
    edges: list[tuple[str, str]] = []

    def visit(entry: Any) -> None:
        task_id = entry.task.task_id
        if task_id in nodes:
            return
        nodes[task_id] = (task_label(entry.task), entry.status)
        for child in entry.upstream.values():
            visit(child)
            edges.append((child.task.task_id, task_id))

    for entry in entries:
        visit(entry)
    ids = {task_id: f"t{i}" for i, task_id in enumerate(nodes)}
    if fmt == "mermaid":
        lines = ["flowchart LR"]
        for task_id, (label, status) in nodes.items():
            text = f"{label}<br/>{status}".replace('"', "#quot;")
            lines.append(f'    {ids[task_id]}["{text}"]:::{_css(status)}')
        lines += [f"    {ids[a]} --> {ids[b]}" for a, b in edges]
        lines += [
            "    classDef will_run fill:#fff3cd,stroke:#b58900",
            "    classDef reused fill:#d4edda,stroke:#2e7d32",
            "    classDef not_needed fill:#eeeeee,stroke:#999999",
        ]
        return "\n".join(lines) + "\n"
    if fmt == "dot":
        colours = {"will_run": "#fff3cd", "reused": "#d4edda", "not_needed": "#eeeeee"}
        lines = [
            "digraph luigiflow {",
            "    rankdir=LR;",
            '    node [shape=box, style="rounded,filled"];',
        ]
        for task_id, (label, status) in nodes.items():
            text = f"{label}\\n{status}".replace('"', '\\"')
            lines.append(
                f'    {ids[task_id]} [label="{text}", fillcolor="{colours[_css(status)]}"];'
            )
        lines += [f"    {ids[a]} -> {ids[b]};" for a, b in edges]
        return "\n".join([*lines, "}"]) + "\n"
    raise LuigiflowError(f"unknown graph format {fmt!r}; use mermaid or dot")


def _css(status: str) -> str:
    return status.replace(" ", "_") if status in ("will run", "reused") else "not_needed"
