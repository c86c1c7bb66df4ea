"""Commands that read the store: `runs`, `show`, `diff` (rendering with rich only)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from typing import Any

import click
from rich.table import Table
from rich.tree import Tree

from luigiflow._errors import LuigiflowError
from luigiflow._store import schema
from luigiflow._store.records import DELETED
from luigiflow.cli._commands import check_store
from luigiflow.cli._render import make_console, num


def runs(
    name: str,
    where: Sequence[str],
    sort_by: str | None,
    ascending: bool,
    limit: int | None,
    sweep_id: str | None,
    fmt: str,
) -> None:
    from luigiflow._ops import lineage as _history

    filters: dict[str, str] = {}
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LuigiflowError(f"--where {item!r} must look like PARAM=VALUE")
        filters[key] = value
    check_store()
    found = _history.runs_of(name, filters)
    if sweep_id:
        from luigiflow._ops.sweep import record as _sweep

        linked = set(_sweep.leaf_runs(sweep_id))
        found = [r for r in found if r.info.run_id in linked]
    rows = _history.run_rows(found)
    if sort_by:
        missing = [r for r in rows if sort_by not in r["metrics"]]
        present = [r for r in rows if sort_by in r["metrics"]]
        present.sort(key=lambda r: r["metrics"][sort_by], reverse=not ascending)
        rows = present + missing
    if limit:
        rows = rows[:limit]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    params = sorted({k for r in rows for k in r["params"]})
    metrics = sorted({k for r in rows for k in r["metrics"]})
    header = ["run_id", "start_time", *params, *metrics, "duplicate", "signed"]
    records = [
        [
            r["run_id"],
            _time(r["start_time"]),
            *[r["params"].get(p, "") for p in params],
            *[num(r["metrics"].get(m)) for m in metrics],
            "yes" if r["duplicate"] else "",
            r["signed"],
        ]
        for r in rows
    ]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(records)
        click.echo(buffer.getvalue(), nl=False)
        return
    table = Table(title=f"{name}: {len(rows)} finished run(s)")
    for column in header:
        table.add_column(column, no_wrap=column == "run_id")
    for record in records:
        table.add_row(*[str(v) for v in record])
    make_console().print(table)


def _time(ms: int | None) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def show(run_id: str) -> None:
    from luigiflow._ops import lineage as _history

    check_store()
    root = _history.lineage(run_id)
    tree = Tree(_node_label(root))
    _show_tree(tree, root)
    make_console().print(tree)


def _node_label(node: Any) -> str:
    from rich.markup import escape

    info, data = node.run.info, node.run.data
    duration = node.duration_s()
    # A deleted run is gone for luigiflow whatever status it had: never reused.
    deleted = info.lifecycle_stage == DELETED
    status = "DELETED" if deleted else info.status
    lines = [
        f"[bold]{escape(node.family)}[/]  run {info.run_id}  [{status}]  "
        f"started {_time(info.start_time)}" + (f"  took {duration:.2f}s" if duration else ""),
        f"signature: {node.signature()}",
    ]
    if deleted:
        lines.append("[red]deleted by a user: luigiflow never reuses it[/]")
    if data.params:
        lines.append(
            "params: " + escape(", ".join(f"{k}={v}" for k, v in sorted(data.params.items())))
        )
    if data.metrics:
        lines.append(
            "metrics: " + ", ".join(f"{k}={num(v)}" for k, v in sorted(data.metrics.items()))
        )
    arts = node.artifacts()
    if arts:
        lines.append(
            "artifacts: "
            + escape(
                ", ".join(
                    f"{n} ({a.get('file')}, {a.get('bytes')} B)" for n, a in sorted(arts.items())
                )
            )
        )
    tags = data.tags
    git = schema.git_of(tags)
    fingerprint = schema.task_facts(tags).get("code_fingerprint")
    commit = git.get("commit")
    if commit:
        dirty = " (dirty)" if git.get("dirty") == "True" else ""
        lines.append(f"code: git {commit[:12]}{dirty}, fingerprint {fingerprint}")
    elif fingerprint:
        lines.append(f"code: fingerprint {fingerprint} (no git)")
    return "\n".join(lines)


def _show_tree(tree: Tree, node: Any) -> None:
    for name, child in node.upstream.items():
        if child is None:
            tree.add(f"[dim]{name}:[/] [red]run not found (deleted?)[/]")
            continue
        branch = tree.add(f"[dim]{name}:[/] " + _node_label(child))
        _show_tree(branch, child)


def diff(run_a: str, run_b: str) -> None:
    from rich.markup import escape

    from luigiflow._ops import lineage as _history

    check_store()
    result = _history.diff(run_a, run_b)
    console = make_console()
    console.print(f"A = {run_a} ({result.root_a.family})\nB = {run_b} ({result.root_b.family})")
    if not result.steps:
        console.print("no parameter differs along the two chains")
    for step in result.steps:
        if step.run_a is None:
            console.print(
                f"[bold]{escape(step.path)}[/]: only in B ({step.family_b}, run {step.run_b})"
            )
            continue
        if step.run_b is None:
            console.print(
                f"[bold]{escape(step.path)}[/]: only in A ({step.family_a}, run {step.run_a})"
            )
            continue
        title = f"[bold]{escape(step.path)}[/]"
        if step.family_a != step.family_b:
            title += f": task {step.family_a} vs {step.family_b}"
        console.print(title)
        for key, (old, new) in step.params.items():
            console.print(f"    {escape(key)}: {escape(str(old))} -> {escape(str(new))}")
    table = Table(title="metrics of the two results")
    for column in ("metric", "A", "B", "B - A"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, (ma, mb) in result.metrics.items():
        delta = "" if ma is None or mb is None else num(mb - ma)
        table.add_row(key, num(ma), num(mb), delta)
    console.print(table)
