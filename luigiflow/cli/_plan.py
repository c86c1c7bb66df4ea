"""`luigiflow plan` (each task reused or will run, and why) and a task's `--help`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click
from rich.table import Table
from rich.tree import Tree

from luigiflow._errors import LuigiflowError
from luigiflow.cli import _render
from luigiflow.cli._build import _is_adaptive
from luigiflow.cli._commands import _roots, check_store, store_line, use_module
from luigiflow.cli._render import make_console


def plan(
    module: str | None,
    config_path: str | None,
    rerun_changed: bool,
    task_words: Sequence[str],
    fmt: str,
    output: str | None = None,
    pipeline_path: str | None = None,
    dvc_path: str | None = None,
    rerun: Sequence[str] = (),
) -> None:
    from luigiflow._ops import plan as _plan

    roots, _config = _roots(module, task_words, config_path, pipeline_path, dvc_path)
    check_store()
    if _is_adaptive(_config):
        # Optuna picks each trial from the results before it: nothing to plan ahead.
        raise LuigiflowError(
            f"{config_path}: an adaptive search ([sweep.optuna]) decides its trials as it "
            "runs, so plan cannot list them; run it (finished trials are reused), or plan a "
            "[sweep.grid] / [sweep.random] config"
        )
    entries = _plan.make_plan(roots, rerun_changed=rerun_changed, rerun=rerun)
    if fmt == "json":
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2, default=str))
        return
    if fmt in ("mermaid", "dot") or output:
        _render.write_graph(entries, fmt, output)
        return
    console = make_console()
    shown: set[str] = set()
    for entry in entries:
        tree = Tree(_plan_label(entry))
        shown.add(entry.task.task_id)
        _plan_tree(tree, entry, shown)
        console.print(tree)
    flat = {id(e.task): e for root in entries for e in root.walk()}
    will = sum(1 for e in flat.values() if e.status == _plan.WILL_RUN)
    console.print(f"{will} task(s) will run, {len(flat) - will} will not")
    console.print(store_line(), highlight=False, soft_wrap=True)  # a path, never broken


def _plan_label(entry: Any) -> str:
    from rich.markup import escape

    label = escape(_render.task_label(entry.task))
    if entry.status == "reused":
        head = f"[green]reused[/]   {label}  run {_render.short_id(entry.run_id or '')}"
    elif entry.status == "will run":
        head = f"[yellow]will run[/] {label}"
    else:
        head = f"[dim]not needed {label}[/]"
    for reason in entry.reasons:
        head += f"\n    - {escape(reason)}"
    return head


def _plan_tree(tree: Tree, entry: Any, shown: set[str]) -> None:
    """Each task once: a task needed again further down refers back to where it was shown."""
    from rich.markup import escape

    for name, child in entry.upstream.items():
        if child.task.task_id in shown:
            label = escape(_render.task_label(child.task))
            tree.add(f"[dim]{name}:[/] {label} [dim]({child.status}, shown above)[/]")
            continue
        shown.add(child.task.task_id)
        branch = tree.add(f"[dim]{name}:[/] " + _plan_label(child))
        _plan_tree(branch, child, shown)


def task_help(
    command_path: str,
    module: str | None,
    name: str,
    pipeline_path: str | None = None,
    dvc_path: str | None = None,
) -> None:
    """`luigiflow run --module M TASK --help` (or `--pipeline FILE STAGE --help`): the
    task's docstring and parameters."""
    from rich.markup import escape

    from luigiflow._ops.modules import task_class, task_help

    carried: Sequence[str] = ()
    read_from: dict[str, str] = {}
    if pipeline_path or dvc_path:
        from luigiflow._ops import stages

        kind, path = ("dvc", dvc_path) if dvc_path else ("pipeline", pipeline_path)
        pipeline = stages.load(kind, str(path))
        pipeline.check_stage(name)
        cls = pipeline.classes[name]
        carried = getattr(cls, "carried_params", ())
        read_from = dict(getattr(cls, "params_from", {}))
        usage = f"--{kind} {path} {name}" + (" [--param VALUE]..." if kind == "pipeline" else "")
    else:
        dotted = use_module(module)
        cls = task_class(name, dotted)
        usage = f"--module {dotted} {name} [--param VALUE]..."
    doc, params = task_help(cls)
    console = make_console()
    console.print(f"Usage: {command_path} {usage}\n")
    if doc:
        console.print(escape(doc) + "\n", highlight=False)
    table = Table(title="parameters", title_justify="left", box=None, pad_edge=False)
    for column in ("option", "type", "default", "notes"):
        table.add_column(column, overflow="fold", no_wrap=column == "option")
    for p in params:
        notes = []
        if p.choices:
            notes.append("one of " + ", ".join(p.choices))
        if p.description:
            notes.append(p.description)
        if not p.significant:
            notes.append("not part of the identity")
        if p.name in carried:
            notes.append("used upstream: passed on to the stage that reads it")
        if p.name in read_from:
            notes.append(f"read by the script from {read_from[p.name]}")
        default = "(required)" if p.default is None else p.default
        # a stage's names are written as in its file: --train.n_est
        option = f"--{p.name}" if pipeline_path or dvc_path else p.option
        table.add_row(option, p.kind, escape(default), escape("; ".join(notes)))
    console.print(table)
