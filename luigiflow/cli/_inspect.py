"""Commands that read the store: `runs`, `show`, `diff` (rendering with rich only)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Sequence
from typing import Any

import click
from rich.table import Table
from rich.tree import Tree

from luigiflow._core import redaction
from luigiflow._errors import LuigiflowError
from luigiflow._store import schema
from luigiflow._store.records import DELETED
from luigiflow.cli._commands import check_store
from luigiflow.cli._render import make_console, num, plain, safe, short_id, text


def runs(
    name: str,
    where: Sequence[str],
    sort_by: str | None,
    ascending: bool,
    limit: int | None,
    sweep_id: str | None,
    fmt: str,
    status: str = "finished",
    full: bool = False,
) -> None:
    from luigiflow._ops import run_listing as _listing

    filters = _where_filters(where)
    check_store(existing=True)
    linked = None
    if sweep_id:
        from luigiflow._ops.sweep import record as _sweep

        linked = set(_sweep.leaf_runs(sweep_id))
    rows = _listing.run_listing(name, filters, status, sort_by, ascending, limit, linked)
    if fmt == "json":
        click.echo(_json_text(rows))
        return
    params = sorted({k for r in rows for k in r["params"]})
    metrics = sorted({k for r in rows for k in r["metrics"]})
    failed = status != "finished"
    if fmt == "csv":
        header = ["run_id", "start_time", *params, *metrics, "duplicate", "code", "signed"]
        header += ["status", "error"] if failed else []
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        for r in rows:
            writer.writerow(
                [
                    r["run_id"],
                    _time(r["start_time"]),
                    *[plain(r["params"].get(p, "")) for p in params],
                    *[num(r["metrics"].get(m)) for m in metrics],
                    "yes" if r["duplicate"] else "",
                    r["code"],
                    r["signed"],
                    *([r["status"], plain(r["error"])] if failed else []),
                ]
            )
        click.echo(buffer.getvalue(), nl=False)
        return
    make_console().print(_runs_table(name, rows, params, metrics, status, full))


def _runs_table(
    name: str,
    rows: list[dict[str, Any]],
    params: list[str],
    metrics: list[str],
    status: str,
    full: bool,
) -> Table:
    """Short run ids; parameters equal on every row go to the title, so the columns left
    are the ones that tell runs apart, and metric values are never cut."""
    from rich import box

    same = {
        p: rows[0]["params"].get(p)
        for p in params
        if rows and len({r["params"].get(p) for r in rows}) == 1
    }
    varying = [p for p in params if p not in same]
    title = f"{name}: {len(rows)} {'' if status == 'all' else status + ' '}run(s)"
    if same:
        title += " · " + ", ".join(f"{k}={v}" for k, v in same.items())
    table = Table(title=safe(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    families = len({r.get("task", "") for r in rows}) > 1  # classes sharing an experiment
    # Run ids, times and task names are never cut (a printed id must stay usable).
    id_width = max([len(short_id(r["run_id"], full)) for r in rows] + [3])
    table.add_column("run", no_wrap=True, min_width=id_width)
    table.add_column("started", no_wrap=True, min_width=11)
    if families:
        table.add_column("task", no_wrap=True, min_width=max(len(r.get("task", "")) for r in rows))
    if status != "finished":
        table.add_column("status", no_wrap=True)
    for p in varying:
        # Long values (paths) are cut with an ellipsis, never folded a character a line.
        # With an error column (folded, it gives up width first) values stay whole up to
        # 16 characters; without one, metrics keep theirs and parameters are cut first.
        longest = max([len(str(r["params"].get(p, ""))) for r in rows] + [len(p)])
        least = min(longest, 16) if status != "finished" else min(len(p), 8)
        table.add_column(text(p), overflow="ellipsis", max_width=32, min_width=least)
    cells = {m: [num(r["metrics"].get(m)) for r in rows] for m in metrics}
    for m in metrics:
        width = max([len(c) for c in cells[m]] + [1])
        table.add_column(text(m), justify="right", no_wrap=True, min_width=width)
    # Code is not in the identity: runs with equal parameters may differ in code, and a
    # short fingerprint says which (shown only when the rows do not all share one).
    codes = len({r["code"] for r in rows}) > 1
    if codes:
        table.add_column("code", no_wrap=True, min_width=schema.SHORT_CODE)
    duplicates = any(r["duplicate"] for r in rows)
    if duplicates:
        table.add_column("duplicate", no_wrap=True)
    table.add_column("signed", no_wrap=True, min_width=6)
    if status != "finished":
        table.add_column("error", overflow="fold")
    for i, r in enumerate(rows):
        started = ""
        if r["start_time"]:
            moment = dt.datetime.fromtimestamp(r["start_time"] / 1000)
            started = moment.strftime("%m-%d %H:%M")
        row: list[Any] = [text(short_id(r["run_id"], full)), started]
        if families:
            row.append(text(r.get("task", "")))
        if status != "finished":
            row.append(text(r["status"]))
        row += [text(r["params"].get(p, "")) for p in varying]
        row += [cells[m][i] for m in metrics]
        if codes:
            row.append(text(r["code"][: schema.SHORT_CODE]))
        if duplicates:
            row.append("yes" if r["duplicate"] else "")
        row.append(text(r["signed"]))
        if status != "finished":
            row.append(text(r["error"]))
        table.add_row(*row)
    return table


def _json_text(rows: Any) -> str:
    """The rows as JSON; C1 control characters (which `ensure_ascii=False` leaves raw and a
    terminal obeys) written as \\u escapes, so the text stays the same JSON."""
    return re.sub(
        "[\x7f-\x9f]",
        lambda m: f"\\u{ord(m.group()):04x}",
        json.dumps(rows, indent=2, ensure_ascii=False),
    )


def _hash(record: dict[str, Any] | None) -> str:
    digest = (record or {}).get("sha256")
    if digest == redaction.REDACTED:
        return digest
    return f"{digest[:12]}…" if digest else "(none)"


def _time(ms: int | None) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def show(run_id: str) -> None:
    from luigiflow._ops import lineage as _history

    check_store(existing=True)
    root = _history.lineage(run_id)
    tree = Tree(_node_label(root))
    _show_tree(tree, root, {root.run.info.run_id})
    make_console().print(tree)


def _node_label(node: Any) -> str:
    from luigiflow._ops import lineage as _history

    info, data = node.run.info, node.run.data
    duration = node.duration_s()
    # A deleted run is gone for luigiflow whatever status it had: never reused.
    deleted = info.lifecycle_stage == DELETED
    status = "DELETED" if deleted else info.status
    lines = [
        f"[bold]{safe(node.family)}[/]  run {safe(info.run_id)}  {safe(f'[{status}]')}  "
        f"started {_time(info.start_time)}" + (f"  took {duration:.2f}s" if duration else ""),
        f"signature: {safe(node.signature())}",
    ]
    if deleted:
        lines.append("[red]deleted by a user: luigiflow never reuses it[/]")
    origin = node.origin()
    if origin:  # its history up to that step came from there: `luigiflow show` it
        lines.append(safe(origin) + " (whose history it carries)")
    failure = _history.failure_of(node.run)
    if failure is not None:
        lines.append(f"[red]error: {safe(failure.error)}[/]")
        if failure.where:
            lines.append(f"at {safe(failure.where)}")
        if failure.traceback_tail:
            lines.append("traceback (last lines):")
            lines.extend("  " + safe(line) for line in failure.traceback_tail)
    if data.params:
        lines.append(
            "params: " + safe(", ".join(f"{k}={v}" for k, v in sorted(data.params.items())))
        )
    if data.metrics:
        lines.append(
            "metrics: " + safe(", ".join(f"{k}={num(v)}" for k, v in sorted(data.metrics.items())))
        )
    arts = node.artifacts()
    if arts:
        lines.append(
            "artifacts: "
            + safe(
                ", ".join(
                    f"{n} ({a.get('file')}, {a.get('bytes')} B)" for n, a in sorted(arts.items())
                )
            )
        )
    tags = data.tags
    files = schema.data_of(tags)
    if files:
        lines.append(
            "data: "
            + safe(", ".join(f"{r.get('path')} ({_hash(r)})" for _, r in sorted(files.items())))
        )
    git = schema.git_of(tags)
    fingerprint = schema.task_facts(tags).get("code_fingerprint")
    commit = git.get("commit")
    command = schema.command_of(tags)
    if command:  # a command task: the command and interpreter say what ran
        ran = " && ".join(command.get("steps") or [])
        python = f", Python {command['python_version']}" if command.get("python_version") else ""
        lines.append(
            safe(f"command: {ran} (exit {command.get('exit_code')}, ")
            + safe(f"{command.get('interpreter', '?')}{python})")
        )
        fingerprint = None
    if commit:
        dirty = " (dirty)" if git.get("dirty") == "True" else ""
        shown = f", fingerprint {fingerprint}" if fingerprint else ""
        lines.append(safe(f"code: git {commit[:12]}{dirty}{shown}"))
    elif fingerprint:
        lines.append(safe(f"code: fingerprint {fingerprint} (no git)"))
    return "\n".join(lines)


def _show_tree(tree: Tree, node: Any, shown: set[str]) -> None:
    """Each run once: a run consumed again further down refers back to where it was shown."""
    for name, child in node.upstream.items():
        if child is None:
            tree.add(f"[dim]{safe(name)}:[/] [red]run not found (deleted?)[/]")
            continue
        run_id = child.run.info.run_id
        if run_id in shown:
            tree.add(
                f"[dim]{safe(name)}:[/] {safe(child.family)}  run {safe(short_id(run_id))}  "
                "[dim](shown above)[/]"
            )
            continue
        shown.add(run_id)
        branch = tree.add(f"[dim]{safe(name)}:[/] " + _node_label(child))
        _show_tree(branch, child, shown)


def diff(run_a: str, run_b: str) -> None:
    from luigiflow._ops import lineage as _history

    check_store(existing=True)
    result = _history.diff(run_a, run_b)
    console = make_console()
    console.print(
        f"A = {safe(run_a)} ({safe(result.root_a.family)})\n"
        f"B = {safe(run_b)} ({safe(result.root_b.family)})"
    )
    if not result.steps:
        console.print("no parameter, data file or code differs along the two chains")
    for step in result.steps:
        if step.run_a is None:
            console.print(
                f"[bold]{safe(step.path)}[/]: only in B "
                + safe(f"({step.family_b}, run {step.run_b})")
            )
            continue
        if step.run_b is None:
            console.print(
                f"[bold]{safe(step.path)}[/]: only in A "
                + safe(f"({step.family_a}, run {step.run_a})")
            )
            continue
        title = f"[bold]{safe(step.path)}[/]"
        if step.family_a != step.family_b:
            title += safe(f": task {step.family_a} vs {step.family_b}")
        console.print(title)
        for key, (old, new) in step.params.items():
            console.print(f"    {safe(key)}: {safe(str(old))} -> {safe(str(new))}")
        if step.formats is not None:
            console.print(
                safe(f"    identity formula changed (store format {step.formats[0]} → ")
                + safe(f"{step.formats[1]}): the older run was made by an earlier luigiflow"),
                highlight=False,
            )
        if step.code is not None:
            fa, fb = step.code
            console.print(
                f"    code changed: {safe(step.family_a or step.family_b or '?')} "
                + safe(f"{(fa or '(not recorded)')[:12]} -> {(fb or '(not recorded)')[:12]}"),
                highlight=False,
            )
        for key, (da, db) in step.data.items():
            path = (db or da or {}).get("path", key)
            console.print(
                f"    data changed: {safe(str(path))} "
                + safe(f"(hash {_hash(da)} -> {_hash(db)})"),
                highlight=False,
            )
    table = Table(title="metrics of the two results")
    for column in ("metric", "A", "B", "B - A"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, (ma, mb) in result.metrics.items():
        delta = "" if ma is None or mb is None else num(mb - ma)
        table.add_row(text(key), num(ma), num(mb), delta)
    console.print(table)


def _where_filters(where: Sequence[str]) -> dict[str, str]:
    """`--where PARAM=VALUE` options as a mapping; a malformed one is a one-line error."""
    filters: dict[str, str] = {}
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LuigiflowError(f"--where {item!r} must look like PARAM=VALUE")
        filters[key] = value
    return filters


def metric_plots(
    name: str, metrics: list[str], x: str | None, where: Sequence[str], output: str
) -> None:
    import pathlib

    from luigiflow._ops import metric_plots as _metric_plots

    filters = _where_filters(where)
    check_store(existing=True)
    page, images = _metric_plots.render(name, metrics, x, filters, pathlib.Path(output))
    click.echo(f"drew {len(images)} plot(s) of {name}: {', '.join(images)}")
    click.echo(f"plots: {page}")
