"""Every use of Luigi internals (private names), in one module.

Luigi offers no public way to key its instance cache, list its task registry or
unregister an event handler; an upgrade of Luigi is checked here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import luigi
import luigi.scheduler
import luigi.task_register

from luigiflow._core.identity import UnencodableValueError, canonical_json, encode_value

ABSTRACT = "_lf_abstract"  # set in the class's own namespace by TypedRegister


class TypedRegister(luigi.task_register.Register):
    """Luigi's instance cache, keyed by canonical values so 1, 1.0, "1" and True differ.

    Luigi keys its flyweight cache on raw values, where 1 == 1.0 == True would hand
    back one instance (and one identity) for three different tasks.

    It also takes the class keyword `abstract=True` (`class Base(lf.MlflowTask,
    abstract=True)`), kept on the class itself only: Luigi's metaclass takes no keywords.
    """

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kw: Any):  # type: ignore[no-untyped-def]
        namespace = {**namespace, ABSTRACT: bool(kw.pop("abstract", False))}
        return super().__new__(mcs, name, bases, namespace, **kw)

    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kw: Any):
        kw.pop("abstract", None)
        super().__init__(name, bases, namespace, **kw)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        cache = luigi.task_register.Register._Register__instance_cache  # type: ignore[attr-defined]
        create = super(luigi.task_register.Register, cls).__call__
        if cache is None:
            return create(*args, **kwargs)
        values = cls.get_param_values(cls.get_params(), args, kwargs)  # type: ignore[attr-defined]
        try:
            key = (cls, canonical_json([[n, encode_value(v)] for n, v in values]))
        except UnencodableValueError:
            return create(*args, **kwargs)
        if key not in cache:
            cache[key] = create(*args, **kwargs)
        return cache[key]


def registry() -> dict[str, type[luigi.Task]]:
    """Task family -> class, for every task class Luigi knows."""
    return dict(luigi.task_register.Register._get_reg())


def remove_event_handler(event: str, handler: Callable[..., Any]) -> None:
    """Unregister a handler added with `luigi.Task.event_handler(event)`."""
    callbacks = luigi.Task._event_callbacks.get(luigi.Task, {})
    callbacks.get(event, set()).discard(handler)


def replace_earlier_definitions(cls: type) -> None:
    """Make `cls` the only registered class of its module and qualified name.

    Running a notebook cell again (or reloading a module) defines the class anew; Luigi
    would keep both and call the name ambiguous. The newest definition wins.
    """
    reg = luigi.task_register.Register._reg
    reg[:] = [
        c
        for c in reg
        if c is cls
        or not (
            getattr(c, "__module__", None) == cls.__module__
            and getattr(c, "__qualname__", None) == cls.__qualname__
        )
    ]


def is_worker_process(process: Any) -> bool:
    """Whether a multiprocessing process is one of Luigi's task processes."""
    import luigi.worker

    return isinstance(process, luigi.worker.TaskProcess)


def in_worker_process() -> bool:
    """Whether this process is one of Luigi's forked task processes (`workers > 1`)."""
    import multiprocessing

    return is_worker_process(multiprocessing.current_process())


def param_default(param: luigi.Parameter) -> tuple[bool, Any]:
    """(True, default) when a Luigi parameter has a default, else (False, None)."""
    default = getattr(param, "_default", luigi.parameter._no_value)
    if default is luigi.parameter._no_value:
        return False, None
    return True, default


# A worker process that exited with code 0 and still has no result after this long never
# delivers one (its result is on the queue before its process exits).
SILENT_EXIT_GRACE_S = 10.0


def worker_factory(own_order: bool = False) -> Any:
    """Luigi's worker and scheduler factory for `luigi.build`, whose workers fail a task
    whose process exited with code 0 without delivering a result, and whose local
    scheduler breaks ties of priority its own way when `own_order` (see
    `_TieBreakingScheduler`).

    Luigi fails a task whose process died with a non-zero code, but one that exits with 0
    (`_exit(0)` in a native library) is never noticed: the build waited for its result
    forever. The failure goes through Luigi's PROCESS_FAILURE, as a non-zero exit does.
    """
    import time

    import luigi.interface
    import luigi.worker

    class Worker(luigi.worker.Worker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.lf_exited_at: dict[str, float | None] = {}  # None: reported

        def _purge_children(self) -> None:
            super()._purge_children()
            now = time.monotonic()
            for task_id, process in list(self._running_tasks.items()):
                if process.exitcode != 0 or process.is_alive():
                    continue  # running, run in-process (never started), or Luigi's case
                first = self.lf_exited_at.setdefault(task_id, now)
                if first is None or now - first < SILENT_EXIT_GRACE_S:
                    continue
                self.lf_exited_at[task_id] = None
                message = f"Task {task_id} died unexpectedly with exit code 0 before its result"
                process.task.trigger_event(luigi.Event.PROCESS_FAILURE, process.task, message)
                self._task_result_queue.put((task_id, luigi.worker.FAILED, message, [], []))

    class Factory(luigi.interface._WorkerSchedulerFactory):
        def create_local_scheduler(self) -> Any:
            return _TieBreakingScheduler(
                own_order, prune_on_get_work=True, record_task_history=False
            )

        def create_worker(
            self, scheduler: Any, worker_processes: int, assistant: bool = False
        ) -> Any:
            return Worker(
                scheduler=scheduler, worker_processes=worker_processes, assistant=assistant
            )

    return Factory()


# The family of the internal task a build yields while another worker holds a task
# (`_engine/held.py`): a wait, no work, so the local scheduler runs it last.
HELD_FAMILY = "_luigiflow.HeldElsewhere"


class _TieBreakingScheduler(luigi.scheduler.Scheduler):
    """Luigi's local scheduler, whose order among equally ranked tasks is this process's.

    Luigi ranks ready tasks by priority, then by the time each was added: every client
    that builds the same graph without luigid adds it in the same order and picks the
    same task first, so all but one wait on its lease while other tasks are ready. With
    `own_order` (a store that clients on several machines share: a tracking server or a
    database server), ties of priority are broken by a hash salted per scheduler, then by
    time: a user's priorities order tasks exactly as in Luigi (the tie-break never crosses
    them). On a local SQLite file the order stays Luigi's, the same in every build. The
    internal waits for tasks held elsewhere come after every task, whatever the priority
    Luigi passed down to them: waiting is no work, and another worker does the task.
    (At module level: a worker process started by forkserver or spawn gets it pickled.)
    """

    def __init__(self, own_order: bool, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lf_salt = os.urandom(8) if own_order else None

    def _rank(self, task: Any) -> tuple[Any, ...]:
        priority, age = super()._rank(task)
        work = task.family != HELD_FAMILY
        if self.lf_salt is None:
            return work, priority, age
        draw = hashlib.blake2b(str(task.id).encode(), key=self.lf_salt, digest_size=8)
        return work, priority, draw.digest(), age
