"""The `luigiflow` command: argument wiring only; the work is in the modules beside it.

Nothing here imports MLflow, so `luigiflow --help` answers at once.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from luigiflow import _settings

# `--help` after a task name lists that task's parameters, so run/plan handle it.
TASK_ARGS = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
_debug = False  # set by `luigiflow --debug`: errors keep their full traceback


def _task_options(fn: Any) -> Any:
    fn = click.option("--module", "-m", help="Python module holding the task classes.")(fn)
    fn = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Experiment config (TOML): task, parameters, steps, sweep.",
    )(fn)
    fn = click.option(
        "--pipeline",
        "pipeline_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Pipeline file (TOML) of command stages; TASK is a stage (default: all).",
    )(fn)
    fn = click.option(
        "--dvc",
        "dvc_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="A DVC pipeline (dvc.yaml) run unchanged; TASK is a stage (default: all).",
    )(fn)
    fn = click.option(
        "--workers",
        default=1,
        show_default=True,
        type=click.IntRange(min=1),
        help="Parallel Luigi workers.",
    )(fn)
    fn = click.option(
        "--scheduler-url",
        default=None,
        help="URL of a running luigid (default: Luigi's local scheduler).",
    )(fn)
    fn = click.option(
        "--rerun-changed",
        is_flag=True,
        help="Re-run tasks whose code changed since their run, and downstream.",
    )(fn)
    fn = click.option(
        "--rerun",
        multiple=True,
        metavar="TASK",
        help="Re-execute this task (a class name) and its downstream into new runs; repeatable.",
    )(fn)
    fn = click.option(
        "--help",
        "-h",
        "show_help",
        is_flag=True,
        help="Show this message; after TASK: the task's parameters, types and defaults.",
    )(fn)
    fn = click.argument(
        "task_words", nargs=-1, type=click.UNPROCESSED, metavar="TASK [--param VALUE]..."
    )(fn)
    return fn


def _help_requested(kwargs: dict[str, Any]) -> bool:
    """Print the command's help, or the task's when a task is named; True if printed."""
    if not kwargs.pop("show_help"):
        return False
    from luigiflow.cli import _plan

    ctx = click.get_current_context()
    if kwargs["task_words"]:
        _plan.task_help(
            ctx.command_path,
            kwargs["module"],
            kwargs["task_words"][0],
            kwargs.get("pipeline_path"),
            kwargs.get("dvc_path"),
        )
    else:
        click.echo(ctx.get_help())
    return True


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="luigiflow")
@click.option("--debug", is_flag=True, help="Show full tracebacks of errors.")
def app(debug: bool) -> None:
    """Luigi task graphs where every task is an MLflow run."""
    global _debug
    _debug = debug


@app.command(context_settings=TASK_ARGS)
@_task_options
@click.option(
    "--upgrade-store",
    is_flag=True,
    help="Migrate a store made by an older MLflow to this MLflow's schema (after a backup).",
)
def run(upgrade_store: bool, **kwargs: Any) -> None:
    """Build TASK and its upstream; print what ran and what was reused.

    Example: luigiflow run --module examples.tabular Evaluate --logic pca --workers 2
    """
    from luigiflow.cli import _build

    if upgrade_store:  # through the environment: worker processes must see it too
        os.environ[_settings.UPGRADE_STORE] = "1"
    if not _help_requested(kwargs):
        _build.run(**kwargs)


@app.command(context_settings=TASK_ARGS)
@_task_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tree", "json", "mermaid", "dot"]),
    default="tree",
    help="tree (each task once), json, or the graph as Mermaid or Graphviz text.",
)
@click.option(
    "--output",
    "output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the graph to FILE; .svg/.png are rendered with Graphviz's dot.",
)
def plan(**kwargs: Any) -> None:
    """Dry run: each task reused (run id) or will run, and why. Creates nothing."""
    from luigiflow.cli import _plan

    kwargs.pop("workers")
    kwargs.pop("scheduler_url")
    if not _help_requested(kwargs):
        _plan.plan(**kwargs)


@app.command()
@click.argument("name", metavar="TASK_OR_EXPERIMENT")
@click.option(
    "--where", multiple=True, metavar="PARAM=VALUE", help="Keep runs with this param value."
)
@click.option(
    "--sort", "sort_by", metavar="METRIC", help="Sort by this metric, best (highest) first."
)
@click.option("--ascending", is_flag=True, help="With --sort: lowest first.")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most N runs.")
@click.option("--sweep", "sweep_id", metavar="SWEEP_RUN_ID", help="Only runs linked by this sweep.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.option(
    "--status",
    type=click.Choice(["finished", "failed", "killed", "all"]),
    default="finished",
    show_default=True,
    help="Which runs: failed ones show their error.",
)
@click.option(
    "--full", is_flag=True, help="Whole run ids in the table (csv/json always have them)."
)
def runs(**kwargs: Any) -> None:
    """Runs of one task (class name or experiment) with params and metrics."""
    from luigiflow.cli import _inspect

    _inspect.runs(**kwargs)


@app.command()
@click.argument("task", required=False)
@click.option(
    "--dvc",
    "dvc_path",
    type=click.Path(dir_okay=False),
    default="dvc.yaml",
    show_default=True,
    help="The dvc.yaml whose plots: to draw (without TASK).",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="With TASK: a metric to draw across its runs (repeatable; default: every one).",
)
@click.option(
    "--x", "x", default=None, help="With TASK: the parameter on the x axis (default: run order)."
)
@click.option("--where", multiple=True, help="With TASK: only runs with PARAM=VALUE (repeatable).")
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the PNG files and index.html (default: dvc_plots, or TASK_plots).",
)
def plots(
    task: str | None,
    dvc_path: str,
    metrics: tuple[str, ...],
    x: str | None,
    where: tuple[str, ...],
    output: str | None,
) -> None:
    """Draw the plots a dvc.yaml declares from the workspace files, as `dvc plots show`;
    or, given TASK, its metrics across its runs, as `dvc plots show` compares experiments.

    Examples: luigiflow plots --dvc dvc.yaml --output dvc_plots;
    luigiflow plots evaluate --metric roc_auc.test --x train.n_est
    """
    if task is None:
        if metrics or x or where:
            raise click.UsageError("--metric, --x and --where need TASK: luigiflow plots TASK ...")
        from luigiflow.cli import _serve

        _serve.plots(dvc_path, output or "dvc_plots")
        return
    from luigiflow.cli import _inspect

    _inspect.metric_plots(task, list(metrics), x, list(where), output or f"{task}_plots")


@app.command()
@click.argument("run_id")
def show(run_id: str) -> None:
    """A run and its whole upstream chain: params, metrics, artifacts, code version."""
    from luigiflow.cli import _inspect

    _inspect.show(run_id)


@app.command()
@click.argument("run_a")
@click.argument("run_b")
def diff(run_a: str, run_b: str) -> None:
    """What differs between two results along their whole upstream chains."""
    from luigiflow.cli import _inspect

    _inspect.diff(run_a, run_b)


@app.command()
@click.argument("run_id")
@click.option("--force", is_flag=True, help="Re-execute into a new run even though it is complete.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--module",
    default=None,
    help="Import this module first (when the run was made by a script run as a file).",
)
def reproduce(run_id: str, force: bool, workers: int, module: str | None) -> None:
    """Rebuild the task of RUN_ID from the parameters recorded on it.

    Says first how the current code differs from the recorded commit and fingerprint.
    """
    from luigiflow.cli import _build

    _build.reproduce(run_id, force, workers, module)


@app.command()
@click.argument("target", metavar="RUN_ID_OR_MODEL_URI")
@click.option("--port", default=5001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--max-body-mb",
    default=32.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Largest request body accepted, in MB; larger ones are answered 413 unread.",
)
def serve(target: str, port: int, host: str, max_body_mb: float) -> None:
    """Serve a model bundle over HTTP with MLflow's scoring server (/invocations, /ping)."""
    from luigiflow.cli import _serve

    _serve.serve(target, port, host, int(max_body_mb * 2**20))


