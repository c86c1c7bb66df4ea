"""The batched completion lookup agrees with a direct per-task query on mixed stores."""

from __future__ import annotations

import time

import pytest

import luigiflow as lf
from luigiflow import _lookup, _tracking
from luigiflow._identity import IDENTITY_TAG
from tests.dags import Fan


def _direct(task):
    exp = _tracking.get_client().get_experiment_by_name(task.get_experiment_name())
    if exp is None:
        return None
    run = _lookup.query_finished_run(exp.experiment_id, task.identity)
    return run.info.run_id if run else None


@pytest.mark.parametrize("threshold", [0, 1000])  # force the scan path, then the per-task path
def test_batched_lookup_matches_direct_query(client, monkeypatch, threshold):
    monkeypatch.setattr(_lookup, "SCAN_THRESHOLD", threshold)
    tasks = [Fan(index=i) for i in range(12)]
    lf.build(tasks[:8])
    exp_id = client.get_experiment_by_name("Fan").experiment_id
    runs = {t: t.find_run() for t in tasks[:8]}
    # 8: deleted; 9: only a FAILED run; 10: only a RUNNING run; 11: nothing at all
    client.delete_run(runs[tasks[0]].info.run_id)
    for task, status in ((tasks[9], "FAILED"), (tasks[10], None), (tasks[1], "KILLED")):
        run = client.create_run(exp_id, tags={IDENTITY_TAG: task.identity})
        if status:
            client.set_terminated(run.info.run_id, status)
    # duplicate FINISHED runs of tasks[2]: the newer must win everywhere
    dup = client.create_run(
        exp_id, start_time=int(time.time() * 1000) + 5_000, tags={IDENTITY_TAG: tasks[2].identity}
    )
    client.set_terminated(dup.info.run_id, "FINISHED")
    # a deleted duplicate that is even newer must not win
    ghost = client.create_run(
        exp_id, start_time=int(time.time() * 1000) + 9_000, tags={IDENTITY_TAG: tasks[3].identity}
    )
    client.set_terminated(ghost.info.run_id, "FINISHED")
    client.delete_run(ghost.info.run_id)

    expected = {t: _direct(t) for t in tasks}
    _lookup.forget()  # as at the start of a build: nothing answered yet
    _lookup.prefetch(tasks)
    batched = {t: (r.info.run_id if (r := _lookup.find_finished_run(t)) else None) for t in tasks}
    assert batched == expected
    assert expected[tasks[0]] is None and expected[tasks[9]] is None
    assert expected[tasks[10]] is None and expected[tasks[11]] is None
    assert expected[tasks[2]] == dup.info.run_id
    assert expected[tasks[3]] == runs[tasks[3]].info.run_id
    assert expected[tasks[1]] == runs[tasks[1]].info.run_id


def test_negative_answer_is_single_use(client):
    task = Fan(index=0)
    lf.build([Fan(index=1)])  # the experiment exists; task 0 has no run
    _lookup.prefetch([task])
    exp_id = client.get_experiment_by_name("Fan").experiment_id
    other = client.create_run(exp_id, tags={IDENTITY_TAG: task.identity})  # another worker
    client.set_terminated(other.info.run_id, "FINISHED")
    assert not task.complete()  # the prefetched answer, consumed
    assert task.complete()  # asked again: the store sees the other worker's run


def test_positive_answer_expires(client, monkeypatch):
    monkeypatch.setattr(_lookup, "RECENT_S", 0.2)
    task = Fan(index=0)
    lf.build([task])
    _lookup.prefetch([task])
    assert task.complete()
    client.delete_run(task.find_run().info.run_id)
    time.sleep(0.3)
    assert not task.complete()  # asked again: the store, not a stale answer


def test_lookup_creates_no_experiment(client):
    assert not Fan(index=99).complete()
    assert client.get_experiment_by_name("Fan") is None


def test_run_finished_here_is_fetched_by_id_and_its_deletion_seen(client):
    tasks = [Fan(index=i) for i in range(5)]
    lf.build(tasks)
    runs = {t: t.find_run() for t in tasks}
    _lookup.forget()
    for task in tasks:  # as if this process had just finished them
        _lookup.note_complete(task, runs[task].info.run_id)
    client.delete_run(runs[tasks[0]].info.run_id)
    _lookup.prefetch(tasks)
    assert _lookup.find_finished_run(tasks[0]) is None
    for task in tasks[1:]:
        assert _lookup.find_finished_run(task).info.run_id == runs[task].info.run_id
