"""The end of a build under luigid: waiting for roots another client builds."""

from __future__ import annotations

import threading
import time

import pytest

from luigiflow._engine.protocol import bound_run
from luigiflow._engine.session import Session
from luigiflow._ops import elsewhere
from luigiflow._store import schema
from luigiflow._store.records import FINISHED
from tests.conftest import add_run
from tests.dags import Fan

pytestmark = pytest.mark.parametrize("run_store", ["memory", "sqlite"], indirect=True)


def test_a_root_built_meanwhile_is_taken_without_asking_luigi_again(run_store, monkeypatch):
    # Under luigid, Luigi's worker left while another client built the root: once that
    # client's run is FINISHED the build has its root, and starting Luigi again (its
    # completion questions, its scheduler round trip) would only ask what is known.
    monkeypatch.setattr(elsewhere, "IDLE_ROUND_S", 30.0)  # a wait that sleeps fails here
    root = Fan(index=20)
    done = add_run(run_store, root)
    waiting = elsewhere.Waiting(Session(run_store))
    began = time.monotonic()
    assert waiting.wait_for([root])
    assert time.monotonic() - began < 10
    assert bound_run(root).info.run_id == done.info.run_id


def test_the_wait_for_a_live_root_ends_with_its_finished_run(run_store):
    root = Fan(index=21)
    holder = add_run(run_store, root, status=None)
    run_store.set_tag(holder.info.run_id, schema.HEARTBEAT_TAG, f"{time.time():.3f}")
    waiting = elsewhere.Waiting(Session(run_store))
    finish = threading.Timer(0.5, run_store.terminate, (holder.info.run_id, FINISHED))
    finish.start()
    try:
        assert waiting.wait_for([root])
    finally:
        finish.join()
    assert bound_run(root).info.run_id == holder.info.run_id


def test_a_root_nobody_holds_is_left_to_luigi(run_store, monkeypatch):
    monkeypatch.setattr(elsewhere, "IDLE_ROUND_S", 0.1)
    root = Fan(index=22)
    add_run(run_store, root, status="FAILED")
    assert not elsewhere.Waiting(Session(run_store)).wait_for([root])
