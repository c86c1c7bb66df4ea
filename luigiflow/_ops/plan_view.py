"""`lf.plan(tasks)`: what `luigiflow plan` prints, as data a notebook can show.

plan = lf.plan([Train(alpha=0.5)])
plan.will_run          # the tasks that a build would execute now
plan                   # a readable tree in a notebook or a REPL
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import luigi

from luigiflow._ops.plan import REUSED, WILL_RUN, PlanEntry, make_plan


@dataclass
class Plan:
    """The decision for every task of the graphs of `roots`."""

    roots: list[PlanEntry]

    def entries(self) -> list[PlanEntry]:
        """Every task's entry once, upstream before downstream."""
        seen: dict[str, PlanEntry] = {}
        for root in self.roots:
            for entry in root.walk():
                seen.setdefault(entry.task.task_id, entry)
        return list(reversed(list(seen.values())))

    @property
    def will_run(self) -> list[luigi.Task]:
        return [e.task for e in self.entries() if e.status == WILL_RUN]

    @property
    def reused(self) -> dict[luigi.Task, str]:
        return {e.task: e.run_id for e in self.entries() if e.status == REUSED and e.run_id}

    def to_dict(self) -> list[dict[str, Any]]:
        return [root.to_dict() for root in self.roots]

    def lines(self) -> list[str]:
        """The plan as an indented tree of text, each task once (later: a reference)."""
        out: list[str] = []
        shown: set[str] = set()

        def visit(entry: PlanEntry, depth: int, name: str) -> None:
            pad = "    " * depth
            label = f"{name}: " if name else ""
            if entry.task.task_id in shown:
                out.append(f"{pad}{label}{entry.task!r} (see above)")
                return
            shown.add(entry.task.task_id)
            run = f"  run {entry.run_id}" if entry.run_id else ""
            out.append(f"{pad}{label}{entry.status:<8} {entry.task!r}{run}")
            out.extend(f"{pad}    - {reason}" for reason in entry.reasons)
            for child_name, child in entry.upstream.items():
                visit(child, depth + 1, child_name)

        for root in self.roots:
            visit(root, 0, "")
        will = len(self.will_run)
        out.append(f"{will} task(s) will run, {len(self.entries()) - will} will not")
        return out

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape(repr(self)) + "</pre>"


def plan(tasks: luigi.Task | Iterable[luigi.Task], rerun_changed: bool = False) -> Plan:
    """Dry run: each task reused (with its run id) or will run, and why. Writes nothing.

    Example::

        lf.plan([Train(alpha=0.5)]).will_run   # [Train(alpha=0.5)] after changing alpha
    """
    roots = [tasks] if isinstance(tasks, luigi.Task) else list(tasks)
    return Plan(make_plan(roots, rerun_changed=rerun_changed))
