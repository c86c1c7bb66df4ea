"""A lease (another worker's RUNNING run of the same identity) never holds a build forever
(issue 28 items 8 and 10).

A heartbeat stated in the future, from a forged run or a machine whose clock runs ahead,
held the lease for as long as the clock said; under a team key a forged unsigned run
did it too; a heartbeat tag that is not a number made the build and `gc` crash. A
waiting build now says which run and host it waits for.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator

import pytest

import luigiflow as lf
from luigiflow._engine import claim
from luigiflow._ops import gc
from luigiflow._store import current, schema, signatures
from tests.conftest import add_run

ELSEWHERE = "farhost@feedbeef0000.1/4242/abcd1234"  # a worker on another machine


class Held(lf.MlflowTask):
    artifacts = {"value": "value.json"}

    def run_task(self) -> None:
        self.save({"value": 7})


class BuildHung(Exception):
    pass


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """A build that would wait forever fails the test instead of hanging it."""

    def give_up(_signum: int, _frame: object) -> None:
        raise BuildHung(f"the build still waited after {seconds} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _held_by(heartbeat: str, start_time: int | None = None) -> str:
    run = add_run(
        current.get_store(),
        Held(),
        status=None,
        start_time=start_time,
        worker=ELSEWHERE,
        tags={schema.HEARTBEAT_TAG: heartbeat},
    )
    return run.info.run_id


def test_a_heartbeat_in_the_future_holds_the_lease_at_most_stale_after(
    store: str, client, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LUIGIFLOW_STALE_AFTER_S", "2")
    forged = _held_by(f"{time.time() + 3600:.3f}")  # a clock an hour ahead, then silence
    with bounded(90):
        result = lf.build([Held()])
    assert result.executed == [Held()]
    assert client.get_run(forged).info.status == "KILLED"
    waiting = [line for line in capfd.readouterr().err.splitlines() if "waiting for run" in line]
    assert len(waiting) == 1, waiting  # said once, naming the run and its host
    assert forged in waiting[0] and "farhost" in waiting[0]


def test_a_live_worker_with_a_clock_ahead_keeps_its_lease(store: str) -> None:
    """Its beats change: each counts from when this process first saw it."""
    store_ = current.get_store()
    run_id = _held_by(f"{time.time() + 3600:.3f}")
    for ahead in (3601, 3602):
        store_.set_tag(run_id, schema.HEARTBEAT_TAG, f"{time.time() + ahead:.3f}")
        assert claim.alive(store_.get_run(run_id))


def test_an_unsigned_lease_is_refused_under_a_team_key(
    store: str, client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUIGIFLOW_SIGNING_KEY", "team-key-for-tests-0123456789")
    forged = _held_by(f"{time.time():.3f}")  # fresh heartbeat, no lease signature
    with bounded(90):
        result = lf.build([Held()])
    assert result.executed == [Held()]
    assert client.get_run(forged).info.status == "RUNNING"  # ignored, not ours to end


def test_a_signed_lease_is_honoured_under_a_team_key(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUIGIFLOW_SIGNING_KEY", "team-key-for-tests-0123456789")
    store_ = current.get_store()
    run = store_.get_run(_held_by(f"{time.time():.3f}"))
    assert not claim.alive(run)
    store_.log_batch(
        run.info.run_id,
        tags=signatures.sign_lease(run.info.run_id, run.info.experiment_id, run.data.tags),
    )
    assert claim.alive(store_.get_run(run.info.run_id))


def test_a_malformed_heartbeat_is_skipped_with_a_warning_by_build_and_gc(
    store: str, client
) -> None:
    day_ago = int((time.time() - 86400) * 1000)
    odd = _held_by("soon", start_time=day_ago)
    with pytest.warns(UserWarning, match="heartbeat tag that is not a time"):
        listed = gc.find_garbage()
    assert [g.run_id for g in listed] == [odd]
    with bounded(90):
        result = lf.build([Held()])
    assert result.executed == [Held()]
    assert client.get_run(odd).info.status == "KILLED"  # judged by its start time
