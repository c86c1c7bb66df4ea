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
from typing import TYPE_CHECKING

from luigiflow import _tracking
from luigiflow._errors import LuigiflowError

if TYPE_CHECKING:
    from mlflow.entities import Run

HEARTBEAT_TAG = "luigiflow.heartbeat"
ABANDONED_TAG = "luigiflow.error"
WORKER_TAG = "luigiflow.worker"

_worker: tuple[int, str] | None = None


def worker_token() -> str:
    """`host/pid/random`: names this process (forked workers get their own)."""
    global _worker
    pid = os.getpid()
    if _worker is None or _worker[0] != pid:
        host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64]
        _worker = (pid, f"{host}/{pid}/{uuid.uuid4().hex[:8]}")
    return _worker[1]


def env_seconds(name: str, default: float) -> float:
    """A duration in seconds from environment variable `name`, or `default`."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise LuigiflowError(f"{name}={raw!r} is not a number of seconds; set e.g. {name}=1")
    return value


def heartbeat_interval() -> float:
    """Seconds between heartbeats of a running task (LUIGIFLOW_HEARTBEAT_S, default 30)."""
    return env_seconds("LUIGIFLOW_HEARTBEAT_S", 30.0)


def stale_after() -> float:
    """Seconds without heartbeat after which a RUNNING run is abandoned (default 10 beats)."""
    default = max(10 * heartbeat_interval(), 120.0)
    return env_seconds("LUIGIFLOW_STALE_AFTER_S", default)


class Heartbeat:
    """Marks a run alive every few seconds while its task works, from a daemon thread."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        client = _tracking.get_client()
        while not self.done.wait(heartbeat_interval()):
            try:
                client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
            except Exception:  # a missed beat only makes the run look older
                continue

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def is_abandoned(run: Run, now: float | None = None) -> bool:
    """A RUNNING run whose worker has not beaten for `stale_after()` seconds."""
    if run.info.status != "RUNNING":
        return False
    beat = run.data.tags.get(HEARTBEAT_TAG)
    last = float(beat) if beat else run.info.start_time / 1000
    return (now or time.time()) - last > stale_after()


def retire(run: Run) -> None:
    """Mark an abandoned RUNNING run KILLED, saying why; it never counted as complete."""
    client = _tracking.get_client()
    beat = run.data.tags.get(HEARTBEAT_TAG, "never")
    client.set_tag(
        run.info.run_id,
        ABANDONED_TAG,
        f"abandoned: no heartbeat from its worker since {beat} (luigiflow marked it KILLED)",
    )
    client.set_terminated(run.info.run_id, "KILLED")


def retire_abandoned(runs: Iterable[Run]) -> None:
    """Retire those of `runs` that are abandoned (others, FINISHED or alive, are kept)."""
    now = time.time()
    for run in runs:
        if is_abandoned(run, now):
            retire(run)
