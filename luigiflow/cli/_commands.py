"""Thin commands: call the library, render with rich. No decisions are made here."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from luigiflow import _settings
from luigiflow._errors import LuigiflowError, TrackingError, mask_credentials
from luigiflow._ops import lineage
from luigiflow._store import client, schema, sqlite_file
from luigiflow.cli import _render
from luigiflow.cli._render import make_console, num


def check_store(existing: bool = False) -> None:
    """Fail fast, in one line, on a malformed variable or an unreachable tracking server;
    `existing`: a command that only reads refuses to create an embedded store."""
    _settings.validate()
    uri = client.tracking_uri()
    db = sqlite_file.sqlite_path(uri)
    if existing and db is not None and not db.exists():
        raise TrackingError(
            f"no tracking store at {db} (from "
            + ("MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "this folder")
            + "): run this command in the project folder, or set MLFLOW_TRACKING_URI to the "
            "store the runs are in"
        )
    # MLflow's HTTP client retries for minutes by default; a CLI should answer now.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    if uri.startswith(("http://", "https://")):
        from luigiflow._store import rest_reads  # a local store needs no HTTP client

        # With MLflow's TLS settings, on the connection the reads will go on to use.
        rest_reads.check_reachable(uri)


def store_line() -> str:
    """The store a command used, in one short line (a password in the URI masked)."""
    import urllib.parse

    uri = client.tracking_uri()
    db = sqlite_file.sqlite_path(uri)
    if db is not None:
        return f"store: {db}" + ("" if db.exists() else " (none yet: plan creates nothing)")
    parts = urllib.parse.urlsplit(uri)
    if parts.password:
        host = parts.netloc.rpartition("@")[2]
        uri = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    return f"store: {uri}"


def use_module(module: str | None) -> str | None:
    """Import the user's module; say which dotted name a file path was imported as."""
    # Here, not at the top: `runs`/`show` import this module (check_store) and must not
    # pay for Luigi, which `_ops.modules` imports.
    from luigiflow._ops.modules import import_module

    dotted = import_module(module)
    if module and dotted != module:
        click.echo(f"luigiflow: {module} imported as module {dotted}", err=True)
    return dotted


def _roots(
    module: str | None,
    task_words: Sequence[str],
    config_path: str | None,
    pipeline_path: str | None = None,
    dvc_path: str | None = None,
) -> tuple[list[Any], Any]:
    """The tasks to build: from TASK words, a config file (one per sweep point), or the
    stages of a pipeline file or dvc.yaml."""
    if pipeline_path or dvc_path:
        from luigiflow._ops import stages

        if sum(x is not None for x in (pipeline_path, dvc_path, config_path, module)) > 1:
            raise LuigiflowError("give one of --pipeline, --dvc, --config or --module")
        kind, path = ("dvc", dvc_path) if dvc_path else ("pipeline", pipeline_path)
        # STAGE [--name value]..., or only --name value for every stage built
        stage = task_words[0] if task_words and not task_words[0].startswith("-") else None
        words = task_words[1:] if stage is not None else task_words
        if kind == "dvc":  # values go into the params files: --set train.n_est=60
            from luigiflow._ops.stages.dvc import parse_overrides

            pipeline = stages.load(kind, str(path), parse_overrides(words))
            return pipeline.roots(stage), pipeline
        pipeline = stages.load(kind, str(path))
        return pipeline.roots(stage, words), pipeline
    if config_path is None:
        from luigiflow._ops.modules import build_task

        return [build_task(use_module(module), task_words)], None
    if task_words or module:
        raise LuigiflowError("give either --config or --module TASK [--param value], not both")
    from luigiflow._ops.sweep import config as _config

    config = _config.load(config_path)
    return config.tasks(), config


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
    force = []
    if rerun_changed or rerun or getattr(config, "always_changed", ()):
        # Only here: the plan (and CommandTask, which it imports) is not needed to build.
        from luigiflow._ops import plan as _plan

        force = _plan.tasks_to_force(
            _plan.make_plan(roots, rerun_changed=rerun_changed, rerun=rerun)
        )
    overlay = getattr(config, "params_overlay", None)
    with overlay() if overlay is not None else contextlib.nullcontext([]) as overridden:
        result = lf.build(
            roots,
            workers=workers,
            scheduler_url=scheduler_url,
            force=force,
            raise_on_failure=False,
            # Failures are reported below, once each; full tracebacks are stored on the
            # FAILED runs (luigiflow/traceback.txt), not dumped on the terminal.
            log_level="CRITICAL",
        )
    ids = [*result.runs.values(), *(d.run_id for d in result.failure_details.values())]
    runs = lineage.get_runs([i for i in ids if i]) if ids else {}
    title = repr(roots[0]) if len(roots) == 1 else f"{len(roots)} tasks from {config_path}"
    console.print(_render.build_summary(result, runs, f"luigiflow run {title}"))
    for line in _cutoff_lines(result, runs):
        console.print(line, highlight=False)
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
    reformatted = result.rerun_after_format_change() if everything else {}
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
        restored = config.restore_workspace(result.tasks)
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
        f"{len(summary.failed)} trial(s) failed",
        highlight=False,
    )
    return list(config.tasks())


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


