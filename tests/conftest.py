"""Fixtures: a real MLflow SQLite store per test (copied from one migrated template),
fresh Luigi global state, and a private cache folder."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import luigi
import pytest

from luigiflow import _lookup, _recheck, _tracking

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """One migrated MLflow database per session; migrations cost 1-2 s each time."""
    folder = tmp_path_factory.mktemp("template")
    db = folder / "mlflow.db"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore;"
            "SqlAlchemyStore(sys.argv[1], sys.argv[2])",
            f"sqlite:///{db}",
            str(folder / "mlruns"),
        ],
        check=True,
        capture_output=True,
    )
    return db


@pytest.fixture
def store(
    tmp_path: pathlib.Path, template_db: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A fresh tracking store under tmp_path; the working directory is tmp_path."""
    db = tmp_path / "mlflow.db"
    shutil.copy(template_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LUIGIFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    _reset_globals()
    yield uri
    _reset_globals()


def _reset_globals() -> None:
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    _tracking.forget_experiments()
    _lookup.forget()
    _recheck.forget()
    luigi.configuration.LuigiConfigParser._instance = None
    luigi.task_register.Register.clear_instance_cache()


@pytest.fixture
def client(store: str):
    return _tracking.get_client()


def runs_of(client, experiment: str, status: str | None = None) -> list:
    """Every run (any status unless given) of one experiment, oldest first."""
    from mlflow.entities import ViewType

    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=10_000)
    if status:
        runs = [r for r in runs if r.info.status == status]
    return sorted(runs, key=lambda r: r.info.start_time)


def luigiflow_cli(*args: str, cwd, env=None, check: bool = True, timeout: float = 600):
    """Run the `luigiflow` command as a user would, in a subprocess."""
    out = subprocess.run(
        [sys.executable, "-m", "luigiflow.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out