@app.command()
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option(
    "--older-than",
    type=float,
    default=None,
    metavar="DAYS",
    help="Only runs that ended at least DAYS ago.",
)
@click.option("--task", default=None, help="Only this task family or experiment.")
@click.option(
    "--backend-store-uri",
    default=None,
    help="The server's database, when MLFLOW_TRACKING_URI is an http server.",
)
@click.option("--yes", "-y", is_flag=True, help="Remove without asking (needed off a terminal).")
def gc(
    dry_run: bool,
    older_than: float | None,
    task: str | None,
    backend_store_uri: str | None,
    yes: bool,
) -> None:
    """Permanently remove luigiflow's deleted runs and dead attempts, with their artifacts."""
    from luigiflow.cli import _store_admin

    _store_admin.gc(dry_run, older_than, task, backend_store_uri, yes)


@app.command()
@click.option("--dry-run", is_flag=True, help="Say what would be re-keyed; change nothing.")
@click.option(
    "--module",
    "modules",
    multiple=True,
    help="Import this module first (tasks of scripts run as files); repeatable.",
)
def upgrade(dry_run: bool, modules: tuple[str, ...]) -> None:
    """Keep runs made by an earlier luigiflow: re-key each FINISHED run of an older store
    format to today's identity where its recorded parameters, code, data and upstream
    runs prove it; tag the others with the reason. Safe to interrupt and to run again.
    """
    from luigiflow.cli import _store_admin

    _store_admin.upgrade(dry_run, modules)


@app.command()
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True)
def ui(port: int, host: str) -> None:
    """Start the MLflow UI on the tracking store luigiflow uses."""
    from luigiflow.cli import _serve

    _serve.ui(port, host)


def main(argv: list[str] | None = None) -> None:
    """Entry point: a LuigiflowError becomes one line `ErrorName: message` and exit code 1."""
    from luigiflow._errors import BuildInterrupted, LuigiflowError

    try:
        app.main(args=argv, prog_name="luigiflow", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C into Abort; an interrupted build says which runs it stopped.
        # Click 8.1 raises it `from None` (8.2+ `from` the interrupt): the context holds it.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, BuildInterrupted):
            click.echo(f"Interrupted: {cause.summary()}", err=True)
            sys.exit(128 + cause.signum)
        click.echo("Interrupted", err=True)
        sys.exit(130)
    except BuildInterrupted as exc:  # raised outside click's own handling
        click.echo(f"Interrupted: {exc.summary()}", err=True)
        sys.exit(128 + exc.signum)
    except click.ClickException as exc:
        click.echo(f"UsageError: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except LuigiflowError as exc:
        if _debug:
            import traceback

            traceback.print_exception(exc)
        from luigiflow._core import redaction

        first = str(exc).splitlines()[0] if str(exc) else ""
        # A message may quote a secret in a form the error's own masking misses (a
        # tracking URI's password decoded by a driver, an environment token).
        first = redaction.scrub(first, redaction.secret_values())
        click.echo(f"{type(exc).__name__}: {first}", err=True)
        sys.exit(1)
    except SystemExit:
        raise
