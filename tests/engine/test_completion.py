"""Batched completion agrees with a direct per-task query on mixed stores (contract)."""

from __future__ import annotations

import time

import pytest

import luigiflow as lf
from luigiflow._engine import completion
from luigiflow._engine.completion import Completion
from tests.conftest import add_run
from tests.dags import Fan


def _direct(store, task):
    exp_id = store.experiment_id(task.get_experiment_name())
    if exp_id is None:
        return None
    run = store.find_finished(exp_id, task.identity)
    return run.info.run_id if run else None


@pytest.mark.parametrize("threshold", [0, 1000])  # force the scan path, then the per-task path
def test_batched_lookup_matches_direct_query(run_store, monkeypatch, threshold):
    monkeypatch.setattr(completion, "SCAN_THRESHOLD", threshold)
    tasks = [Fan(index=i) for i in range(12)]
    now = int(time.time() * 1000)
    runs = {t: add_run(run_store, t, start_time=now + i) for i, t in enumerate(tasks[:8])}
    # 0: deleted; 9: only a FAILED run; 10: only a RUNNING run; 1: also a newer KILLED run
    run_store.delete_run(runs[tasks[0]].info.run_id)
    add_run(run_store, tasks[9], "FAILED")
    add_run(run_store, tasks[10], None)
    add_run(run_store, tasks[1], "KILLED", start_time=now + 100)
    # a duplicate FINISHED run of tasks[2]: the newer must win everywhere
    dup = add_run(run_store, tasks[2], start_time=now + 5_000)
    # a deleted duplicate that is even newer must not win
    add_run(run_store, tasks[3], start_time=now + 9_000, deleted=True)

    expected = {t: _direct(run_store, t) for t in tasks}
    answers = Completion(run_store)
    answers.prefetch(tasks)
    batched = {t: (r.info.run_id if (r := answers.find_finished_run(t)) else None) for t in tasks}
    assert batched == expected
    assert expected[tasks[0]] is None and expected[tasks[9]] is None
    assert expected[tasks[10]] is None and expected[tasks[11]] is None
    assert expected[tasks[2]] == dup.info.run_id
    assert expected[tasks[3]] == runs[tasks[3]].info.run_id
    assert expected[tasks[1]] == runs[tasks[1]].info.run_id


def test_negative_answer_is_single_use(run_store):
    task = Fan(index=0)
    add_run(run_store, Fan(index=1))  # the experiment exists; task 0 has no run
    answers = Completion(run_store)
    answers.prefetch([task])
    add_run(run_store, task)  # another worker finishes it
    assert answers.find_finished_run(task) is None  # the prefetched answer, consumed
    assert answers.find_finished_run(task) is not None  # asked again: the store sees it


def test_positive_answer_expires(run_store, monkeypatch):
    monkeypatch.setattr(completion, "RECENT_S", 0.2)
    task = Fan(index=0)
    run = add_run(run_store, task)
    answers = Completion(run_store)
    answers.prefetch([task])
    assert answers.find_finished_run(task) is not None
    run_store.delete_run(run.info.run_id)
    assert answers.find_finished_run(task) is not None  # a fresh positive answer is reused
    time.sleep(0.3)
    assert answers.find_finished_run(task) is None  # asked again: the store, not a stale answer


def test_lookup_creates_no_experiment(run_store):
    answers = Completion(run_store)
    answers.prefetch([Fan(index=98)])
    assert answers.find_finished_run(Fan(index=99)) is None
    assert run_store.experiment_id("Fan") is None


def test_run_finished_here_is_fetched_by_id_and_its_deletion_seen(run_store):
    tasks = [Fan(index=i) for i in range(5)]
    runs = {t: add_run(run_store, t) for t in tasks}
    answers = Completion(run_store)
    for task in tasks:  # as if this process had just finished them
        answers.note_complete(task, runs[task].info.run_id)
    run_store.delete_run(runs[tasks[0]].info.run_id)
    answers.prefetch(tasks)
    assert answers.find_finished_run(tasks[0]) is None
    for task in tasks[1:]:
        assert answers.find_finished_run(task).info.run_id == runs[task].info.run_id


def test_a_run_just_reused_answers_the_check_before_its_downstream_runs(run_store, monkeypatch):
    # Luigi asks whether a task's dependencies are complete right before running it; a
    # run this process has just reused (read a moment ago) answers without a lookup,
    # as long as a "complete" answer is kept.
    monkeypatch.setattr(completion, "RECENT_S", 0.5)
    task = Fan(index=0)
    run = add_run(run_store, task)  # another worker's, read by the wait or the re-check
    answers = Completion(run_store)
    reads = []
    find = run_store.find_finished
    monkeypatch.setattr(
        run_store, "find_finished", lambda *a, **k: reads.append(a) or find(*a, **k)
    )
    answers.note_complete(task, run.info.run_id, run)
    answers.prefetch([task])
    assert answers.find_finished_run(task).info.run_id == run.info.run_id
    assert reads == []
    time.sleep(0.6)
    run_store.delete_run(run.info.run_id)
    answers.prefetch([task])
    assert answers.find_finished_run(task) is None  # then asked again: the deletion seen


