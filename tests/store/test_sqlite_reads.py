"""The SQL read path gives the same answers as MLflow's client on mixed stores."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest

from luigiflow._store import sqlite_reads
from luigiflow._store.mlflow_store import MlflowStore
from luigiflow._store.records import RunRecord
from tests.conftest import REPO, add_run
from tests.dags import Fan, Source


def _same(a: RunRecord | None, b: RunRecord | None) -> None:
    if a is None or b is None:
        assert a is b
        return
    assert a.info == b.info
    assert a.data.tags == b.data.tags and a.data.params == b.data.params
    assert a.data.metrics.keys() == b.data.metrics.keys()
    for key, value in a.data.metrics.items():
        other = b.data.metrics[key]
        assert (math.isnan(value) and math.isnan(other)) or value == other


@pytest.fixture
def mixed(store: str, client):
    """A store holding finished, failed, killed, running, deleted and duplicate runs, odd
    parameter values, NaN metrics, another worker's runs and a deleted experiment."""
    mlflow_store = MlflowStore(store)
    now = int(time.time() * 1000)
    tasks = [Fan(index=i) for i in range(8)]
    for i, task in enumerate(tasks):
        run = add_run(mlflow_store, task, start_time=now + i, worker=f"w/{i % 2}/x")
        mlflow_store.log_batch(
            run.info.run_id,
            params={"quote": 'it\'s "odd" ünïcode', "empty": ""},
            metrics={"score": 0.5 + i, "bad": math.nan},
        )
    add_run(mlflow_store, tasks[1], "FAILED", start_time=now + 50)
    add_run(mlflow_store, tasks[2], "KILLED", start_time=now + 51)
    add_run(mlflow_store, tasks[3], None, start_time=now + 52)  # running
    add_run(mlflow_store, tasks[4], start_time=now + 53, deleted=True)
    add_run(mlflow_store, tasks[5], start_time=now + 5)  # a duplicate, same start as another
    gone = client.create_experiment("gone")
    client.delete_experiment(gone)
    add_run(mlflow_store, Source(size=9))
    return store


def test_every_read_matches_mlflows_client(mixed: str):
    assert sqlite_reads.readable(mixed)
    ours, theirs = sqlite_reads.SqliteStore(mixed), MlflowStore(mixed)
    assert ours.experiment_id("Fan") == theirs.experiment_id("Fan")
    assert ours.experiment_id("gone") == theirs.experiment_id("gone") is None
    assert ours.experiment_id("nothing") is None
    assert sorted(ours.experiments(), key=str) == sorted(theirs.experiments(), key=str)
    exp = theirs.experiment_id("Fan")
    assert exp is not None
    for i in range(9):
        identity = Fan(index=i).identity
        _same(ours.find_finished(exp, identity), theirs.find_finished(exp, identity))
        a, b = (
            ours.runs_with_identity(exp, identity, 50),
            theirs.runs_with_identity(exp, identity, 50),
        )
        assert [r.info.run_id for r in a] == [r.info.run_id for r in b]
    for args in ({}, {"not_worker": "w/0/x"}, {"ended_since_ms": 0}):
        a, b = list(ours.finished_runs(exp, **args)), list(theirs.finished_runs(exp, **args))
        assert [r.info.run_id for r in a] == [r.info.run_id for r in b], args
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    assert [r.info.run_id for r in ours.running_runs(exp, "w/0/x")] == [
        r.info.run_id for r in theirs.running_runs(exp, "w/0/x")
    ]
    everything = list(theirs.all_runs(exp))
    assert [r.info.run_id for r in ours.all_runs(exp)] == [r.info.run_id for r in everything]
    ids = [r.info.run_id for r in everything]
    mine, real = ours.get_runs([*ids, "f" * 32]), theirs.get_runs([*ids, "f" * 32])
    assert mine.keys() == real.keys()
    for rid in ids:
        _same(mine[rid], real[rid])
        _same(ours.get_run(rid), theirs.get_run(rid))
    finished = [r.info.run_id for r in theirs.finished_runs(exp)]
    assert sorted(r.info.run_id for r in ours.fetch_finished(exp, ids)) == sorted(finished)


def test_an_unknown_schema_revision_is_read_through_mlflow(mixed: str):
    import sqlite3

    from luigiflow._store import sqlite_file

    path = sqlite_file.sqlite_path(mixed)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'future'")
    assert not sqlite_reads.readable(mixed)


def test_a_no_op_build_and_queries_do_not_import_mlflow(store: str, tmp_path):
    import luigiflow as lf
    from tests.dags import Leaf

    run_id = lf.build([Leaf()]).runs[Leaf()]
    code = (
        "import sys\nfrom luigiflow.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    assert not exc.code, exc\n"
        "print('MLFLOW' if 'mlflow' in sys.modules else 'CLEAN')"
    )
    for args in (
        ["run", "--module", "tests.dags", "Leaf"],
        ["plan", "--module", "tests.dags", "Leaf"],
        ["runs", "Leaf", "--limit", "20"],
        ["show", run_id],
    ):
        out = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.strip().endswith("CLEAN"), (args, out.stdout[-2000:])


def test_the_store_travels_pickled_to_spawned_workers(mixed: str):
    import pickle

    ours = sqlite_reads.SqliteStore(mixed)
    exp = ours.experiment_id("Fan")
    copy = pickle.loads(pickle.dumps(ours))
    assert copy.experiment_id("Fan") == exp
    assert [r.info.run_id for r in copy.finished_runs(exp)] == [
        r.info.run_id for r in ours.finished_runs(exp)
    ]
