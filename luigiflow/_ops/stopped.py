"""A build that stops early is never taken as done, and its runs never stay RUNNING.

Two ways a build stops early, both handled by the process that survives:

- a worker process dies without a word (SIGKILL, the OOM killer): Luigi's parent sees
  it exit; the task fails the build with `WorkerDiedError`, and the parent marks the
  task's run KILLED at once instead of leaving it for the stale timeout;
- the user interrupts it (Ctrl-C, SIGTERM): workers mark their own runs KILLED; the
  parent waits for them, marks whatever they left RUNNING, removes their upload
  staging folders and names every run it stopped.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import sys
import time

import luigi

from luigiflow._core import platform
from luigiflow._engine import events as _events
from luigiflow._engine import interrupts, luigi_compat
from luigiflow._engine import session as _session
from luigiflow._errors import WorkerDiedError
from luigiflow._store import schema
from luigiflow._store.artifacts import remove_staging
from luigiflow._store.port import RunStore
from luigiflow._store.records import KILLED, RUNNING

# How long the parent gives its workers to mark their own runs after an interrupt.
WORKER_GRACE_S = 60.0


def _started_runs(folder: str, task_id: str | None = None) -> list[tuple[str, str]]:
    """(task id, run id) of every run the build's workers created (of one task if given)."""
    try:
        found, _failures = _events.collect(folder)
    except OSError:
        return []
    return [
        (e.task_id, e.run_id)
        for e in found
        if e.kind == "started" and (task_id is None or e.task_id == task_id)
    ]


def _mark_running_killed(store: RunStore, run_ids: list[str], reason: str) -> list[str]:
    """Mark those of `run_ids` still RUNNING as KILLED, saying why; the ids marked."""
    marked = []
    for run_id, run in store.get_runs(run_ids).items():
        if run.info.status == RUNNING:
            store.set_tag(run_id, schema.ERROR_TAG, reason)
            store.terminate(run_id, KILLED)
            marked.append(run_id)
    return marked


def describe_exit(message: str) -> str:
    """Luigi's "died unexpectedly with exit code -9" in words: "killed by SIGKILL"."""
    found = re.search(r"exit code (-?\d+)", message)
    if found is None:
        return "it exited unexpectedly"
    code = int(found.group(1))
    if code == 0:
        return "it exited with code 0 before reporting its result (a native library's _exit?)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the out-of-memory killer sends it too)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


def on_worker_died(task: luigi.Task, message: str) -> None:
    """Luigi's PROCESS_FAILURE, in the parent: fail the task and mark its run KILLED now."""
    session = _session.of(task)
    how = describe_exit(message)
    run_ids = []
    if session.sink is not None:
        run_ids = [run_id for _, run_id in _started_runs(session.sink.folder, task.task_id)]
    reason = f"its worker process died ({how}); luigiflow marked the run KILLED"
    try:
        marked = _mark_running_killed(session.store, run_ids, reason)
    except Exception:  # the store may be unreachable: the stale timeout still applies
        marked = []
    remove_staging(run_ids)
    runs = f"; run {', '.join(marked)} marked KILLED" if marked else ""
    hint = (
        "a task must return from run_task() or raise"
        if "exit code 0" in message
        else "if it ran out of memory, lower --workers or give it more memory"
    )
    session.record_failure(
        task.task_id,
        WorkerDiedError(
            f"{task!r}: its worker process died ({how}) while running the task{runs}; {hint}"
        ),
    )


def after_interrupt(
    session: _session.Session, labels: dict[str, str], signum: int
) -> dict[str, str]:
    """Once Luigi unwound from an interrupt: every run still RUNNING is marked KILLED.

    Returns run id -> task label of every run the interrupt stopped.
    """
    _wait_for_workers()
    if session.sink is None:
        return {}
    started = _started_runs(session.sink.folder)
    run_ids = [run_id for _, run_id in started]
    label_of = {run_id: labels.get(task_id, task_id) for task_id, run_id in started}
    reason = f"{schema.INTERRUPTED} ({signal.Signals(signum).name}): the build was stopped"
    if "mlflow" in sys.modules:  # else no run was ever made active in this process
        from luigiflow._store import mlflow_compat

        # A run the interrupt left active would be ended FINISHED by MLflow's exit hook.
        mlflow_compat.end_unended_killed()
    try:
        _mark_running_killed(session.store, run_ids, reason)
        runs = session.store.get_runs(run_ids)
    except Exception:  # say what we can; the stale timeout covers the rest
        runs = {}
    remove_staging(run_ids)
    return {
        run_id: label_of[run_id]
        for run_id, run in runs.items()
        if run.info.status == KILLED
        and run.data.tags.get(schema.ERROR_TAG, "").startswith(schema.INTERRUPTED)
    }


def _luigi_workers() -> list[multiprocessing.process.BaseProcess]:
    """Luigi's task processes that are still running children of this process.

    Only Luigi's: other children of the user's program are theirs. Asked of the system,
    not of `multiprocessing.active_children()`, which keeps listing a process Luigi
    already reaped (through psutil) as alive.
    """
    return [
        p
        for p in multiprocessing.active_children()
        if luigi_compat.is_worker_process(p)
        and p.pid is not None
        and interrupts.is_running_child(p.pid)
    ]


def _wait_for_workers() -> None:
    """Give Luigi's worker processes (sent SIGTERM by Luigi) time to mark their runs."""
    deadline = time.monotonic() + WORKER_GRACE_S
    while _luigi_workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    for child in _luigi_workers():  # still there: they had their chance
        # Still an unreaped child of ours, so its pid cannot belong to anyone else.
        if child.pid is not None and interrupts.is_running_child(child.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, platform.KILL_SIGNAL)
        child.join(5)
