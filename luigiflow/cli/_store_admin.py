"""`luigiflow gc` and `luigiflow upgrade`: removing runs nothing needs, re-keying old ones."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from luigiflow._errors import LuigiflowError
from luigiflow._store import schema
from luigiflow.cli._commands import check_store
from luigiflow.cli._render import make_console


def gc(
    dry_run: bool,
    older_than: float | None,
    task: str | None,
    backend_store_uri: str | None,
    yes: bool = False,
) -> None:
    from luigiflow._ops import gc as _gc

    check_store(existing=True)
    garbage, kept = _gc.collect(older_than, task)
    console = make_console()
    for held in kept:
        console.print(
            f"keeping {held.run_id} {held.experiment}/{held.family or '-'} [{held.status}] "
            f"{held.reason}",
            highlight=False,
        )
    for item in garbage:
        console.print(
            f"{'would remove' if dry_run or not yes else 'removing'} {item.run_id} "
            f"{item.experiment}/{item.family or '-'} [{item.status}] {item.reason}, "
            f"{item.bytes} bytes",
            highlight=False,
        )
    freed = sum(item.bytes for item in garbage)
    if dry_run:
        console.print(f"{len(garbage)} run(s), would free {freed} bytes", highlight=False)
        return
    if garbage and not yes:
        question = f"Permanently delete these {len(garbage)} run(s) and their files?"
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise LuigiflowError(
                f"gc would permanently delete {len(garbage)} run(s) and this is not a "
                "terminal to ask in: pass --yes to delete them, or --dry-run to list them"
            )
        if not click.confirm(question, default=False):
            console.print("nothing removed", highlight=False)
            raise click.exceptions.Abort()
    _gc.remove(garbage, backend_store_uri)
    console.print(f"{len(garbage)} run(s), freed {freed} bytes", highlight=False)


def upgrade(dry_run: bool, modules: Sequence[str]) -> None:
    from luigiflow._ops import upgrade as _upgrade
    from luigiflow._ops.modules import import_module

    check_store(existing=True)
    for module in modules:
        import_module(module)
    done = _upgrade.upgrade(dry_run=dry_run)
    console = make_console()
    verb = "would re-key" if dry_run else "re-keyed"
    for run, identity in done.rekeyed:
        family = run.data.tags.get(schema.FAMILY_TAG, "?")
        console.print(
            f"{verb} {family} run {run.info.run_id} -> identity {identity[:12]}", highlight=False
        )
    for run, reason in done.kept:
        family = run.data.tags.get(schema.FAMILY_TAG, "?")
        console.print(
            f"not re-keyed: {family} run {run.info.run_id}: {reason} (it runs again on the "
            "next build)",
            highlight=False,
        )
    console.print(
        f"{verb} {len(done.rekeyed)}, not re-keyable {len(done.kept)}"
        + ("" if done.rekeyed or done.kept else " (every run is of the current store format)"),
        highlight=False,
    )