def test_a_build_finds_its_experiment_afresh_after_a_deletion(store):
    # This process knew experiment "Fan" (an earlier build); a user deleted it, and
    # another client built the task in the experiment that succeeds it. A new build asks
    # again: it finds that run, and creates its own runs in the successor.
    from mlflow import MlflowClient

    from luigiflow._engine.session import Session
    from luigiflow._store import current

    task = Fan(index=3)
    mine = current.get_store(store)
    deleted = mine.experiment_id("Fan", create=True)
    MlflowClient(store).delete_experiment(deleted)
    others = type(mine)(store)  # another client's store: no cache of its own
    run = add_run(others, task)
    successor = run.info.experiment_id
    assert successor != deleted
    session = Session(mine)
    found = session.completion.find_finished_run(task)
    assert found is not None and found.info.run_id == run.info.run_id
    assert session.experiment_id("Fan") == successor


def test_forced_identities_ignore_older_runs(run_store):
    task = Fan(index=0)
    add_run(run_store, task, start_time=1_000)
    answers = Completion(run_store)
    answers.ignore_runs_before([task.identity], 2_000)
    answers.prefetch([task])
    assert answers.find_finished_run(task) is None
    newer = add_run(run_store, task, start_time=3_000)
    assert answers.find_finished_run(task).info.run_id == newer.info.run_id


def test_task_complete_asks_the_real_store(store):
    task = Fan(index=0)
    assert not task.complete()
    lf.build([task])
    assert task.complete()


@pytest.mark.parametrize(
    ("asked", "exact"),
    [([0, 1, 9], True), ([0, 1, 2, 3, 9, 11], False)],  # few / many unanswered after 3 runs
)
def test_a_long_scan_asks_its_last_few_identities_exactly(run_store, monkeypatch, asked, exact):
    from luigiflow._store.memory import MemoryStore

    monkeypatch.setattr(completion, "SCAN_THRESHOLD", 0)
    monkeypatch.setattr(completion, "SCAN_FIRST", 3)
    monkeypatch.setattr(completion, "EXACT_AFTER_SCAN", 2)
    tasks = [Fan(index=i) for i in range(12)]
    now = int(time.time() * 1000)
    for i, task in enumerate(tasks[:10]):
        add_run(run_store, task, start_time=now + i)
    add_run(run_store, tasks[0], "FAILED", start_time=now + 50)
    add_run(run_store, tasks[1], start_time=now + 60, deleted=True)
    wanted = [tasks[i] for i in asked]
    expected = {t: _direct(run_store, t) for t in wanted}
    if isinstance(run_store, MemoryStore):
        run_store.calls.clear()
    answers = Completion(run_store)
    answers.prefetch(wanted)
    batched = {t: (r.info.run_id if (r := answers.find_finished_run(t)) else None) for t in wanted}
    assert batched == expected
    assert expected[tasks[0]] is not None and expected[tasks[9]] is not None
    if isinstance(run_store, MemoryStore):
        assert ("find_finished" in run_store.calls) == exact, run_store.calls


@pytest.mark.parametrize("threshold", [0, 1000])  # the scan path, then the per-task path
def test_a_chosen_older_run_completes_its_identity(run_store, monkeypatch, threshold):
    """`--rerun-changed` after a revert: the plan picks an older run of an identity (its
    code matches) and the build completes the task with it, not with the newest."""
    import pickle

    from luigiflow._engine.session import Session
    from luigiflow._store.memory import MemoryStore

    monkeypatch.setattr(completion, "SCAN_THRESHOLD", threshold)
    tasks = [Fan(index=i) for i in range(5)]
    now = int(time.time() * 1000)
    older = add_run(run_store, tasks[0], start_time=now)
    newest = add_run(run_store, tasks[0], start_time=now + 1_000)
    for i, task in enumerate(tasks[1:]):
        add_run(run_store, task, start_time=now + i)
    answers = Completion(run_store)
    answers.prefetch(tasks)
    assert answers.find_finished_run(tasks[0]).info.run_id == newest.info.run_id
    answers.choose_runs({tasks[0].identity: older.info.run_id})
    assert answers.find_finished_run(tasks[0]).info.run_id == older.info.run_id
    answers.prefetch(tasks)
    assert answers.find_finished_run(tasks[0]).info.run_id == older.info.run_id
    if not isinstance(run_store, MemoryStore):  # a spawned worker: the session pickled
        session = Session(run_store)
        session.completion.choose_runs({tasks[0].identity: older.info.run_id})
        copy = pickle.loads(pickle.dumps(session))
        assert copy.completion.find_finished_run(tasks[0]).info.run_id == older.info.run_id
    # a chosen run deleted since: the newest completes the task again
    run_store.delete_run(older.info.run_id)
    assert answers.find_finished_run(tasks[0], fresh=True).info.run_id == newest.info.run_id
