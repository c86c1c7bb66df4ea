"""Which store a command uses: the default store is exactly the working folder's
mlflow.db, whatever characters the folder's name holds."""

from __future__ import annotations

import pathlib
import shutil
import sqlite3

import pytest

import luigiflow as lf
from luigiflow._store import current, sqlite_file
from tests.dags import Source


def finished_sources(db: pathlib.Path) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM runs JOIN experiments USING (experiment_id) "
            "WHERE experiments.name = 'Source' AND runs.status = 'FINISHED'"
        ).fetchone()
    return int(row[0])


# A name percent-decoding would turn into its neighbour, and the characters a URI reads
# as the start of a query or a fragment.
@pytest.mark.parametrize(("folder", "decoy"), [("proj%20x", "proj x"), ("a b#c?d=1", "a b")])
def test_the_default_store_is_exactly_the_working_folders_mlflow_db(
    store: str, template_db: pathlib.Path, tmp_path: pathlib.Path, monkeypatch, folder, decoy
):
    project, neighbour = tmp_path / folder, tmp_path / decoy
    for where in (project, neighbour):
        where.mkdir()
        shutil.copy(template_db, where / "mlflow.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(project)

    uri = current.tracking_uri()
    assert sqlite_file.sqlite_path(uri) == project / "mlflow.db"
    result = lf.build([Source(size=4)])
    assert result.executed == [Source(size=4)]
    assert finished_sources(project / "mlflow.db") == 1
    assert finished_sources(neighbour / "mlflow.db") == 0
    # The SQL read path opens the same file: the run is found again, reused.
    assert type(current.get_store(uri)).__name__ == "SqliteStore"
    assert lf.build([Source(size=4)]).reused == [Source(size=4)]
    assert Source(size=4).load_output("numbers") == [0, 1, 2, 3]
