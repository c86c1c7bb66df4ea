"""Without the POSIX-only and Linux-only calls (as on Windows or macOS), the fallbacks in
`_core/platform.py` carry a build; Windows itself is refused at import in one line."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

import luigiflow as lf
from luigiflow import _settings
from luigiflow._core import platform, process, workspace_files
from luigiflow._errors import UnsupportedPlatformError
from luigiflow._store import liveness
from luigiflow._store.records import RUNNING, RunRecord
from tests.dags import Leaf

POSIX_ONLY = ("register_at_fork", "pread", "killpg")


@pytest.fixture
def posix_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The calls Windows lacks taken away, and the Linux-only paths off (sys.platform as
    on macOS): what remains is what runs where they do not exist."""
    for name in POSIX_ONLY:
        monkeypatch.delattr(os, name)
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` raises ImportError
    monkeypatch.setattr(platform, "_is_posix", lambda: False)  # no os.kill(pid, 0) probe
    monkeypatch.setattr(sys, "platform", "darwin")


def test_build_and_reuse_without_posix_calls(store, tmp_path, posix_removed):
    first = lf.build([Leaf(size=2, factor=3, label="p")])
    assert len(first.executed) == 3
    again = lf.build([Leaf(size=2, factor=3, label="p")])
    assert again.executed == [] and len(again.reused) == 3
    assert Leaf(size=2, factor=3, label="p").load_output() is not None
    # The store was opened under the fallback lock (a folder), not an fcntl lock file.
    assert not (tmp_path / "mlflow.db.lock").exists()
    assert not (tmp_path / "mlflow.db.lock.d").exists()


def test_exclusive_lock_fallback_excludes(tmp_path, posix_removed):
    lock = tmp_path / "x.lock"
    holding = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with platform.exclusive_lock(lock):
            order.append("first in")
            holding.set()
            release.wait(30)
            order.append("first out")

    def second() -> None:
        with platform.exclusive_lock(lock):
            order.append("second in")

    a = threading.Thread(target=first)
    a.start()
    assert holding.wait(30)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.3)
    assert b.is_alive(), "the second holder got in while the first held the lock"
    release.set()
    a.join(30)
    b.join(30)
    assert order == ["first in", "first out", "second in"]


def test_read_at_fallback_reads_without_moving_position(tmp_path, posix_removed):
    f = tmp_path / "f"
    f.write_bytes(b"0123456789")
    fd = os.open(f, os.O_RDONLY)
    try:
        assert platform.read_at(fd, 4, 3) == b"3456"
        assert platform.read_at(fd, 100, 0) == b"0123456789"
    finally:
        os.close(fd)


def test_stop_group_without_killpg_stops_the_child(posix_removed):
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    process.stop_group(proc)
    assert proc.wait(timeout=30) != 0


def test_liveness_without_a_pid_probe_leaves_it_to_the_heartbeat(posix_removed):
    # A pid that does not exist: POSIX knows at once; without a safe probe, "unknown"
    # never counts as gone (on Windows os.kill(pid, 0) would terminate the process).
    dead = subprocess.Popen(["true"])  # any child that exits: no Python start-up to pay
    dead.wait()
    token = f"{liveness.worker_token().partition('/')[0]}/{dead.pid}/x"
    assert platform.process_exists(dead.pid) is None
    assert liveness.worker_is_gone(_running_run(token)) is False


def test_liveness_with_posix_probe_knows_a_dead_worker_at_once():
    dead = subprocess.Popen(["true"])
    dead.wait()
    token = f"{liveness.worker_token().partition('/')[0]}/{dead.pid}/x"
    assert liveness.worker_is_gone(_running_run(token)) is True


def _running_run(worker: str) -> RunRecord:
    from luigiflow._store import schema
    from luigiflow._store.records import RunData, RunInfo

    info = RunInfo(run_id="r1", experiment_id="1", status=RUNNING, start_time=0, end_time=None)
    return RunRecord(info=info, data=RunData(tags={schema.WORKER_TAG: worker}))


def test_placing_copies_where_there_is_no_reflink(tmp_path, posix_removed):
    src = tmp_path / "a.txt"
    src.write_text("data")
    dest = tmp_path / "b.txt"
    workspace_files.copy_into(src, dest)
    src.write_text("changed")
    assert dest.read_text() == "data"


@pytest.mark.slow  # starts a Python process (see scripts/test --fast)
def test_windows_is_refused_at_import_in_one_line(monkeypatch):
    code = "import sys; sys.platform = 'win32'; import luigiflow"
    env = {k: v for k, v in os.environ.items() if k != _settings.UNSUPPORTED_PLATFORM}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("luigiflow._errors.UnsupportedPlatformError: luigiflow supports")
    assert "WSL2" in last and "docs/platforms.md" in last
    with pytest.raises(UnsupportedPlatformError):
        platform.check_supported("win32")
    monkeypatch.setenv(_settings.UNSUPPORTED_PLATFORM, "1")
    platform.check_supported("win32")  # the user's own risk, on the fallbacks
    platform.check_supported("darwin")
    platform.check_supported("linux")


@pytest.mark.slow
def test_watchdog_ends_an_orphaned_worker_where_there_is_no_pdeathsig(tmp_path):
    # macOS has no PR_SET_PDEATHSIG: a thread notices the parent is gone. A parent forks
    # a child that arms the watchdog; the parent is SIGKILLed; the child must go too.
    pidfile = tmp_path / "child.pid"
    script = f"""
import multiprocessing, os, sys, time
sys.platform = "darwin"
from luigiflow._core import platform

def child():
    parent = multiprocessing.parent_process()
    platform.die_with_parent(parent.pid, parent.is_alive)
    open({str(pidfile)!r}, "w").write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    multiprocessing.get_context("fork").Process(target=child).start()
    time.sleep(120)
"""
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait(30)
    deadline = time.monotonic() + 60
    while _alive(child):
        assert time.monotonic() < deadline, "the orphaned child outlived its parent"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    # A zombie (exited, not yet reaped by whoever adopted it) counts as gone.
    status = pathlib.Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False
