"""`build()`: `luigi.build` plus the answer a researcher wants — what ran, what was reused.

result = lf.build([Evaluate(algorithm="rf")], workers=2)
result.runs[task]          # run id of every task in the graph
result.executed            # tasks computed now
result.reused              # tasks whose FINISHED run already existed

What a build did is a `BuildResult` (`build_result.py`); its events reach listeners
through `build_events.py`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import luigi

from luigiflow import _settings
from luigiflow._display.progress import ProgressDisplay, wants_display
from luigiflow._engine import events as _events
from luigiflow._engine import interrupts, luigi_compat
from luigiflow._engine import session as _session
from luigiflow._engine.protocol import bind_run, is_tracked
from luigiflow._errors import BuildError, BuildInterrupted, LuigiflowError
from luigiflow._ops import elsewhere, stopped
from luigiflow._ops.build_events import (
    Watcher,
    fan_out,
    install_event_handlers,
    remove_failure_handlers,
)
from luigiflow._ops.build_result import BuildResult, assemble
from luigiflow._ops.graph import walk_graph
from luigiflow._store import client, current
from luigiflow._task import MlflowTask


def _scheduler_options(scheduler_url: str | None, local_scheduler: bool | None) -> dict[str, Any]:
    if scheduler_url:
        parsed = urllib.parse.urlparse(scheduler_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise LuigiflowError(
                f"scheduler URL {scheduler_url!r} is not an http(s) URL like http://host:8082"
            )
        return {"local_scheduler": False, "scheduler_url": scheduler_url}
    return {"local_scheduler": True if local_scheduler is None else local_scheduler}


def build(
    tasks: luigi.Task | Iterable[luigi.Task],
    workers: int = 1,
    scheduler_url: str | None = None,
    local_scheduler: bool | None = None,
    log_level: str = "WARNING",
    raise_on_failure: bool = True,
    on_event: Callable[[_events.TaskEvent], None] | None = None,
    force: Iterable[luigi.Task] = (),
    progress: bool | None = None,
    reuse: Mapping[luigi.Task, str] | None = None,
    **luigi_options: Any,
) -> BuildResult:
    """Build `tasks` with Luigi and report each task's run; raise BuildError on failure.

    Uses Luigi's local scheduler unless `scheduler_url` (a running `luigid`) is given.
    `on_event` receives each task's started/executed/reused event as it happens, from
    every worker process (it is called on a background thread). Tasks in `force`
    run again even when complete (their existing runs are ignored for this build);
    tasks in `reuse` are completed by the run given (an older run of their identity,
    as `lf.plan(tasks, rerun_changed=True).reused` names it), not by the newest.
    `progress` shows a live display (tasks done, running, time left) on stderr: by
    default when stderr is a terminal; `False` turns it off.
    """
    roots = [tasks] if isinstance(tasks, luigi.Task) else list(tasks)
    bad = [t for t in roots if not isinstance(t, luigi.Task)]
    if bad:
        raise LuigiflowError(f"build() takes Luigi task instances, got {bad[0]!r}")
    if not isinstance(workers, int) or workers < 1:
        raise LuigiflowError(f"workers must be a positive int, got {workers!r}")
    options = _scheduler_options(scheduler_url, local_scheduler)
    _settings.validate()
    # Walking the graph computes every identity: definition and parameter errors
    # surface here, before any run is created.
    graph = walk_graph(roots)
    for task in graph:
        if is_tracked(task):
            _ = task.identity
            bind_run(task, None)  # a run bound by an earlier build

    current.prepare_for_writes()
    started_ms = int(time.time() * 1000)
    sink = tempfile.mkdtemp(prefix="luigiflow-build-")
    session = _session.Session(sink=_events.EventSink(sink))
    session.set_aside_held = options["local_scheduler"] is True
    forced = [t.identity for t in force if is_tracked(t)]
    if forced:
        session.completion.ignore_runs_before(forced, int(time.time() * 1000))
    chosen = {t.identity: run_id for t, run_id in (reuse or {}).items() if is_tracked(t)}
    if chosen:
        session.completion.choose_runs(chosen)
    handlers = install_event_handlers()
    listeners = [on_event] if on_event else []
    display = ProgressDisplay(graph) if wants_display(progress) else None
    if display is not None:
        listeners.append(display)
    watcher = Watcher(sink, fan_out(listeners)) if listeners else None
    with contextlib.ExitStack() as stack:
        stack.enter_context(_session.activated(session, graph))
        if display is not None:
            stack.enter_context(display)
        stack.callback(shutil.rmtree, sink, True)
        stack.callback(remove_failure_handlers, handlers)
        if watcher:
            stack.callback(watcher.stop)
        _refuse_a_read_only_store(session, roots)
        try:
            with interrupts.sigterm_raises():
                luigi_result, events, failures_by_id = _run_luigi(
                    session, roots, sink, workers, options, log_level, scheduler_url, luigi_options
                )
        except KeyboardInterrupt as exc:
            signum = interrupts.signum_of(exc)
            with interrupts.shielded():
                labels = {t.task_id: repr(t) for t in graph}
                killed = stopped.after_interrupt(session, labels, signum)
            raise BuildInterrupted(signum, killed) from None
        result = assemble(session, graph, roots, events, failures_by_id)
        result.started_ms = started_ms
        details = _events.failure_details(sink)
        result.failure_details = {
            t: details[t.task_id] for t in result.failed if t.task_id in details
        }
    ok = not result.failed and (
        luigi_result is None
        or (luigi_result.scheduling_succeeded and elsewhere.luigi_settled(luigi_result))
    )
    if not result.failed:
        # Never report success for a result that does not exist, whatever Luigi said;
        # a root another worker finished counts whatever Luigi said too ("not run").
        missing = [
            r
            for r in roots
            if isinstance(r, MlflowTask)
            and not result.has_run(r)
            and r in elsewhere.missing_roots(session, [r])
        ]
        why = "Luigi did not run it (see the log)" if not ok else "build it again"
        result.failed.update(
            (r, LuigiflowError(f"{r!r} has no FINISHED run after the build; {why}"))
            for r in missing
        )
        ok = ok and not missing
    if raise_on_failure and not ok:
        raise BuildError(result.failed, result)
    return result


def _refuse_a_read_only_store(session: _session.Session, roots: list[luigi.Task]) -> None:
    """On a read-only store, or one an older MLflow made (unless --upgrade-store migrates
    it), a build that would run anything stops here, in one line."""
    read_only = client.is_read_only(session.store.uri)
    if not read_only and not current.made_by_an_older_mlflow(session.store.uri):
        return
    pending = [r for r in roots if not r.complete()]
    if pending:
        shown = ", ".join(map(repr, pending[:3])) + (", ..." if len(pending) > 3 else "")
        if read_only:
            client.refuse_writes_if_read_only(session.store.uri, f"building {shown}")
        current.migrate_if_asked(session.store.uri)


def _run_luigi(
    session: _session.Session,
    roots: list[luigi.Task],
    sink: str,
    workers: int,
    options: dict[str, Any],
    log_level: str,
    scheduler_url: str | None,
    luigi_options: dict[str, Any],
) -> tuple[Any, list[_events.TaskEvent], dict[str, BaseException]]:
    """Let Luigi build the roots (unless already complete); the build's events."""
    session.completion.prefetch(roots)

    def run_luigi() -> Any:
        with _waiting_for_other_workers(bool(scheduler_url)):
            return luigi.build(
                roots,
                worker_scheduler_factory=luigi_compat.worker_factory(
                    own_order=_shared_by_machines(session.store.uri)
                ),
                workers=workers,
                detailed_summary=True,
                log_level=log_level,
                **options,
                **luigi_options,
            )

    # Roots already complete: Luigi would ask them and stop; skip its start-up.
    # (complete() binds each root's run from the answers at hand, no query.)
    done = all(is_tracked(r) and session.completion.known_complete(r) for r in roots)
    luigi_result = None if done and all(r.complete() for r in roots) else run_luigi()
    # Luigi's worker leaves as soon as what remains is running on another worker
    # (keep_alive counts pending tasks only), and calls a task it offered after another
    # worker finished it "not run". Wait for the other worker's run, then ask again until
    # the roots exist: the scheduler hands us a task again if its other runner fails or
    # dies. Bounded: a whole lease with no live run of a missing root ends the waiting.
    waiting = elsewhere.Waiting(session)
    while (
        scheduler_url
        and luigi_result is not None
        and elsewhere.luigi_settled(luigi_result)
        and not _events.collect(sink)[1]
        and waiting.worth_another_round()
    ):
        missing = elsewhere.missing_roots(session, roots)
        if not missing or waiting.wait_for(missing):
            break  # every root has its FINISHED run, this client's or another's
        luigi_result = run_luigi()
    events, failures_by_id = _events.collect(sink)
    return luigi_result, events, failures_by_id


