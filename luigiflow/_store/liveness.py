"""Which worker is running a run, and whether that worker is still alive.

A RUNNING run carries the worker that created it (`luigiflow.worker`) and a heartbeat
tag its worker refreshes every few seconds. A run whose heartbeat stopped belongs to
a worker that died; it never counts as complete and is marked KILLED when seen.

Heartbeats are written with their worker's clock. One that lies in the future (a
forged run, or a machine whose clock runs ahead) proves nothing about when it was
written: it counts as written when this process first saw that value, so a worker
whose clock runs ahead keeps its lease by beating, and a silent one loses it
`stale_after()` seconds after it was first seen here. A heartbeat that is not a
number (written by another tool) is skipped with a warning: the run is judged by its
start time, as one that never beat.
"""

from __future__ import annotations

import math
import os
import re
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Iterable

from luigiflow import _settings
from luigiflow._core import platform
from luigiflow._errors import RunStoppedError
from luigiflow._store import schema
from luigiflow._store.port import RunStore
from luigiflow._store.records import FAILED, KILLED, RUNNING, RunRecord

_worker: tuple[int, str] | None = None
# Clocks of workers on different machines disagree a little: a heartbeat up to this far
# ahead of ours is taken at its word.
AHEAD_S = 60.0
# run id -> (heartbeat text lying in the future, monotonic time this process first saw it)
_future_beats: dict[str, tuple[str, float]] = {}
# Runs whose malformed heartbeat was already warned about (once per run and process).
_warned: set[str] = set()


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


def _stated_beat(run: RunRecord) -> float:
    """The run's heartbeat as its worker wrote it (epoch s), else its start time."""
    started = (run.info.start_time or 0) / 1000
    text = run.data.tags.get(schema.HEARTBEAT_TAG)
    if not text:
        return started
    try:
        beat = float(text)
    except ValueError:
        beat = math.nan
    if math.isfinite(beat):
        return beat
    if run.info.run_id not in _warned:
        _warned.add(run.info.run_id)
        warnings.warn(
            f"run {run.info.run_id} has a heartbeat tag that is not a time "
            f"({schema.HEARTBEAT_TAG}={text[:40]!r}); luigiflow skips it and judges the run "
            "by its start time",
            stacklevel=3,
        )
    return started


def last_beat(run: RunRecord, now: float | None = None) -> float:
    """When the run's worker last beat, as far as this process can tell (epoch s).

    A beat stated in the future counts as made when this process first saw it (see the
    module's docstring): a future timestamp never extends a lease on its own.
    """
    now = now or time.time()
    beat = _stated_beat(run)
    if beat <= now + AHEAD_S:
        _future_beats.pop(run.info.run_id, None)
        return beat
    text = run.data.tags.get(schema.HEARTBEAT_TAG, "")
    seen = _future_beats.get(run.info.run_id)
    if seen is None or seen[0] != text:  # a new beat: its worker is still writing
        seen = (text, time.monotonic())
        _future_beats[run.info.run_id] = seen
    return now - (time.monotonic() - seen[1])


def is_abandoned(run: RunRecord, now: float | None = None) -> bool:
    """A RUNNING run whose worker is dead: it has not beaten for `stale_after()` seconds,
    or it was a process of this machine that no longer exists (known at once)."""
    if run.info.status != RUNNING:
        return False
    now = now or time.time()
    return now - last_beat(run, now) > _settings.stale_after() or worker_is_gone(run)


def retire_reason(run: RunRecord) -> str:
    """Why an abandoned run is marked KILLED (its `luigiflow.error` tag)."""
    beat = run.data.tags.get(schema.HEARTBEAT_TAG, "never")
    worker = run.data.tags.get(schema.WORKER_TAG, "")
    why = (
        f"its worker process {worker} is gone"
        if worker_is_gone(run)
        else f"no heartbeat from its worker since {beat[:40]}"
    )
    return f"abandoned: {why} (luigiflow marked it KILLED)"


def retire(store: RunStore, run: RunRecord) -> None:
    """Mark an abandoned RUNNING run KILLED, saying why; it never counted as complete."""
    store.set_tag(run.info.run_id, schema.ERROR_TAG, retire_reason(run))
    store.terminate(run.info.run_id, KILLED)


def retire_abandoned(store: RunStore, runs: Iterable[RunRecord]) -> None:
    """Retire those of `runs` that are abandoned (others, FINISHED or alive, are kept)."""
    now = time.time()
    for run in runs:
        if is_abandoned(run, now):
            retire(store, run)


# Statuses a run's worker must never turn FINISHED: another worker (or the build that
# saw it die) ended the run. FINISHED is not among them: user code may end its own run.
ENDED_BY_OTHERS = (KILLED, FAILED)


def stopped_error(run_id: str, status: str, reason: str | None) -> RunStoppedError:
    """A run that is no longer RUNNING when its worker records the result (see the
    compare-and-set in `finish_run`): that result is never recorded."""
    why = f" ({reason[:200]})" if reason else ""
    return RunStoppedError(
        f"run {run_id} was marked {status} by another worker before its result was "
        f"recorded{why}; the result is not recorded: build again to reuse or redo it"
    )
