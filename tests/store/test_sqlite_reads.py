"""The SQL read path gives the same answers as MLflow's client on mixed stores."""

from __future__ import annotations

import pathlib
import sqlite3
import subprocess
import sys

import pytest

from luigiflow._store import sqlite_file, sqlite_reads
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


def test_a_newer_unknown_revision_with_the_same_columns_is_read_in_sql(
    mixed: str, tmp_path: pathlib.Path
):
    """The SQL path is chosen by the tables and columns it reads, not by one revision:
    an MLflow release whose migrations touch other tables keeps it (issue 23)."""
    path = sqlite_file.sqlite_path(mixed)
    assert path is not None
    reference = tmp_path / "reference.db"  # the same rows at the revision MLflow knows
    with sqlite3.connect(path) as conn:
        conn.execute(f"VACUUM INTO '{reference}'")  # WAL included
        conn.execute("UPDATE alembic_version SET version_num = 'f00dcafe1234'")
        conn.execute("CREATE TABLE from_a_newer_mlflow (id INTEGER PRIMARY KEY)")
        conn.execute("ALTER TABLE runs ADD COLUMN newer_note VARCHAR(20)")
    assert sqlite_reads.readable(mixed)
    ours = sqlite_reads.SqliteStore(mixed)
    assert ours._verdict().writable and ours._verdict().revision == "f00dcafe1234"
    assert_same_reads(ours, MlflowStore(f"sqlite:///{reference}"))


def test_a_store_missing_a_column_the_reads_name_falls_back_to_mlflow(mixed: str):
    """Judged per connection and again when the schema changes (MLflow migrating the
    file under a running build): a column gone since the last read sends reads to
    MLflow's client; a new store port for the URI is MLflow's from the start."""
    path = sqlite_file.sqlite_path(mixed)
    ours = sqlite_reads.SqliteStore(mixed)
    assert ours._verdict().readable and ours.experiment_id("Fan") is not None
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE latest_metrics RENAME COLUMN is_nan TO was_nan")
    verdict = ours._verdict()
    assert not verdict.readable and "latest_metrics.is_nan" in verdict.why_not
    assert not sqlite_reads.readable(mixed)
    mlflow_said = []
    original = MlflowStore.experiments

    def through_mlflow(store):
        mlflow_said.append(store)
        return original(store)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MlflowStore, "experiments", through_mlflow)
        assert "Fan" in [e.name for e in ours.experiments()]
    assert mlflow_said == [ours]


@pytest.mark.slow
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