def _shared_by_machines(uri: str) -> bool:
    """A store that clients on several machines build in (a tracking server, a database
    server), unlike a local SQLite file: their local schedulers take turns differently."""
    return "://" in uri and not uri.startswith(("sqlite:", "file:"))


# Under luigid, a keep-alive worker that has had nothing to run for this long leaves
# Luigi, and `build` asks the scheduler again (see elsewhere.Waiting). Offering the graph
# again turns a task luigid marked FAILED for a dead worker back into PENDING at once, so
# it runs within that worker's lease, not after luigid's `retry_delay` (900 s).
IDLE_WORKER_LEAVES_AFTER = "20 seconds"


@contextlib.contextmanager
def _waiting_for_other_workers(shared: bool) -> Iterator[None]:
    """With a central scheduler, wait for tasks other processes are running.

    Luigi's worker otherwise exits as soon as everything left is taken by someone
    else, and `build` would return before the graph it was asked for exists. A user's
    own `[worker]` settings (`keep_alive`, `max_keep_alive_idle_duration`,
    `wait_interval`, `wait_jitter`) are respected.
    """
    config = luigi.configuration.get_config()
    if not shared:
        yield
        return
    if not config.has_section("worker"):
        config.add_section("worker")
    ours = [
        (name, value)
        for name, value in (
            ("keep_alive", "true"),
            ("max_keep_alive_idle_duration", IDLE_WORKER_LEAVES_AFTER),
            # Luigi's idle worker asks luigid for work again after 1 s plus up to 5 s of
            # jitter: clients waiting while another runs an upstream slept through the
            # tasks it unblocked (4 clients were slower than 1). Within a second now:
            # luigid's answers are cheap, measured in docs/benchmarks.md.
            ("wait_interval", "0.5"),
            ("wait_jitter", "0.5"),
        )
        if not config.has_option("worker", name)
    ]
    for name, value in ours:
        config.set("worker", name, value)
    try:
        yield
    finally:
        for name, _ in ours:
            config.remove_option("worker", name)
