"""The lease's tie-break, step by step, on the in-memory store and a real SQLite store."""

from __future__ import annotations

import threading
import time

import pytest

from luigiflow._engine.claim import Claim, order
from luigiflow._store import schema
from luigiflow._store.records import FINISHED, KILLED, RUNNING
from tests.conftest import add_run
from tests.dags import Source

pytestmark = pytest.mark.parametrize("run_store", ["memory", "sqlite"], indirect=True)


def _beat(store, run_id: str) -> None:
    store.set_tag(run_id, schema.HEARTBEAT_TAG, f"{time.time():.3f}")


def test_of_two_runs_started_at_once_the_earlier_works_and_the_later_yields(run_store):
    task = Source(size=11)
    start = int(time.time() * 1000)
    # Same start time: the smaller run id decides, as every worker computes alike.
    a = add_run(run_store, task, status=None, start_time=start, worker="host-a/1/aaaa")
    b = add_run(run_store, task, status=None, start_time=start, worker="host-b/2/bbbb")
    first, second = sorted([a, b], key=order)
    for run in (first, second):
        _beat(run_store, run.info.run_id)
    exp_id = first.info.experiment_id
    claim = Claim(run_store, lambda run: True)

    outcome: dict[str, object] = {}

    def later_worker() -> None:  # sees the earlier run: yields, then waits for it
        outcome["later"] = claim.settle(exp_id, task.identity, second)

    thread = threading.Thread(target=later_worker)
    thread.start()
    # The earlier worker waits until the later one has yielded, then does the work.
    assert claim.settle(exp_id, task.identity, first).proceed
    yielded = run_store.get_run(second.info.run_id)
    assert yielded.info.status == KILLED
    assert first.info.run_id in yielded.data.tags[schema.ERROR_TAG]
    assert run_store.get_run(first.info.run_id).info.status == RUNNING
    run_store.terminate(first.info.run_id, FINISHED)
    thread.join(timeout=120)
    settled = outcome["later"]
    assert settled.finished is not None and settled.finished.info.run_id == first.info.run_id


def test_a_worker_without_a_run_waits_for_a_live_lease(run_store):
    task = Source(size=12)
    holder = add_run(run_store, task, status=None)
    _beat(run_store, holder.info.run_id)
    claim = Claim(run_store, lambda run: True)
    outcome: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: outcome.update(
            w=claim.settle(holder.info.experiment_id, task.identity, None)
        )
    )
    thread.start()
    run_store.terminate(holder.info.run_id, "FAILED")  # the holder failed: free again
    thread.join(timeout=120)
    settled = outcome["w"]
    assert settled.finished is None and not settled.proceed


def test_a_finished_run_found_after_creating_ours_is_reused(run_store):
    task = Source(size=13)
    done = add_run(run_store, task, status=FINISHED)
    mine = add_run(run_store, task, status=None, worker="me/1/cccc")
    settled = Claim(run_store, lambda run: True).settle(
        mine.info.experiment_id, task.identity, mine
    )
    assert settled.finished is not None and settled.finished.info.run_id == done.info.run_id
    assert run_store.get_run(mine.info.run_id).info.status == KILLED


def _counting_looks(run_store, monkeypatch) -> list[float]:
    """The monotonic times of the lease looks (one request each on a tracking server)."""
    looks: list[float] = []
    read = run_store.runs_with_identity

    def counted(*args, **kwargs):
        looks.append(time.monotonic())
        return read(*args, **kwargs)

    monkeypatch.setattr(run_store, "runs_with_identity", counted)
    return looks


def _wait_in_thread(claim: Claim, exp_id: str, identity: str, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=claim.settle, args=(exp_id, identity, None), kwargs=kwargs)
    thread.start()
    return thread


@pytest.mark.parametrize("age_s", [0, 20])
def test_a_wait_looks_less_often_the_longer_the_run_it_waits_for_has_gone_on(
    run_store, monkeypatch, age_s
):
    # Every client waiting for a task asks once a look: a run that has gone on for 20 s
    # is not asked about ten times a second (at most every 2 s); one just started is
    # looked at again soon, so a short task's result is reused without delay.
    task = Source(size=14 + age_s)
    start = int((time.time() - age_s) * 1000)
    holder = add_run(run_store, task, status=None, start_time=start)
    _beat(run_store, holder.info.run_id)
    looks = _counting_looks(run_store, monkeypatch)
    began = time.monotonic()
    thread = _wait_in_thread(
        Claim(run_store, lambda run: True), holder.info.experiment_id, task.identity, announce=False
    )
    time.sleep(1.5)
    within = len([t for t in looks if t - began < 1.5])
    run_store.terminate(holder.info.run_id, FINISHED)
    thread.join(timeout=120)
    assert not thread.is_alive()
    if age_s:
        assert within == 1, looks  # the first look, then one every 2 s at most
    else:
        assert within >= 3, looks  # 0.1 s, then growing by half


def test_a_wait_right_after_the_look_that_found_the_holder_does_not_look_again_at_once(
    run_store, monkeypatch
):
    task = Source(size=40)
    holder = add_run(run_store, task, status=None, start_time=int((time.time() - 4) * 1000))
    _beat(run_store, holder.info.run_id)
    claim = Claim(run_store, lambda run: True)
    exp_id = holder.info.experiment_id
    # A look (the re-check's, or the lease look after creating a run) saw the holder now.
    claim.sightings[(exp_id, task.identity)] = (time.monotonic(), holder)
    looks = _counting_looks(run_store, monkeypatch)
    began = time.monotonic()
    thread = _wait_in_thread(claim, exp_id, task.identity, announce=False, rested=True)
    time.sleep(1.0)
    assert looks == []  # the holder is 4 s old: its next look is due 2 s after the sighting
    run_store.terminate(holder.info.run_id, FINISHED)
    thread.join(timeout=120)
    assert not thread.is_alive() and len(looks) == 1
    assert looks[0] - began >= 1.9
