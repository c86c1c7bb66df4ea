"""Stores made by an older MLflow: no command migrates one silently (issue 27).

The older store is built as MLflow's own tooling would leave it: a store of the installed
MLflow taken one migration back with MLflow's alembic scripts."""

from __future__ import annotations

import os
import pathlib
import sqlite3
import subprocess
import sys

import pytest

import luigiflow as lf
from tests.dags import Leaf

pytestmark = pytest.mark.slow


def downgrade_one_revision(uri: str) -> str:
    """Take the store one MLflow migration back; its revision now."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config

    command.downgrade(_get_alembic_config(uri), "-1")
    return revision(pathlib.Path(uri[len("sqlite:///") :]))


def revision(db: pathlib.Path) -> str:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every commit in the file itself
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def dump(db: pathlib.Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def cli(*args: str, cwd: pathlib.Path, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "luigiflow.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_reads_leave_an_older_store_byte_identical_and_a_build_migrates_only_when_asked(
    store: str, tmp_path: pathlib.Path
):
    from mlflow.store.db.utils import _get_latest_schema_revision

    db = tmp_path / "mlflow.db"
    leaf = lf.build([Leaf()]).runs[Leaf()]
    old = downgrade_one_revision(store)
    head = _get_latest_schema_revision()
    assert old != head
    before, rows = db.read_bytes(), dump(db)

    # Reads are answered by the SQL path: the file is not touched.
    for args in (
        ["runs", "Leaf"],
        ["show", leaf],
        ["plan", "--module", "tests.dags", "Leaf"],
        ["plan", "--module", "tests.dags", "Leaf", "--size", "5"],
        ["run", "--module", "tests.dags", "Leaf"],  # nothing to execute: a read
    ):
        out = cli(*args, cwd=tmp_path)
        assert out.returncode == 0, (args, out.stdout + out.stderr)
        assert db.read_bytes() == before, args
    assert revision(db) == old

    # A store whose tables lack a column the SQL reads need is refused, not migrated.
    lacking = tmp_path / "lacking" / "mlflow.db"
    lacking.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute(f"VACUUM INTO '{lacking}'")
    with sqlite3.connect(lacking) as conn:
        conn.execute("ALTER TABLE latest_metrics RENAME COLUMN is_nan TO was_nan")
    lacking_bytes = lacking.read_bytes()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{lacking}"}
    out = cli("runs", "Leaf", cwd=tmp_path, env=env)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert "mlflow db upgrade" in line and str(lacking) in line and ".bak" in line, line
    assert lacking.read_bytes() == lacking_bytes

    # A build that must write says what to do and writes nothing...
    # (its SQL writes would fit these tables, but not as the older MLflow expects them).
    out = cli("run", "--module", "tests.dags", "Leaf", "--size", "5", cwd=tmp_path)
    assert out.returncode != 0, out.stdout
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("TrackingError: ") and "Leaf" not in out.stdout, out.stdout + line
    assert "mlflow db upgrade" in line and "--upgrade-store" in line, line
    assert db.read_bytes() == before and revision(db) == old

    # ...and with --upgrade-store keeps a copy of the store as it was, then migrates it.
    out = cli(
        "run", "--module", "tests.dags", "Leaf", "--size", "5", "--upgrade-store", cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr
    [backup] = tmp_path.glob("mlflow.db.before-upgrade-*.bak")
    assert dump(backup) == rows and old in backup.name  # SQLite's backup: the same rows
    assert f"from MLflow schema {old} to {head}" in out.stderr and str(backup) in out.stderr
    assert revision(db) == head
    assert "executed 3" in out.stdout, out.stdout
