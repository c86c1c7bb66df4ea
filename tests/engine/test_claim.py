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
