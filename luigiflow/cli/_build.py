"""`luigiflow run` and `luigiflow reproduce`: build, then report what ran and what was reused."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from luigiflow._ops import lineage
from luigiflow._store import client, schema, sqlite_file
from luigiflow.cli import _render
from luigiflow.cli._commands import _roots, check_store, store_line, use_module
from luigiflow.cli._render import make_console, num


def run(
    module: str | None,
    config_path: str | None,
    workers: int,
    scheduler_url: str | None,
    rerun_changed: bool,
    task_words: Sequence[str],
    pipeline_path: str | None = None,
    dvc_path: str | None = None,
    rerun: Sequence[str] = (),
) -> None:
    import luigiflow as lf

    roots, config = _roots(module, task_words, config_path, pipeline_path, dvc_path)
    check_store()
    new_store = _new_default_store()
    console = make_console()
    if _is_adaptive(config):
        roots = _adaptive_search(console, config, workers, scheduler_url)
    force: list[Any] = []
    older: dict[Any, str] = {}  # tasks reused with an older run than the newest, and why
    reuse: dict[Any, str] = {}
    if rerun_changed or rerun or getattr(config, "always_changed", ()):
        # Only here: the plan (and CommandTask, which it imports) is not needed to build.
        from luigiflow._ops import plan as _plan

        planned = _plan.make_plan(roots, rerun_changed=rerun_changed, rerun=rerun)
        force = _plan.tasks_to_force(planned)
        reuse = _plan.runs_to_reuse(planned)
        older = {e.task: e.reasons[0] for r in planned for e in r.walk() if e.task in reuse}
    if getattr(config, "point_overlay", None) is not None:
        _build_points(console, config, roots, workers, scheduler_url, force, reuse)
        force = []  # run above; the build below finds every point done
    overlay = getattr(config, "params_overlay", None)
    with overlay() if overlay is not None else contextlib.nullcontext([]) as overridden:
        result = lf.build(
            roots,
            workers=workers,
            scheduler_url=scheduler_url,
            force=force,
            reuse=reuse,
            raise_on_failure=False,
            # Failures are reported below, once each; full tracebacks are stored on the
            # FAILED runs (luigiflow/traceback.txt), not dumped on the terminal.
            log_level="CRITICAL",
        )
    ids = [*result.runs.values(), *(d.run_id for d in result.failure_details.values())]
    runs = lineage.get_runs([i for i in ids if i]) if ids else {}
    title = repr(roots[0]) if len(roots) == 1 else f"{len(roots)} tasks from {config_path}"
    console.print(_render.build_summary(result, runs, f"luigiflow run {title}"))
    for line in _cutoff_lines(result, runs) + _code_lines(result, runs, older):
        console.print(line, highlight=False, soft_wrap=True)
    deleted = _render.deleted_runs(result, runs)
    elsewhere = _render.by_other_workers(result, runs)
    console.print(store_line(), highlight=False, soft_wrap=True)  # a path, never broken
    console.print(
        f"executed {len(result.executed)}, reused {len(result.reused)}"
        + (f" ({len(elsewhere)} built by another worker now)" if elsewhere else "")
        + f", failed {len(result.failed)}"
        + (f", run deleted {len(deleted)}" if deleted else ""),
        highlight=False,
    )
    # Every task reran: after an upgrade, say why here, not only in `plan`. Asked only
    # then, as it reads three tags of each run of the executed tasks' experiments.
    everything = result.executed and not result.reused
    reformatted = result.rerun_after_format_change(runs) if everything else {}
    if reformatted:
        console.print(
            f"{len(reformatted)} of the executed tasks ran again with the same parameters, "
            f"their runs made by an earlier luigiflow: "
            f"{schema.formula_change(min(reformatted.values()))}; see docs/upgrading.md",
            highlight=False,
        )
    for root in roots:
        if root in result.runs:
            console.print(
                f"result: luigiflow show {result.runs[root]}", highlight=False, soft_wrap=True
            )
    if new_store is not None:
        _hint_ignore(new_store)
    if not result.success:
        for line in _render.failure_report(result):
            click.echo(line, err=True)
        raise SystemExit(1)  # reported above, once
    if getattr(config, "restore_workspace", None) is not None:
        restored = config.restore_workspace(result.runs)
        if restored:
            console.print(
                f"restored {len(restored)} output(s) in the workspace to match the runs used: "
                + ", ".join(restored),
                highlight=False,
            )
    if overridden:
        console.print(
            f"--set values applied to {', '.join(overridden)} for this build only; the "
            "file(s) hold their own values again",
            highlight=False,
        )
    if getattr(config, "sweep", None) is not None:
        _report_sweep(console, config, result)


def _is_adaptive(config: Any) -> bool:
    return getattr(getattr(config, "sweep", None), "kind", None) == "optuna"


def _adaptive_search(
    console: Console, config: Any, workers: int, scheduler_url: str | None
) -> list[Any]:
    """Run an [sweep.optuna] search, a batch of trials per build; returns every trial's
    task, which the build below then finds done (and reports with the sweep)."""
    import luigiflow as lf
    from luigiflow._ops.sweep import adaptive

    def build(tasks: list[Any]) -> Any:
        return lf.build(
            tasks,
            workers=workers,
            scheduler_url=scheduler_url,
            raise_on_failure=False,
            log_level="CRITICAL",
        )

    summary = adaptive.search(config, build)
    console.print(
        f"optuna: {len(config.sweep.combinations)} trial(s) complete, {summary.asked} asked "
        f"now; the search executed {len(summary.executed)} task(s), "
        f"{len(summary.failed)} trial(s) failed"
        + (f", {len(summary.pruned)} pruned" if config.sweep.settings.get("pruner") else ""),
        highlight=False,
    )
    return list(config.tasks())


def _build_points(
    console: Console,
    config: Any,
    roots: list[Any],
    workers: int,
    scheduler_url: str | None,
    force: list[Any],
    reuse: dict[Any, str],
) -> None:
    """A dvc.yaml config: each point built alone while the params files hold its values
    (its scripts read them there); a failed point ends the command here."""
    import luigiflow as lf
    from luigiflow._ops.stages.experiment import build_points

    def build(tasks: list[Any], forced: list[Any]) -> Any:
        return lf.build(
            tasks,
            workers=workers,
            scheduler_url=scheduler_url,
            force=forced,
            reuse=reuse,
            raise_on_failure=False,
            log_level="CRITICAL",
        )

    results = build_points(roots, config.point_overlay, build, force)
    console.print(
        f"built {len(roots)} points one at a time: executed "
        f"{sum(len(r.executed) for r in results)}, reused {sum(len(r.reused) for r in results)}, "
        f"failed {sum(len(r.failed) for r in results)} (the params files held each point's "
        "values, then their own again)",
        highlight=False,
    )
    failures = [line for r in results if not r.success for line in _render.failure_report(r)]
    if failures:
        for line in failures:
            click.echo(line, err=True)
        raise SystemExit(1)  # reported above, once


def _new_default_store() -> Any:
    """The folder of the embedded store this build is about to create (None: it exists,
    or the store was chosen with MLFLOW_TRACKING_URI)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    db = sqlite_file.sqlite_path(client.tracking_uri())
    return None if db is None or db.exists() else db.parent


