"""Before a run: a run another worker finished meanwhile is found (contract)."""

from __future__ import annotations

import time

from luigiflow._store import liveness
from luigiflow._store.records import FINISHED, KILLED, RUNNING
from tests.conftest import add_run
from tests.dags import Fan


def test_first_check_is_exact_and_finds_another_workers_run(session):
    task = Fan(index=1)
    run = add_run(session.store, task)
    exp_id = session.store.experiment_id("Fan")
    found = session.recheck.existing_run(exp_id, task.identity, asked_ms=None)
    assert found is not None and found.info.run_id == run.info.run_id


def test_watch_sees_runs_other_workers_finish(session, monkeypatch):
    monkeypatch.setenv("LUIGIFLOW_RECHECK_S", "0")
    first, second = Fan(index=1), Fan(index=2)
    add_run(session.store, Fan(index=0))
    exp_id = session.store.experiment_id("Fan")
    asked = int(time.time() * 1000)
    assert session.recheck.existing_run(exp_id, first.identity, asked) is None  # starts a watch
    run = add_run(session.store, second)  # another worker finishes `second` meanwhile
    found = session.recheck.existing_run(exp_id, second.identity, asked)
    assert found is not None and found.info.run_id == run.info.run_id
    assert session.recheck.existing_run(exp_id, Fan(index=3).identity, asked) is None


def test_dead_running_runs_are_retired_live_ones_kept(session, monkeypatch):
    monkeypatch.setenv("LUIGIFLOW_STALE_AFTER_S", "60")
    task = Fan(index=4)
    dead = add_run(session.store, task, status=None, tags={"luigiflow.heartbeat": "1.0"})
    alive = add_run(
        session.store, Fan(index=5), status=None, tags={"luigiflow.heartbeat": f"{time.time()}"}
    )
    exp_id = session.store.experiment_id("Fan")
    assert session.recheck.existing_run(exp_id, task.identity, None) is None
    assert session.store.get_run(dead.info.run_id).info.status == KILLED
    assert session.store.get_run(alive.info.run_id).info.status == RUNNING
    add_run(session.store, task, status=FINISHED)
    assert session.recheck.existing_run(exp_id, task.identity, None) is not None


def test_a_watch_alone_looks_less_often_until_it_sees_another_worker(session, monkeypatch):
    monkeypatch.setenv("LUIGIFLOW_RECHECK_S", "1000")
    add_run(session.store, Fan(index=0), tags={"luigiflow.worker": liveness.worker_token()})
    exp_id = session.store.experiment_id("Fan")
    asked = int(time.time() * 1000)
    recheck = session.recheck
    assert recheck.existing_run(exp_id, Fan(index=1).identity, asked) is None  # the watch
    assert recheck.existing_run(exp_id, Fan(index=2).identity, asked) is None  # a first look
    watch = recheck._watches[exp_id]

    def looks_after(seconds: float) -> bool:
        watch.looked_at = time.monotonic() - seconds
        recheck.existing_run(exp_id, Fan(index=3).identity, asked)
        return watch.looked_at > time.monotonic() - seconds + 1  # it looked just now

    assert not looks_after(1500)  # no one else seen: two intervals now
    assert looks_after(2500)
    assert not looks_after(3500)  # four
    other = {"luigiflow.heartbeat": f"{time.time()}", "luigiflow.worker": "elsewhere/1/feedbeef"}
    add_run(session.store, Fan(index=6), status=None, tags=other)  # another worker runs one
    assert looks_after(4500)
    assert looks_after(1500)  # one interval again


def test_the_look_before_a_create_is_the_exact_check_just_made(session, monkeypatch):
    # The first task of an experiment in a process is checked exactly; the look right
    # before its create (other workers build beside this one) would ask the same again.
    task, other = Fan(index=6), Fan(index=7)
    add_run(session.store, Fan(index=0))
    exp_id = session.store.experiment_id("Fan")
    looks: list[str] = []
    read = session.store.runs_with_identity
    monkeypatch.setattr(
        session.store,
        "runs_with_identity",
        lambda e, identity, n: looks.append(identity) or read(e, identity, n),
    )
    assert session.recheck.existing_run(exp_id, task.identity, asked_ms=None) is None
    assert session.recheck.exact(exp_id, task.identity) is None
    assert looks == [task.identity]
    # Another identity, or one held by another worker's live run, is looked at again.
    assert session.recheck.exact(exp_id, other.identity) is None
    holder = add_run(session.store, task, status=None)
    session.store.set_tag(holder.info.run_id, "luigiflow.heartbeat", f"{time.time()}")
    monkeypatch.setattr("luigiflow._engine.recheck.FRESH_LOOK_S", 0.0)
    assert session.recheck.exact(exp_id, task.identity) is None
    assert session.recheck.held_elsewhere(exp_id, task.identity) == holder.info.run_id
    monkeypatch.setattr("luigiflow._engine.recheck.FRESH_LOOK_S", 60.0)
    assert session.recheck.exact(exp_id, task.identity) is None
    assert looks == [task.identity, other.identity, task.identity, task.identity]
