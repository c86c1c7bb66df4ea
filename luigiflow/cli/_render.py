"""Rendering shared by the commands: consoles, short run ids, the build summary and the
report of failed tasks. Only presentation; every fact comes from `_ops`."""

from __future__ import annotations

import os
import re
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from luigiflow._core import redaction
from luigiflow._core.labels import task_label
from luigiflow._store.records import DELETED

SHORT_ID = 8  # like git's short hashes: unique enough in one store, fits a table


def make_console(stderr: bool = False) -> Console:
    """A terminal's console, or a fixed-width one (COLUMNS, else 120) for pipes and files.

    Nothing is coloured when the output is not a terminal.
    """
    console = Console(stderr=stderr)
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(stderr=stderr, width=120)


# Terminal escape sequences: CSI (colours, cursor moves, screen clears), OSC to BEL or ST
# (window titles, hyperlinks, OSC 52 writing the clipboard), DCS/SOS/PM/APC strings, and
# any other ESC pair; then every C0/C1 control but tab and newline, and the bidirectional
# overrides that make text read otherwise than it is.
_ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b.?",
    re.DOTALL,
)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def plain(value: Any) -> str:
    """Text read from the store (written by anyone who can write to it) as it may reach a
    terminal: escape sequences and control characters removed, tab and newline kept."""
    return _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", str(value)))


def text(value: Any) -> Text:
    """A table cell or line of stored text, shown as the characters it holds: a rich
    `Text` is never read as markup (`[/data/col]`, `[bold red]x[/]` print as written)."""
    return Text(plain(value))


def safe(value: Any) -> str:
    """Stored text to put inside a markup string: cleaned, and its brackets escaped."""
    return escape(plain(value))


def num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def short_id(run_id: str, full: bool = False) -> str:
    return run_id if full else run_id[:SHORT_ID]


def key_metrics(metrics: dict[str, float], limit: int = 3) -> str:
    """The first few metrics of a run as `name=value`, for one table cell."""
    shown = [f"{k}={num(v)}" for k, v in sorted(metrics.items())[:limit]]
    more = len(metrics) - limit
    return ", ".join(shown) + (f" (+{more})" if more > 0 else "")


def build_summary(result: Any, runs: dict[str, Any], title: str) -> Table:
    """One row per task of the build: status, short run id, duration, key metrics."""
    table = Table(title=safe(title), title_justify="left")
    for column in ("task", "status", "run", "took", "metrics"):
        table.add_column(column, no_wrap=column in ("status", "run", "took"))
    for task in result.tasks:
        if task in result.executed:
            status = "executed"
        elif task in result.failed:
            status = "failed"
        elif task in result.runs and _deleted(runs.get(result.runs[task])):
            # a downstream run consumed it, but a user deleted it since: not reusable
            status = "run deleted"
        elif task in result.runs:
            status = "reused"
        elif result.plain_complete(task):
            status = "complete"  # a plain Luigi task (WrapperTask, range tool): no run
        else:
            status = "not run"
        run_id = result.runs.get(task) or _failed_run(result, task)
        found = runs.get(run_id)
        if status == "reused" and found is not None and _made_during(found, result):
            status = "by another worker"  # team mode: another client built it just now
        took = metrics = ""
        if found is not None and found.info.end_time:
            took = f"{(found.info.end_time - found.info.start_time) / 1000:.1f}s"
        if found is not None and task in result.executed:
            metrics = key_metrics(dict(found.data.metrics))
        table.add_row(text(task_label(task)), status, short_id(run_id), took, text(metrics))
    return table


def _made_during(run: Any, result: Any) -> bool:
    from luigiflow._store import schema

    if schema.CUTOFF_TAG in run.data.tags:  # made here, computing nothing (early cutoff)
        return False
    return bool(getattr(result, "started_ms", 0)) and (run.info.end_time or 0) >= result.started_ms


def by_other_workers(result: Any, runs: dict[str, Any]) -> list[Any]:
    """Reused tasks whose run another worker made while this build ran."""
    return [
        task
        for task in result.reused
        if task in result.runs
        and runs.get(result.runs[task]) is not None
        and _made_during(runs[result.runs[task]], result)
    ]


def deleted_runs(result: Any, runs: dict[str, Any]) -> list[Any]:
    """Tasks of the build whose run (consumed by a reused downstream run) was deleted."""
    return [
        task
        for task in result.tasks
        if task not in result.executed
        and task not in result.failed
        and task in result.runs
        and _deleted(runs.get(result.runs[task]))
    ]


def _deleted(run: Any) -> bool:
    return run is not None and run.info.lifecycle_stage == DELETED


def _failed_run(result: Any, task: Any) -> str:
    detail = result.failure_details.get(task)
    return detail.run_id if detail is not None else ""


def failure_report(result: Any) -> list[str]:
    """Each failed task once: its run, the error, the user's file:line, what to run next."""
    from luigiflow._core.failures import one_line
    from luigiflow._errors import CommandFailedError

    lines = []
    for task, exc in result.failed.items():
        secrets = redaction.secrets_of(task)
        detail = result.failure_details.get(task)
        run_id = detail.run_id if detail is not None else ""
        lines.append(f"FAILED {task_label(task)}" + (f"  run {run_id}" if run_id else ""))
        lines.append(f"  {one_line(exc)}")
        if isinstance(exc, CommandFailedError):  # the command's stderr tail
            lines.extend(f"    {line}" for line in str(exc).splitlines()[1:])
        if detail is not None and detail.where:
            lines.append(f"  at {detail.where}")
        if run_id:
            lines.append(f"  full traceback: luigiflow show {run_id}")
    # An exception's text may quote a secret parameter (a failed login) or carry escape
    # sequences from a command's output.
    return [plain(redaction.scrub(line, secrets)) for line in lines]


def write_graph(entries: Any, fmt: str, output: str | None) -> None:
    """The graph as Mermaid or Graphviz text on stdout or into `output`; an .svg or .png
    `output` is rendered with Graphviz's `dot` when it is installed."""
    import shutil
    import subprocess

    import click

    from luigiflow._errors import LuigiflowError
    from luigiflow._ops.graph import export

    suffix = os.path.splitext(output or "")[1].lower()
    image = suffix in (".svg", ".png")
    if fmt == "tree":
        fmt = "mermaid" if suffix in (".mmd", ".md") else "dot"
    text = export(entries, "dot" if image else fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    if not image:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        dot = shutil.which("dot")
        if dot is None:
            raise LuigiflowError(
                f"rendering {output} needs Graphviz's dot (apt-get install graphviz); "
                "or write the text with --output graph.dot / --format mermaid"
            )
        subprocess.run([dot, f"-T{suffix[1:]}", "-o", output], input=text, text=True, check=True)
    click.echo(f"graph written to {output}", err=True)