def _hint_ignore(folder: Any) -> None:
    """The first build in a git work tree: say how to keep the store out of `git add -A`
    (luigiflow never edits the project's .gitignore itself)."""
    import subprocess

    try:
        inside = subprocess.run(
            ["git", "-C", str(folder), "check-ignore", "-q", "mlflow.db"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return  # no git: nothing to say
    if inside.returncode == 1:  # 0: ignored; 128: not a git work tree
        click.echo(
            f"luigiflow: the new store (mlflow.db, mlruns/) in {folder} is not git-ignored; "
            "keep it out of commits: printf 'mlflow.db*\\nmlruns/\\n' >> .gitignore",
            err=True,
        )


def _cutoff_lines(result: Any, runs: dict[str, Any]) -> list[str]:
    """`evaluate: reused, upstream train re-ran with identical outputs` for each task
    cut off in this build (docs/identity.md, "Early cutoff")."""
    from luigiflow._store import schema

    cut = {
        task: runs[result.runs[task]]
        for task in result.reused
        if result.runs.get(task) in runs and schema.CUTOFF_TAG in runs[result.runs[task]].data.tags
    }
    sources = (
        lineage.get_runs([r.data.tags[schema.CUTOFF_TAG] for r in cut.values()]) if cut else {}
    )
    lines = []
    for task, run in cut.items():
        source_id = run.data.tags[schema.CUTOFF_TAG]
        now = schema.upstream_ids(run.data.tags)
        then = schema.upstream_ids(sources[source_id].data.tags) if source_id in sources else {}
        rerun = [name for name, run_id in now.items() if then.get(name) != run_id] or list(now)
        lines.append(
            f"{task.get_task_family()}: reused, upstream {', '.join(rerun)} re-ran with "
            f"identical outputs (results of run {source_id})"
        )
    return lines


def _code_lines(result: Any, runs: dict[str, Any], older: dict[Any, str]) -> list[str]:
    """What `plan` says of reused tasks and code (docs/identity.md, "When a task is
    reused"): `Featurize: reused run X; code changed since this run: ...` for a reused run
    whose code changed since, the plan's reason for an older run whose code matches."""
    from luigiflow._ops import recorded

    lines = []
    for task in result.reused:
        run = runs.get(result.runs.get(task, ""))
        if run is None:
            continue
        if task in older:
            lines.append(f"{task.get_task_family()}: {older[task]}")
        elif (changed := recorded.changed_since(task, run)) is not None:
            shown = _render.short_id(run.info.run_id)
            lines.append(f"{task.get_task_family()}: reused run {shown}; {changed}")
    return lines


def _report_sweep(console: Console, config: Any, result: Any) -> None:
    from luigiflow._ops.sweep import record as _sweep

    sweep_id, frame, plots = _sweep.record(config, result)
    metric = config.sweep.metric
    table = Table(
        title=f"sweep {sweep_id}: {len(frame)} combination(s)"
        + (f", sorted by {metric} ({config.sweep.goal})" if metric else "")
    )
    for column in frame.columns:
        table.add_column(str(column), no_wrap=column == "run_id")
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    console.print(
        f"sweep record: run {sweep_id} in experiment '{_sweep.SWEEP_EXPERIMENT}'", highlight=False
    )
    console.print(f"plots: {plots}", highlight=False)


def reproduce(run_id: str, force: bool, workers: int, module: str | None = None) -> None:
    import luigiflow as lf
    from luigiflow._ops import reproduce as _reproduce

    check_store(existing=True)
    use_module(module)
    console = make_console()
    original = _reproduce.load_run(run_id)
    task = _reproduce.task_from_run(original)
    # Stored text (families, parameter values, paths) is shown as text, never as markup.
    console.print(f"run {run_id} was made by {_render.safe(repr(task))}", highlight=False)
    found = _reproduce.differences(original, task)
    if found:
        console.print("differences from the recorded run:", highlight=False)
        for line in found:
            console.print(f"  - {_render.safe(line)}", highlight=False, soft_wrap=True)
    else:
        console.print("code and inputs match the recorded run", highlight=False)
    inputs = _reproduce.forced_inputs(original, task) if force else None
    if inputs:
        console.print(_render.safe(inputs), highlight=False, soft_wrap=True)
    result = lf.build(
        [task],
        workers=workers,
        force=[task] if force else [],
        log_level="CRITICAL",
        raise_on_failure=False,
    )
    if not result.success:
        for line in _render.failure_report(result):
            click.echo(line, err=True)
        raise SystemExit(1)  # reported above, once
    new_id = result.runs[task]
    if new_id == run_id:
        console.print(f"reused: run {run_id} still completes this task (use --force to re-execute)")
        return
    new = lineage.get_run(new_id)
    console.print(f"{'re-executed' if task in result.executed else 'reused'} as run {new_id}")
    table = Table(title="metrics: recorded vs now")
    for column in ("metric", "recorded", "now", "same"):
        table.add_column(column)
    old_metrics, new_metrics = original.data.metrics, new.data.metrics
    differ = []
    for key in sorted(set(old_metrics) | set(new_metrics)):
        a, b = old_metrics.get(key), new_metrics.get(key)
        same = a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))
        table.add_row(_render.text(key), num(a), num(b), "yes" if same else "NO")
        if not same:
            differ.append(key)
    console.print(table)
    if differ:  # a script (CI, a cron job) must be able to tell without reading the table
        click.echo(f"reproduced metrics differ from run {run_id}: {', '.join(differ)}", err=True)
        raise SystemExit(1)
