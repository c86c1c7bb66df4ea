"""A mixed store and the differential comparison every read path must pass against
MLflow's client (the SQL path on SQLite, the REST path on a server)."""

from __future__ import annotations

import math
import time

import pytest

from luigiflow._errors import RunNotFoundError
from luigiflow._store import schema
from luigiflow._store.mlflow_store import MlflowStore
from luigiflow._store.port import IdentityReads, RunStore, TagReads
from luigiflow._store.records import RunRecord
from tests.conftest import add_run
from tests.dags import Fan, Source


def same(a: RunRecord | None, b: RunRecord | None) -> None:
    if a is None or b is None:
        assert a is b
        return
    assert a.info == b.info
    assert a.data.tags == b.data.tags and a.data.params == b.data.params
    assert a.data.metrics.keys() == b.data.metrics.keys()
    for key, value in a.data.metrics.items():
        other = b.data.metrics[key]
        assert (math.isnan(value) and math.isnan(other)) or value == other


def populate(mlflow_store: MlflowStore) -> None:
    """Finished, failed, killed, running, deleted and duplicate runs, odd parameter
    values, NaN and infinite metrics, another worker's runs and a deleted experiment."""
    now = int(time.time() * 1000)
    tasks = [Fan(index=i) for i in range(8)]
    for i, task in enumerate(tasks):
        run = add_run(mlflow_store, task, start_time=now + i, worker=f"w/{i % 2}/x")
        mlflow_store.log_batch(
            run.info.run_id,
            params={"quote": 'it\'s "odd" ünïcode', "empty": ""},
            metrics={"score": 0.5 + i, "bad": math.nan, "huge": math.inf, "tiny": -1e-300},
        )
    add_run(mlflow_store, tasks[1], "FAILED", start_time=now + 50)
    add_run(mlflow_store, tasks[2], "KILLED", start_time=now + 51)
    add_run(mlflow_store, tasks[3], None, start_time=now + 52)  # running
    add_run(mlflow_store, tasks[4], start_time=now + 53, deleted=True)
    add_run(mlflow_store, tasks[5], start_time=now + 5)  # a duplicate, same start as another
    gone = mlflow_store.client.create_experiment(f"gone-{now}")
    mlflow_store.client.delete_experiment(gone)
    add_run(mlflow_store, Source(size=9))


def assert_same_reads(ours: RunStore, theirs: MlflowStore) -> None:
    """Every read of the store port answers as MLflow's client does."""
    assert ours.experiment_id("Fan") == theirs.experiment_id("Fan")
    deleted = [e.name for e in theirs.experiments() if e.lifecycle_stage == "deleted"]
    assert deleted
    for name in deleted:
        assert ours.experiment_id(name) == theirs.experiment_id(name) is None
    assert ours.experiment_id("nothing") is None
    assert sorted(ours.experiments(), key=str) == sorted(theirs.experiments(), key=str)
    exp = theirs.experiment_id("Fan")
    assert exp is not None
    for i in range(9):
        identity = Fan(index=i).identity
        same(ours.find_finished(exp, identity), theirs.find_finished(exp, identity))
        same(ours.find_finished(exp, identity, 0), theirs.find_finished(exp, identity, 0))
        a, b = (
            ours.runs_with_identity(exp, identity, 50),
            theirs.runs_with_identity(exp, identity, 50),
        )
        assert [r.info.run_id for r in a] == [r.info.run_id for r in b]
    for args in ({}, {"not_worker": "w/0/x"}, {"ended_since_ms": 0}):
        a, b = list(ours.finished_runs(exp, **args)), list(theirs.finished_runs(exp, **args))
        assert [r.info.run_id for r in a] == [r.info.run_id for r in b], args
        for x, y in zip(a, b, strict=True):
            same(x, y)
    for worker in (None, "w/0/x"):
        assert [r.info.run_id for r in ours.running_runs(exp, worker)] == [
            r.info.run_id for r in theirs.running_runs(exp, worker)
        ]
    everything = list(theirs.all_runs(exp))
    assert [r.info.run_id for r in ours.all_runs(exp)] == [r.info.run_id for r in everything]
    ids = [r.info.run_id for r in everything]
    mine, real = ours.get_runs([*ids, "f" * 32]), theirs.get_runs([*ids, "f" * 32])
    assert mine.keys() == real.keys()
    for rid in [*ids, "f" * 32]:
        one, other = ours.get_runs([rid]), theirs.get_runs([rid])
        assert one.keys() == other.keys()
        same(one.get(rid), other.get(rid))
    for rid in ids:
        same(mine[rid], real[rid])
        same(ours.get_run(rid), theirs.get_run(rid))
        same(ours.get_run(rid[:8]), theirs.get_run(rid[:8]))  # short ids, as tables show
    for store in (ours, theirs):
        with pytest.raises(RunNotFoundError):
            store.get_run("f" * 32)
    finished = [r.info.run_id for r in theirs.finished_runs(exp)]
    assert sorted(r.info.run_id for r in ours.fetch_finished(exp, ids)) == sorted(finished)
    if isinstance(ours, IdentityReads):
        assert_same_identity_reads(ours, theirs, exp)
    if isinstance(ours, TagReads):
        for keys in ([], [schema.IDENTITY_TAG, schema.PARAMS_TAG, "no.such.tag"]):
            assert list(ours.finished_tags(exp, keys)) == [
                (r.info, {k: v for k, v in r.data.tags.items() if k in keys})
                for r in theirs.finished_runs(exp)
            ]


def assert_same_identity_reads(ours: IdentityReads, theirs: MlflowStore, exp: str) -> None:
    """Reads by identity answer as filtering and counting MLflow's own listing does."""
    finished = list(theirs.finished_runs(exp))
    identities = {r.data.tags.get(schema.IDENTITY_TAG, "") for r in finished}
    counts: dict[str, int] = {}
    for run in finished:
        key = run.data.tags.get(schema.IDENTITY_TAG, "")
        counts[key] = counts.get(key, 0) + 1
    for wanted in (set(), identities, {Fan(index=5).identity, "no such identity"}):
        a = list(ours.finished_runs_of(exp, wanted))
        b = [r for r in finished if r.data.tags.get(schema.IDENTITY_TAG) in wanted]
        assert [r.info.run_id for r in a] == [r.info.run_id for r in b]
        for x, y in zip(a, b, strict=True):
            same(x, y)
        assert ours.finished_counts(exp, wanted) == {k: counts[k] for k in wanted if k in counts}
    assert counts[Fan(index=5).identity] == 2  # the duplicate is among them
