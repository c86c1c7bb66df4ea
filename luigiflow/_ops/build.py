"""`build()`: `luigi.build` plus the answer a researcher wants — what ran, what was reused.

result = lf.build([Evaluate(algorithm="rf")], workers=2)
result.runs[task]          # run id of every task in the graph
result.executed            # tasks computed now
result.reused              # tasks whose FINISHED run already existed
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import luigi

from luigiflow import _settings
from luigiflow._display.progress import ProgressDisplay, wants_display
from luigiflow._engine import events as _events
from luigiflow._engine import interrupts, luigi_compat
from luigiflow._engine import session as _session
from luigiflow._engine.protocol import bind_run, bound_run, is_tracked
from luigiflow._errors import BuildError, BuildInterrupted, LuigiflowError
from luigiflow._ops import elsewhere, stopped
from luigiflow._ops.graph import walk_graph
from luigiflow._store import client, current, schema
from luigiflow._store.port import TagReads
from luigiflow._store.records import ACTIVE, RunRecord
from luigiflow._task import MlflowTask


class BuildResult:
    """What one build did: every task of the graph, its run id, executed or reused.

    `runs` and `reused` are worked out on first access (following lineage tags from the
    top of the graph), so a build whose answer is "all done" costs one query.
    """

    def __init__(
        self,
        tasks: list[luigi.Task],
        roots: list[luigi.Task],
        executed: dict[luigi.Task, str],
        reused_now: dict[luigi.Task, str],
        failed: dict[luigi.Task, BaseException],
        session: _session.Session,
    ) -> None:
        self._session = session
        self.tasks = tasks
        self.roots = roots
        self.executed = list(executed)
        self.failed = failed
        # Each failed task's FAILED run and the file:line in the user's code.
        self.failure_details: dict[luigi.Task, _events.FailureDetail] = {}
        self._known = {**reused_now, **executed}
        self._reused_now = list(reused_now)
        self._runs: dict[luigi.Task, str] | None = None
        self._reused: list[luigi.Task] = []
        self._by_others: list[luigi.Task] | None = None
        # Epoch ms the build started: a reused run that ended since was made by another
        # worker during this build.
        self.started_ms = 0

    def _resolve(self) -> dict[luigi.Task, str]:
        if self._runs is None:
            runs = dict(self._known)
            reused = list(self._reused_now)
            _fill_reused_runs(
                self._session, self.tasks, self.roots, runs, self.executed, reused, self.failed
            )
            self._runs, self._reused = runs, reused
        return self._runs

    @property
    def runs(self) -> dict[luigi.Task, str]:
        """task -> run id, for every task of the graph that has a run."""
        return self._resolve()

    @property
    def reused(self) -> list[luigi.Task]:
        """Tasks whose FINISHED run already existed (not executed by this build); an
        upstream whose consumed run was deleted since has that run in `runs`, but is not
        reused."""
        self._resolve()
        return self._reused

    @property
    def by_other_workers(self) -> list[luigi.Task]:
        """Reused tasks another worker (another machine, another client) built while this
        build ran: the team case, where every client starts the same command."""
        if self._by_others is None:
            reused = self.reused
            records = self._session.store.get_runs([self.runs[t] for t in reused])
            found = {t: records[self.runs[t]] for t in reused if self.runs[t] in records}
            self._by_others = elsewhere.by_other_workers(reused, found, self.started_ms)
        return self._by_others

    def rerun_after_format_change(self) -> dict[luigi.Task, int]:
        """Executed tasks that had a FINISHED run with the same parameters made by an
        earlier luigiflow (an older store format, whose identity formula differs):
        task -> that run's store format. One read of three tags per experiment."""
        executed = [t for t in self.executed if isinstance(t, MlflowTask)]
        if not executed:
            return {}
        store = self._session.store
        new_runs = store.get_runs([self._known[t] for t in executed if t in self._known])
        found: dict[luigi.Task, int] = {}
        by_experiment: dict[str, list[MlflowTask]] = {}
        for task in executed:
            by_experiment.setdefault(task.get_experiment_name(), []).append(task)
        keys = (schema.FAMILY_TAG, schema.PARAMS_TAG, schema.STORE_FORMAT_TAG)
        for name, tasks in by_experiment.items():
            exp_id = store.experiment_id(name, create=False)
            if exp_id is None:
                continue
            rows: Iterable[tuple[Any, dict[str, str]]]
            if isinstance(store, TagReads):
                rows = store.finished_tags(exp_id, keys)
            else:
                rows = ((r.info, r.data.tags) for r in store.finished_runs(exp_id))
            older: dict[tuple[str | None, str | None], int] = {}
            for _info, tags in rows:
                fmt = schema.store_format(tags)
                if fmt < schema.STORE_FORMAT:
                    older[(tags.get(schema.FAMILY_TAG), tags.get(schema.PARAMS_TAG))] = fmt
            for task in tasks:
                run = new_runs.get(self._known.get(task, ""))
                if run is None:
                    continue
                key = (task.get_task_family(), run.data.tags.get(schema.PARAMS_TAG))
                if key in older:
                    found[task] = older[key]
        return found

    def has_run(self, task: MlflowTask) -> bool:
        """Whether `task` ended this build with a run (cheap: no lineage walk)."""
        if self._runs is not None:
            return task in self._runs
        return task in self._known or bool(bound_run(task) or task.find_run())

    def plain_complete(self, task: luigi.Task) -> bool:
        """Whether a plain Luigi task of the graph (a WrapperTask, a range tool) is
        complete after the build, as Luigi's complete() says."""
        return not is_tracked(task) and not self.failed.get(task) and bool(task.complete())

    @property
    def success(self) -> bool:
        return not self.failed

    def run_of(self, task: luigi.Task) -> str:
        """The run id recorded for `task` in this build."""
        return self.runs[task]

    def __repr__(self) -> str:
        return (
            f"BuildResult(executed={len(self.executed)}, failed={len(self.failed)}, "
            f"tasks={len(self.tasks)})"
        )


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
    **luigi_options: Any,
) -> BuildResult:
    """Build `tasks` with Luigi and report each task's run; raise BuildError on failure.

    Uses Luigi's local scheduler unless `scheduler_url` (a running `luigid`) is given.
    `on_event` receives each task's started/executed/reused event as it happens, from
    every worker process (it is called on a background thread). Tasks in `force`
    run again even when complete (their existing runs are ignored for this build).
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
    forced = [t.identity for t in force if is_tracked(t)]
    if forced:
        session.completion.ignore_runs_before(forced, int(time.time() * 1000))
    handlers = _install_event_handlers()
    listeners = [on_event] if on_event else []
    display = ProgressDisplay(graph) if wants_display(progress) else None
    if display is not None:
        listeners.append(display)
    watcher = _Watcher(sink, _fan_out(listeners)) if listeners else None
    with contextlib.ExitStack() as stack:
        stack.enter_context(_session.activated(session, graph))
        if display is not None:
            stack.enter_context(display)
        stack.callback(shutil.rmtree, sink, True)
        stack.callback(_remove_failure_handlers, handlers)
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
        result = _assemble(session, graph, roots, events, failures_by_id)
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
                worker_scheduler_factory=luigi_compat.worker_factory(),
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
        if not missing:
            break
        waiting.wait_for(missing)
        luigi_result = run_luigi()
    events, failures_by_id = _events.collect(sink)
    return luigi_result, events, failures_by_id


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
    own `[worker] keep_alive` and `max_keep_alive_idle_duration` settings are respected.
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


class _Watcher:
    """Polls the build's event folder and forwards new events to a callback."""

    def __init__(self, folder: str, callback: Callable[[_events.TaskEvent], None]) -> None:
        self.tail = _events.Tail(folder)
        self.callback = callback
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(0.2):
            self._flush()

    def _flush(self) -> None:
        for event in self.tail.poll():
            self.callback(event)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        self._flush()


