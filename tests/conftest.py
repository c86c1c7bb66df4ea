"""Fixtures: a real MLflow SQLite store per test (copied from one migrated template),
fresh Luigi global state, and a private cache folder."""

from __future__ import annotations

import fcntl
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import luigi
import pytest

from luigiflow._core.identity import canonical_json
from luigiflow._engine.session import Session
from luigiflow._store import current, schema
from luigiflow._store.memory import MemoryStore
from luigiflow._store.port import RunStore
from luigiflow._store.records import RunRecord

# A shell runs a background job (`scripts/test &`, CI runners) with SIGINT ignored, and an
# ignored signal stays ignored across exec: every `luigiflow run` the tests start would then
# ignore the Ctrl-C the interrupt tests send it (Python installs its KeyboardInterrupt
# handler only where SIGINT is not ignored) and hang until the test's timeout. Tests start
# their processes as a terminal would: with SIGINT at its default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """One migrated MLflow database per test run, shared by the xdist workers (each of
    which has its own basetemp under a common parent): importing MLflow and migrating
    costs several CPU seconds, once."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / "template"
    db = folder / "mlflow.db"
    folder.mkdir(exist_ok=True)
    with open(root / "template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker migrates, the other waits
        if not db.exists():
            migrating = folder / "migrating.db"
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; from mlflow.store.tracking.sqlalchemy_store import"
                    " SqlAlchemyStore; SqlAlchemyStore(sys.argv[1], sys.argv[2])",
                    f"sqlite:///{migrating}",
                    str(folder / "mlruns"),
                ],
                check=True,
                capture_output=True,
            )
            migrating.rename(db)  # whole or absent
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
    import mlflow

    mlflow.set_tracking_uri(uri)  # MLflow's fluent API, as a user's process would start
    yield uri
    _reset_globals()


def _reset_globals() -> None:
    # Luigi's and MLflow's own process-wide state; luigiflow keeps its per-build state in
    # a session object and its caches per tracking store, so it needs no reset.
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    luigi.configuration.LuigiConfigParser._instance = None
    luigi.task_register.Register.clear_instance_cache()


@pytest.fixture
def client(store: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store)


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


def luigiflow_cli_at_once(
    *args: str, processes: int, cwd, env=None, timeout: float = 600
) -> list[tuple[str, str]]:
    """Start `processes` `luigiflow` commands at once (a race on one store); each must
    exit 0. Returns every process's (stdout, stderr)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "luigiflow.cli", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = [p.communicate(timeout=timeout) for p in procs]
    assert [p.returncode for p in procs] == [0] * processes, outputs
    return outputs


# The store contract: engine and plan tests run against the in-memory store (fast
# tier) and against MLflow's client on a real SQLite store, with the same assertions.


@pytest.fixture(params=["memory", "sqlite"])
def run_store(request: pytest.FixtureRequest) -> RunStore:
    if request.param == "memory":
        return MemoryStore()
    uri = request.getfixturevalue("store")
    return current.get_store(uri)


@pytest.fixture
def session(run_store: RunStore) -> Session:
    return Session(run_store)


def add_run(
    store: RunStore,
    task,
    status: str | None = "FINISHED",
    start_time: int | None = None,
    deleted: bool = False,
    worker: str = "elsewhere/1/feedbeef",
    tags: dict[str, str] | None = None,
) -> RunRecord:
    """A run of `task` as another worker would record it (status None: still RUNNING)."""
    exp_id = store.experiment_id(task.get_experiment_name(), create=True)
    assert exp_id is not None
    run = store.create_run(
        exp_id,
        f"{task.get_task_family()}-test",
        {
            schema.IDENTITY_TAG: task.identity,
            schema.FAMILY_TAG: task.get_task_family(),
            schema.PARAMS_TAG: canonical_json(task.encoded_params()),
            schema.WORKER_TAG: worker,
            schema.STORE_FORMAT_TAG: str(schema.STORE_FORMAT),
            **(tags or {}),
        },
        start_time=start_time,
    )
    if status:
        store.terminate(run.info.run_id, status)
    if deleted:
        store.delete_run(run.info.run_id)
    return store.get_run(run.info.run_id)
