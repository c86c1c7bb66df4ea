"""Every operating-system call that exists only on POSIX (or only on Linux), each with the
fallback used where it is missing. Nothing else in luigiflow calls them directly.

Supported: Linux (every protection) and macOS (a parent-death watchdog thread instead of
the kernel's `PR_SET_PDEATHSIG`, plain copies instead of reflinks). Windows is refused at
import (`check_supported`): Luigi's workers, SQLite's locking and signals there are
untested; `LUIGIFLOW_UNSUPPORTED_PLATFORM=1` lets a user try it on the fallbacks below.
See docs/platforms.md.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from luigiflow import _settings
from luigiflow._errors import UnsupportedPlatformError

SUPPORTED = ("linux", "darwin")

# The strongest "stop now" signal: SIGKILL where it exists; on Windows `os.kill` with any
# other signal number calls TerminateProcess, which cannot be caught either.
KILL_SIGNAL: int = getattr(signal, "SIGKILL", signal.SIGTERM)


def _module(name: str) -> Any:
    # Looked up on each call, so that a test can take a module away (sys.modules[name] =
    # None) and see the fallback run.
    try:
        return __import__(name)
    except ImportError:
        return None


def _is_posix() -> bool:
    return os.name == "posix"


def check_supported(platform: str | None = None) -> None:
    """Refuse, in one line, an operating system luigiflow is not tested on."""
    platform = platform or sys.platform
    if platform.startswith(SUPPORTED) or _settings.unsupported_platform_allowed():
        return
    raise UnsupportedPlatformError(
        f"luigiflow supports Linux and macOS, not {platform}: use WSL2 on Windows (or set "
        f"{_settings.UNSUPPORTED_PLATFORM}=1 to try it unsupported); see docs/platforms.md"
    )


def at_fork_in_child(fn: Callable[[], None]) -> None:
    """Call `fn` in every child forked from now on; where there is no fork there is
    nothing to undo (a spawned child starts fresh)."""
    register = getattr(os, "register_at_fork", None)
    if register is not None:
        register(after_in_child=fn)


_seek_lock = threading.Lock()


def read_at(fd: int, size: int, offset: int) -> bytes:
    """`size` bytes at `offset` of an open file, without moving a shared file position
    under another thread (pread; elsewhere a seek and a read under one lock)."""
    pread = getattr(os, "pread", None)
    if pread is not None:
        return bytes(pread(fd, size, offset))
    with _seek_lock:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, size)


STALE_LOCK_S = 600  # a lock folder this old was left by a crashed process


@contextlib.contextmanager
def exclusive_lock(path: pathlib.Path) -> Iterator[None]:
    """Hold an exclusive, blocking lock on the file `path` (created if missing; nothing is
    locked where it cannot be created: a read-only place has no writer to wait for).

    fcntl's `flock` (released by the kernel when the holder dies); Windows' `msvcrt`
    byte lock; elsewhere an atomically created `<path>.d` folder.
    """
    fcntl, msvcrt = _module("fcntl"), _module("msvcrt")
    if fcntl is None and msvcrt is None:
        with _folder_lock(path.with_name(path.name + ".d")):
            yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        yield
        return
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            while True:  # LK_LOCK gives up after 10 tries; wait as flock does
                try:
                    msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    continue
        yield
    finally:
        os.close(fd)  # closing releases the lock


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False when another open
    file holds it. The kernel releases it when its holder dies, even by SIGKILL, so an
    unlocked lock file was left by a dead process. Without `flock` nothing is known to
    hold it: True."""
    fcntl = _module("fcntl")
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _folder_lock(folder: pathlib.Path) -> Iterator[None]:
    # mkdir is atomic on every filesystem; a folder left by a crashed holder is taken
    # over once it is older than STALE_LOCK_S.
    folder.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            folder.mkdir()
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - folder.stat().st_mtime > STALE_LOCK_S:
                    folder.rmdir()
                    continue
            time.sleep(0.05)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            folder.rmdir()


def signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group led by `pid` (a child started with
    `start_new_session=True`); without process groups, to the process itself. Raises
    ProcessLookupError when it is gone."""
    killpg = getattr(os, "killpg", None)
    if killpg is not None:
        killpg(pid, sig)
    else:
        os.kill(pid, sig)


def process_exists(pid: int) -> bool | None:
    """Whether a process with this id exists on this machine; None when it cannot be
    told (on Windows `os.kill(pid, 0)` would terminate the process, not probe it)."""
    if not _is_posix():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_PARENT_S = 0.2


def die_with_parent(parent_pid: int, parent_alive: Callable[[], bool]) -> None:
    """End this process (as SIGKILL would) when the process `parent_pid` ends, even by
    SIGKILL or the out-of-memory killer. Linux: the kernel does it (prctl); elsewhere a
    daemon thread checks the parent every WATCH_PARENT_S seconds."""
    if sys.platform.startswith("linux") and _prctl_pdeathsig():
        if os.getppid() != parent_pid:  # the parent died before the request took effect
            os._exit(128 + KILL_SIGNAL)
        return

    def watch() -> None:
        # A POSIX orphan is re-parented (getppid changes); a Windows parent is asked.
        while os.getppid() == parent_pid and parent_alive():
            time.sleep(WATCH_PARENT_S)
        os._exit(128 + KILL_SIGNAL)

    threading.Thread(target=watch, name="luigiflow-parent-watch", daemon=True).start()


def _prctl_pdeathsig() -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, KILL_SIGNAL, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


# Linux's FICLONE ioctl: _IOW(0x94, 9, int). Filesystems without reflink refuse it.
_FICLONE = 0x40049409
_NO_CLONE = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM}


def clone_file(source: pathlib.Path, dest: pathlib.Path) -> bool:
    """Make `dest` a copy-on-write clone of `source` (Linux FICLONE: Btrfs, XFS, bcachefs);
    False where the system or filesystem cannot, and the caller copies. macOS's
    clonefile(2) is not used: APFS files are copied."""
    fcntl = _module("fcntl")
    if not sys.platform.startswith("linux") or fcntl is None:
        return False
    with open(source, "rb") as src, open(dest, "wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
        except OSError as exc:
            if exc.errno in _NO_CLONE:
                return False
            raise
    return True