def _fan_out(
    listeners: list[Callable[[_events.TaskEvent], None]],
) -> Callable[[_events.TaskEvent], None]:
    def send(event: _events.TaskEvent) -> None:
        for listener in listeners:
            listener(event)

    return send


def _install_event_handlers() -> list[tuple[str, Any]]:
    # Luigi fires these in whichever process ran the task (a forked child when
    # workers > 1); the handler writes to the build's event folder, which all share.
    def on_failure(task: luigi.Task, exc: BaseException) -> None:
        _session.of(task).record_failure(task.task_id, exc)

    def on_broken(task: luigi.Task, exc: BaseException) -> None:
        _session.of(task).record_failure(task.task_id, exc)

    def on_present(task: luigi.Task) -> None:
        # Found complete while scheduling: Luigi will not look at its upstream tasks.
        run = bound_run(task) if is_tracked(task) else None
        _session.of(task).record("present", task.task_id, run.info.run_id if run else "")

    # PROCESS_FAILURE fires in the parent when a worker process died without a word.
    pairs = [
        (luigi.Event.FAILURE, on_failure),
        (luigi.Event.BROKEN_TASK, on_broken),
        (luigi.Event.PROCESS_FAILURE, stopped.on_worker_died),
        (luigi.Event.DEPENDENCY_PRESENT, on_present),
    ]
    for event, handler in pairs:
        luigi.Task.event_handler(event)(handler)
    return pairs


