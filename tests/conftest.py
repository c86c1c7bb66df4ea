"""Fixtures: a real MLflow SQLite store per test (copied from one migrated template),
fresh Luigi global state, and a private cache folder."""

from __future__ import annotations

import fcntl
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import luigi
import pytest

from luigiflow import _settings
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


# The fast tier stays fast: a test that starts a Python process (a `luigiflow`, `mlflow`
# or `luigid` command, a server, a script run by `python`) is marked slow, or it fails.
# Python's audit hooks see every process start made through subprocess, os.exec*,
# os.posix_spawn*, os.spawn* and os.system, in this process and in the processes it forks
# (Luigi's task processes; they write to a file, their memory is their own); a hook cannot
# be removed. multiprocessing's forkserver and spawn starts are not audited: those are
# luigiflow's own worker processes, not commands. Programs that are not Python (git, a
# shell running `echo`) cost milliseconds and are left alone.
_SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system"}
)
_PYTHON_PROGRAMS = frozenset(
    {"luigiflow", "mlflow", "luigid", "luigi", "gunicorn", "uvicorn", "dvc", "jupyter", "pytest"}
)
_SHELLS = frozenset({"sh", "bash", "dash", "zsh"})
_WRAPPERS = frozenset({"env", "exec", "nohup", "nice", "timeout", "setsid"})
_TEST_PID = os.getpid()
_SPAWN_LOG = pathlib.Path(tempfile.gettempdir()) / f"luigiflow-test-spawns-{_TEST_PID}.log"
_spawns: list[str] = []
_allowed = [False]  # the session's shared template store is migrated in a process, once


def _runs_python(words: list[str]) -> bool:
    """Whether a command line (program first) starts a Python interpreter."""
    while (
        words
        and (
            re.fullmatch(r"[A-Za-z_]\w*=.*", words[0], re.S)  # VAR=value before the program
            or os.path.basename(words[0]) in _WRAPPERS
            or (words[0][:1] in "-0123456789" and len(words) > 1)  # a wrapper's options
        )
    ):
        words = words[1:]
    if not words:
        return False
    program = os.path.basename(words[0])
    if program in _SHELLS:
        return "-c" in words[1:-1] and _shell_runs_python(words[words.index("-c") + 1])
    return (
        program.startswith("python")
        or program.endswith(".py")
        or program in _PYTHON_PROGRAMS
        or os.path.dirname(words[0]) == os.path.dirname(sys.executable)  # the venv's commands
    )


def _shell_runs_python(script: str) -> bool:
    """Whether any simple command of a shell script starts Python."""
    return any(_runs_python(part.split()) for part in re.split(r"[;&|\n()`]+|\$\(", script))


def _python_command(event: str, args: tuple) -> str | None:
    """The command line of a process start that runs Python, or None."""
    if event == "os.system":
        line = os.fsdecode(args[0])
        return line[:300] if _shell_runs_python(line) else None
    if event == "subprocess.Popen":
        executable, argv = args[0], args[1]
        if isinstance(argv, (str, bytes)):  # shell=True, or a bare program name
            line = os.fsdecode(argv)
            runs = _shell_runs_python(line)
        else:
            words = [os.fsdecode(a) for a in argv or ()]
            if executable is not None:
                words = [os.fsdecode(executable), *words[1:]]
            line, runs = " ".join(words), _runs_python(words)
    else:  # os.exec, os.posix_spawn: (path, argv, env); os.spawn: (mode, path, argv, env)
        path, argv = (args[1], args[2]) if event == "os.spawn" else (args[0], args[1])
        words = [os.fsdecode(path), *[os.fsdecode(a) for a in list(argv or ())[1:]]]
        line, runs = " ".join(words), _runs_python(words)
    return line[:300] if runs else None


def _audit(event: str, args: tuple) -> None:
    if event not in _SPAWN_EVENTS:
        return  # the hook sees every audited event (imports, opens): leave at once
    command = _python_command(event, args)
    if command is None or _allowed[0]:
        return
    if os.getpid() == _TEST_PID:
        _spawns.append(command)
    else:  # a forked task process: its memory is its own
        with open(_SPAWN_LOG, "a") as log:
            log.write(command.replace("\n", " ") + "\n")


sys.addaudithook(_audit)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _spawns.clear()
    _SPAWN_LOG.unlink(missing_ok=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    _SPAWN_LOG.unlink(missing_ok=True)  # the last test's, if a forked process wrote one


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or item.get_closest_marker("slow") is not None:
        return
    started = list(_spawns)
    if _SPAWN_LOG.exists():
        started += _SPAWN_LOG.read_text().splitlines()
    if started and report.passed:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} started {len(started)} Python process(es) but is not marked slow "
            "(@pytest.mark.slow: it would slow scripts/test --fast); first: " + started[0]
        )


@pytest.fixture(autouse=True)
def _http_retry_variables_restored() -> Iterator[None]:
    """luigiflow sets MLflow's HTTP retry variables in os.environ at its first request and
    widens them to the outage window once a server answered, remembering which it set
    (_settings): each test ends with them as it found them, or later tests (and their
    subprocesses) would retry an unreachable server for minutes."""
    names = (*_settings.HTTP_RETRY_DEFAULTS, _settings.PROXY_DOWNLOADS)
    saved = {name: os.environ.get(name) for name in names}
    ours, riding_out = dict(_settings._ours), _settings._riding_out[0]
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _settings._ours.clear()
    _settings._ours.update(ours)
    _settings._riding_out[0] = riding_out


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
            _allowed[0] = True  # once per test session, whichever test comes first
            try:
                _migrate(migrating, folder / "mlruns")
            finally:
                _allowed[0] = False
            migrating.rename(db)  # whole or absent
    return db


def _migrate(db: pathlib.Path, artifacts: pathlib.Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mlflow.store.tracking.sqlalchemy_store import"
            " SqlAlchemyStore; SqlAlchemyStore(sys.argv[1], sys.argv[2])",
            f"sqlite:///{db}",
            str(artifacts),
        ],
        check=True,
        capture_output=True,
    )


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