def serve(target: str, port: int, host: str, max_body_bytes: int) -> None:
    from luigiflow.models.serving import serve as serve_bundle

    check_store()
    serve_bundle(target, host, port, max_body_bytes)


def _port_is_free(host: str, port: int) -> None:
    """One line, before MLflow starts, when the port is taken (MLflow's server would log
    the failure among its start-up lines and exit 0)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As uvicorn binds: a port in TIME_WAIT is free, one with a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise LuigiflowError(
                f"cannot serve the UI on {host}:{port} ({exc.strerror}); another UI or server "
                "may be using it: pass another --port"
            ) from exc


def ui(port: int, host: str) -> None:
    uri = client.tracking_uri()
    if uri.startswith(("http://", "https://")):
        check_store()  # one line when nothing answers there
        raise LuigiflowError(
            f"MLFLOW_TRACKING_URI is the tracking server {uri}: its UI is already there, "
            "open it in a browser (unset MLFLOW_TRACKING_URI for the local store's UI)"
        )
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        # One process: a local UI needs no more, and uvicorn's supervisor of several
        # workers kills and restarts them when a loaded machine answers its pings late.
        "--workers",
        "1",
    ]
    # MLflow's job runner starts eight GenAI worker processes (~2 GB) the UI never needs
    # for tracking; on a small machine they delay the UI by minutes. Set it to keep them.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    _port_is_free(host, port)
    shown = mask_credentials(uri)
    click.echo(f"MLflow UI on http://{host}:{port} for {shown} (Ctrl-C stops it)", err=True)
    sys.stdout.flush()
    # Deprecation warnings from MLflow's own server code (Starlette's is a UserWarning)
    # tell a user nothing they can act on.
    os.environ["PYTHONWARNINGS"] = ",".join(
        [
            "ignore::DeprecationWarning",
            "ignore::FutureWarning",
            "ignore:starlette.middleware.wsgi is deprecated",
        ]
    )
    os.execv(sys.executable, command)


def plots(dvc_path: str, output: str) -> None:
    import pathlib

    from luigiflow._errors import ConfigError
    from luigiflow._ops.stages import plots as _plots

    dvc_yaml = pathlib.Path(dvc_path).resolve()
    if not dvc_yaml.is_file():
        raise ConfigError(f"{dvc_yaml} does not exist; give the dvc.yaml with --dvc")
    page, skipped = _plots.render(dvc_yaml, pathlib.Path(output))
    for why in skipped:
        click.echo(f"not drawn: {why}")
    click.echo(f"plots: {page}")


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
