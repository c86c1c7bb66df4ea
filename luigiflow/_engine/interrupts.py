"""Ctrl-C and SIGTERM during a build: stop, say which runs were stopped, leave nothing RUNNING.

Python turns Ctrl-C (SIGINT) into KeyboardInterrupt, but SIGTERM (`kill PID`, a job
scheduler stopping a job) ends the process at once: no `finally`, runs left RUNNING
for the stale timeout, temporary folders left behind. While a build runs, and while a
task runs in a Luigi worker process, SIGTERM raises `BuildInterrupted` instead, so the
same clean-up path serves both signals.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any, NoReturn

from luigiflow._core import platform
from luigiflow._errors import BuildInterrupted, TaskExitedError


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise BuildInterrupted(signum)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within: SIGTERM raises BuildInterrupted in the main thread (Ctrl-C already raises)."""
    if not _main_thread():  # signal handlers can only be set from the main thread
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def task_body(in_worker_process: bool) -> Iterator[None]:
    """Within: a task's body as Luigi runs it (its execution, or a wait for another
    worker's run). SIGTERM raises; in a Luigi worker process an interrupt ends the process
    with the signal's exit code, without the traceback multiprocessing prints for an
    interrupt in a child (the body has marked its run KILLED on the way out)."""
    try:
        with sigterm_raises():
            yield
    except KeyboardInterrupt as exc:
        if in_worker_process:
            import os

            os._exit(128 + signum_of(exc))
        raise


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Within: SIGINT and SIGTERM wait, so marking runs KILLED is not itself cut short.

    A Ctrl-C reaches every process of the build at once, and Luigi's parent then sends
    SIGTERM to its workers; a second signal mid-clean-up would leave the run RUNNING.
    """
    if not _main_thread():
        yield
        return
    pending: list[int] = []

    def remember(signum: int, _frame: Any) -> None:
        pending.append(signum)

    previous = {s: signal.signal(s, remember) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def signum_of(exc: BaseException) -> int:
    """The signal behind an interrupt (Ctrl-C's KeyboardInterrupt is SIGINT)."""
    return int(getattr(exc, "signum", signal.SIGINT))


def die_with_parent() -> None:
    """End this Luigi worker process (as SIGKILL would) when the build's process ends,
    even by SIGKILL or the OOM killer.

    Orphaned, it would go on writing into the embedded store while the next process to
    open it resets the WAL under it (a forked child's SQLite locks are its parent's):
    commits it was told succeeded are lost, or the file is damaged. Its run stays
    RUNNING and is retired KILLED like any dead worker's. Linux: the kernel's
    PR_SET_PDEATHSIG; macOS: a watchdog thread (`platform.die_with_parent`).
    """
    import multiprocessing
    import os

    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return
    if not parent.is_alive():
        os._exit(128 + platform.KILL_SIGNAL)
    if os.getppid() != parent.pid:
        return  # started by a forkserver: it goes when the build does; locks are its own
    platform.die_with_parent(parent.pid, parent.is_alive)


def is_running_child(pid: int) -> bool:
    """`pid` is a child of this process that has not ended (nor been reaped).

    Only then may it be signalled: a child reaped elsewhere (Luigi's TaskProcess waits for
    its process through psutil, so multiprocessing never learns it ended and lists it as
    alive forever) gave its pid back to the system, which may have handed it to an
    unrelated process. The look leaves an ended child for its owner to reap (WNOWAIT).
    """
    import os

    try:
        ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # not (or no longer) a child of ours
        return False
    return ended is None


@contextlib.contextmanager
def exit_raises(task_label: str) -> Iterator[None]:
    """Within: `os._exit()` called by this process (task code, or a library it calls)
    raises TaskExitedError instead of ending the process.

    Ended there, a build with one worker (the task runs in the build's own process)
    exited 0 with nothing printed and nothing recorded. A process the task forks is not
    affected (it exits as it asks); `_exit` called from native code cannot be caught
    here: with several workers the build fails that task (see luigi_compat).
    """
    import os

    real_exit = os._exit
    pid = os.getpid()

    def refuse(status: int) -> NoReturn:
        if os.getpid() != pid:  # a child the task forked: let it go
            real_exit(status)
        raise TaskExitedError(
            f"{task_label} called os._exit({status}) while running: the process would have "
            "ended without recording the run; return from run_task(), or raise to fail it"
        )

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real_exit
