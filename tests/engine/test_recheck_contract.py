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


def test_a_run_a_look_just_listed_is_reused_without_asking_again(session, monkeypatch):
    # Several clients share one graph: each reuses most tasks from the others. A run the
    # watch's look listed a moment ago is reused as listed; one listed longer ago than
    # a "complete" answer is kept is asked about again, and a deletion is seen.
    monkeypatch.setenv("LUIGIFLOW_RECHECK_S", "0")
    first, second = Fan(index=8), Fan(index=9)
    exp_id = session.store.experiment_id("Fan", create=True)
    asked = int(time.time() * 1000)
    assert session.recheck.existing_run(exp_id, first.identity, asked) is None  # the watch
    runs = {t: add_run(session.store, t) for t in (first, second)}  # another worker's
    exact = _exact_looks(session.store, monkeypatch)
    found = session.recheck.existing_run(exp_id, first.identity, asked)
    assert found is not None and found.info.run_id == runs[first].info.run_id
    assert exact == []
    session.store.delete_run(runs[second].info.run_id)  # the next look does not list it
    assert session.recheck.existing_run(exp_id, second.identity, asked) is None
    assert exact == [second.identity]
    third = Fan(index=10)
    add_run(session.store, third)
    monkeypatch.setenv("LUIGIFLOW_RECHECK_S", "3600")  # no new look: the last one ages
    assert session.recheck.existing_run(exp_id, third.identity, asked) is None
    watch = session.recheck._watches[exp_id]
    watch.looked_at = time.monotonic() - 3.0  # older than a "complete" answer is kept
    watch.finished.add(first.identity)
    found = session.recheck.existing_run(exp_id, first.identity, asked)
    assert found is not None and exact == [second.identity, first.identity]


def test_a_run_a_wait_found_is_asked_again_once_older_than_a_complete_answer(session, monkeypatch):
    # A task set aside for another worker's run is run again when Luigi gets to it: at
    # once it reuses the run its wait found; after other tasks ran (longer than a
    # "complete" answer is kept) it asks again, and the answer its downstream's check
    # gets dates from the read, not from the reuse.
    task = Fan(index=11)
    run = add_run(session.store, task)
    exp_id = run.info.experiment_id
    exact = _exact_looks(session.store, monkeypatch)
    session.recheck.wait_ended(exp_id, task.identity, run)
    assert session.recheck.existing_run(exp_id, task.identity, None).info.run_id == (
        run.info.run_id
    )
    assert exact == [] and session.recheck.read_at(run.info.run_id) is not None
    session.recheck.wait_ended(exp_id, task.identity, run)
    key = (exp_id, task.identity)
    session.recheck._found[key] = (run, time.monotonic() - 3.0)
    assert session.recheck.existing_run(exp_id, task.identity, None) is not None
    assert exact == [task.identity]
    # Reused from a read 3 s old: Luigi's check before a downstream task asks the store.
    session.completion.note_complete(task, run.info.run_id, run, time.monotonic() - 3.0)
    assert not session.completion.known_complete(task)
    session.completion.note_complete(task, run.info.run_id, run, time.monotonic())
    assert session.completion.known_complete(task)


def _exact_looks(store, monkeypatch) -> list[str]:
    """The identities the store is asked about one by one (an exact query each)."""
    looks: list[str] = []
    read = store.runs_with_identity
    monkeypatch.setattr(
        store,
        "runs_with_identity",
        lambda e, identity, n: looks.append(identity) or read(e, identity, n),
    )
    return looks
