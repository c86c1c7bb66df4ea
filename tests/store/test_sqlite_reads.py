"""The SQL read path gives the same answers as MLflow's client on mixed stores."""

from __future__ import annotations

import subprocess
import sys

import pytest

from luigiflow._store import sqlite_reads
from luigiflow._store.mlflow_store import MlflowStore
from tests.conftest import REPO
from tests.store.mixed import assert_same_reads, populate


@pytest.fixture
def mixed(store: str):
    populate(MlflowStore(store))
    return store


# 2: runs come a chunk at a time (streamed), each chunk built on its own.
@pytest.mark.parametrize("chunk", [sqlite_reads.ID_CHUNK, 2])
def test_every_read_matches_mlflows_client(mixed: str, chunk: int, monkeypatch):
    monkeypatch.setattr(sqlite_reads, "ID_CHUNK", chunk)
    assert sqlite_reads.readable(mixed)
    assert_same_reads(sqlite_reads.SqliteStore(mixed), MlflowStore(mixed))


def test_an_unknown_schema_revision_is_read_through_mlflow(mixed: str):
    import sqlite3

    from luigiflow._store import sqlite_file

    path = sqlite_file.sqlite_path(mixed)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'future'")
    assert not sqlite_reads.readable(mixed)


def test_a_no_op_build_and_queries_do_not_import_what_they_do_not_use(store: str, tmp_path):
    import luigiflow as lf
    from tests.dags import Leaf

    run_id = lf.build([Leaf()]).runs[Leaf()]
    code = (
        "import sys\nfrom luigiflow.cli import main\n"
        "try:\n    main(sys.argv[1:-1])\nexcept SystemExit as exc:\n    assert not exc.code, exc\n"
        "loaded = {m.split('.')[0] for m in sys.modules} & set(sys.argv[-1].split(','))\n"
        "print('LOADED ' + ','.join(sorted(loaded)) if loaded else 'CLEAN')"
    )
    # Never mlflow (reads go through sqlite_reads); the store queries read no task
    # class, so neither Luigi nor requests (a SQLite store is read with sqlite3).
    queries = "mlflow,luigi,requests"
    for args in (
        ["run", "--module", "tests.dags", "Leaf", "mlflow"],
        ["plan", "--module", "tests.dags", "Leaf", "mlflow"],
        ["runs", "Leaf", "--limit", "20", queries],
        ["runs", "Leaf", "--where", "size=3", queries],
        ["show", run_id, queries],
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
