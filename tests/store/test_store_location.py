"""Which store a command uses: the default store is exactly the working folder's
mlflow.db, whatever characters the folder's name holds."""

from __future__ import annotations

import pathlib
import shutil
import sqlite3

import pytest

import luigiflow as lf
from luigiflow._store import current, sqlite_file
from tests.dags import Leaf, Source


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


@pytest.mark.parametrize("folder", ["proj%20x", "a b#c?d=1"])
def test_mlflows_own_client_opens_the_working_folders_store(
    template_db: pathlib.Path, tmp_path: pathlib.Path, monkeypatch, folder
):
    """The default URI is percent-quoted; MLflow's client (model logging, a user's own
    MlflowClient) opens it through SQLAlchemy, which decodes it from 2.1 on: on 2.0 it
    opened a file named `proj%2520x` instead (pyproject's SQLAlchemy floor)."""
    from mlflow import MlflowClient

    project = tmp_path / folder
    project.mkdir()
    shutil.copy(template_db, project / "mlflow.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(project)

    MlflowClient(tracking_uri=current.tracking_uri()).create_experiment("Source")
    # (MLflow also makes an empty folder named as the quoted path: harmless, left alone)
    assert list(tmp_path.rglob("mlflow.db")) == [project / "mlflow.db"]
    with sqlite3.connect(project / "mlflow.db") as conn:
        assert conn.execute("SELECT 1 FROM experiments WHERE name = 'Source'").fetchone()


def test_plan_creates_nothing_and_a_build_names_the_store_it_creates(
    store: str, tmp_path: pathlib.Path, monkeypatch
):
    """Running from another folder of the project: `plan` and reads create no store
    there; the build that creates one says so, naming the project's store above it."""
    from click.testing import CliRunner

    from luigiflow.cli import app

    project_store = tmp_path / "mlflow.db"  # the project's store (the fixture's)
    (tmp_path / ".git").mkdir()  # the project root: the search for a store stops here
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(elsewhere)
    runner = CliRunner()

    planned = runner.invoke(app, ["plan", "--module", "tests.dags", "Leaf"])
    assert planned.exit_code == 0, planned.output
    assert "3 task(s) will run" in planned.output
    assert f"store: {elsewhere / 'mlflow.db'} (none yet" in planned.output
    assert Leaf().find_run() is None
    assert list(elsewhere.iterdir()) == []  # no mlflow.db, no folders

    built = runner.invoke(app, ["run", "--module", "tests.dags", "Source", "--size", "2"])
    assert built.exit_code == 0, built.output
    [line] = [x for x in built.output.splitlines() if "creating a new, empty store" in x]
    assert str(elsewhere / "mlflow.db") in line and str(project_store) in line, line
    assert f"store: {elsewhere / 'mlflow.db'}\n" in built.output
    assert finished_sources(elsewhere / "mlflow.db") == 1
    again = runner.invoke(app, ["run", "--module", "tests.dags", "Source", "--size", "2"])
    assert "creating a new" not in again.output and "reused 1" in again.output, again.output