def _remove_failure_handlers(pairs: list[tuple[str, Any]]) -> None:
    for event, handler in pairs:
        luigi_compat.remove_event_handler(event, handler)


def _assemble(
    session: _session.Session,
    graph: list[luigi.Task],
    roots: list[luigi.Task],
    events: list[_events.TaskEvent],
    failures_by_id: dict[str, BaseException],
) -> BuildResult:
    by_id = {t.task_id: t for t in graph}
    failed = {by_id[i]: exc for i, exc in failures_by_id.items() if i in by_id}
    executed: dict[luigi.Task, str] = {}
    reused_now: dict[luigi.Task, str] = {}
    for event in events:
        task = by_id.get(event.task_id)
        if task is None or event.kind in ("started", "present"):
            continue
        (executed if event.kind == "executed" else reused_now)[task] = event.run_id
    return BuildResult(graph, roots, executed, reused_now, failed, session)


def _fill_reused_runs(
    session: _session.Session,
    graph: list[luigi.Task],
    roots: list[luigi.Task],
    runs: dict[luigi.Task, str],
    executed: list[luigi.Task],
    reused: list[luigi.Task],
    failed: dict[luigi.Task, BaseException],
) -> None:
    """Run ids of tasks this build did not execute, following lineage from the top.

    A reused task's upstream runs are the ones its run consumed (lineage tags), which
    is the truthful answer even when duplicates of an identity exist.
    """
    pending = [t for t in graph if is_tracked(t) and t not in runs]
    if not pending:
        return
    store = session.store
    known: dict[str, RunRecord] = store.get_runs(list(runs.values()))
    # Tasks nothing downstream in this graph consumed (the roots) are looked up in one
    # batch; everything below them follows from lineage tags.
    session.completion.prefetch(t for t in roots if t in pending and not bound_run(t))
    for task in reversed(graph):  # downstream first: a run names the runs it consumed
        if not isinstance(task, MlflowTask) or task in failed:
            continue
        if task not in runs:
            # The run Luigi's complete() found during this build, else a lookup.
            found = bound_run(task) or session.completion.find_finished_run(task)
            if found is None:
                continue
            runs[task] = found.info.run_id
            known[found.info.run_id] = found
            reused.append(task)
        run = known.get(runs[task])
        if run is None:
            run = store.get_runs([runs[task]]).get(runs[task])
            if run is None:
                continue
            known[runs[task]] = run
        deps = task.requires_dict()
        consumed = schema.upstream_ids(run.data.tags)
        missing_ids = [
            consumed[name] for name, dep in deps.items() if dep not in runs and name in consumed
        ]
        known.update(store.get_runs(missing_ids))
        for name, dep in deps.items():
            tag = consumed.get(name)
            if dep not in runs and tag and tag in known:
                runs[dep] = tag
                # A run deleted since it was consumed is named (lineage), not reused.
                if known[tag].info.lifecycle_stage == ACTIVE:
                    reused.append(dep)
