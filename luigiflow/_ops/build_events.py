"""A build's events on their way out: Luigi's failure and present events written to
the build's event folder, and that folder watched for listeners (`on_event`, progress).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import luigi

from luigiflow._engine import events as _events
from luigiflow._engine import luigi_compat
from luigiflow._engine import session as _session
from luigiflow._engine.protocol import bound_run, is_tracked
from luigiflow._ops import stopped


class Watcher:
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


def fan_out(
    listeners: list[Callable[[_events.TaskEvent], None]],
) -> Callable[[_events.TaskEvent], None]:
    def send(event: _events.TaskEvent) -> None:
        for listener in listeners:
            listener(event)

    return send


def install_event_handlers() -> list[tuple[str, Any]]:
    # Luigi fires these in whichever process ran the task (a forked child when
    # workers > 1); the handler writes to the build's event folder, which all share.
    def on_failure(task: luigi.Task, exc: BaseException) -> None:
        _session.of(task).record_failure(task.task_id, exc)

    def on_broken(task: luigi.Task, exc: BaseException) -> None:
        _session.of(task).record_failure(task.task_id, exc)

    def on_present(task: luigi.Task) -> None:
        if task.get_task_family() == luigi_compat.HELD_FAMILY:
            return  # a wait of this build's own (see _engine/held.py), no task of its graph
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


def remove_failure_handlers(pairs: list[tuple[str, Any]]) -> None:
    for event, handler in pairs:
        luigi_compat.remove_event_handler(event, handler)
