"""Which worker is running a run, and whether that worker is still alive.

A RUNNING run carries the worker that created it (`luigiflow.worker`) and a heartbeat
tag its worker refreshes every few seconds. A run whose heartbeat stopped belongs to
a worker that died; it never counts as complete and is marked KILLED when seen.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable

from luigiflow import _settings
from luigiflow._core import platform
from luigiflow._store import schema
from luigiflow._store.port import RunStore
from luigiflow._store.records import KILLED, RUNNING, RunRecord

_worker: tuple[int, str] | None = None


def worker_token() -> str:
    """`host@space/pid/random`: names this process (forked workers get their own)."""
    global _worker
    pid = os.getpid()
    if _worker is None or _worker[0] != pid:
        host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64]
        _worker = (pid, f"{host}@{_pid_space()}/{pid}/{uuid.uuid4().hex[:8]}")
    return _worker[1]


def _pid_space() -> str:
    """Which process-id space this process lives in: the boot and the pid namespace.

    Two laptops can share a host name and two containers a boot; only a worker of the
    same space may be judged dead from its pid (anyone else waits for its heartbeat).
    """
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip().replace("-", "")[:12]
        space = os.stat("/proc/self/ns/pid").st_ino
        return f"{boot}.{space}"
    except OSError:  # not Linux: the network card's address stands for the machine
        return f"{uuid.getnode():012x}"


def now_beat() -> str:
    return f"{time.time():.3f}"


# Runs this process is beating now: a RUNNING run of this very process (same worker
# token) that is not among them was left by an earlier build here (a failure or an
# outage that kept it from being marked): its worker is gone, whatever its heartbeat.
_beating: set[str] = set()


class Heartbeat:
    """Marks a run alive every few seconds while its task works, from a daemon thread."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        _beating.add(run_id)
        self.interval = _settings.heartbeat_interval()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.store.set_tag(self.run_id, schema.HEARTBEAT_TAG, now_beat())
            except Exception:  # a missed beat only makes the run look older
                continue

    def stop(self) -> None:
        _beating.discard(self.run_id)
        self.done.set()
        self.thread.join()


def worker_is_gone(run: RunRecord) -> bool:
    """The RUNNING run's worker was a process on this host that no longer exists."""
    token = run.data.tags.get(schema.WORKER_TAG, "")
    host, _, rest = token.partition("/")
    pid_text = rest.partition("/")[0]
    if run.info.status != RUNNING or host != worker_token().partition("/")[0]:
        return False
    if token == worker_token():
        return run.info.run_id not in _beating
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    # Unknown (None, on Windows) is not gone: the heartbeat's age decides.
    return platform.process_exists(int(pid_text)) is False


def is_abandoned(run: RunRecord, now: float | None = None) -> bool:
    """A RUNNING run whose worker is dead: it has not beaten for `stale_after()` seconds,
    or it was a process of this machine that no longer exists (known at once)."""
    if run.info.status != RUNNING:
        return False
    beat = run.data.tags.get(schema.HEARTBEAT_TAG)
    last = float(beat) if beat else run.info.start_time / 1000
    return (now or time.time()) - last > _settings.stale_after() or worker_is_gone(run)


def retire(store: RunStore, run: RunRecord) -> None:
    """Mark an abandoned RUNNING run KILLED, saying why; it never counted as complete."""
    beat = run.data.tags.get(schema.HEARTBEAT_TAG, "never")
    worker = run.data.tags.get(schema.WORKER_TAG, "")
    why = (
        f"its worker process {worker} is gone"
        if worker_is_gone(run)
        else f"no heartbeat from its worker since {beat}"
    )
    store.set_tag(
        run.info.run_id, schema.ERROR_TAG, f"abandoned: {why} (luigiflow marked it KILLED)"
    )
    store.terminate(run.info.run_id, KILLED)


def retire_abandoned(store: RunStore, runs: Iterable[RunRecord]) -> None:
    """Retire those of `runs` that are abandoned (others, FINISHED or alive, are kept)."""
    now = time.time()
    for run in runs:
        if is_abandoned(run, now):
            retire(store, run)
