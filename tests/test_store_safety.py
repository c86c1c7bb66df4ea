"""The store itself: concurrent creation, read-only mounts, corrupted databases, remote
download caches, a full disk, bad environment variables, and stores made by the previous
release. Real processes, real mounts (the suite runs as root)."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

import luigiflow as lf
from tests.conftest import REPO, runs_of
from tests.servers import mlflow_server

PREVIOUS_RELEASE = "377340e"


def project_env(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
    """The environment of a user in a project folder with the embedded default store."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    for name in list(env):
        if name.startswith("LUIGIFLOW_"):
            del env[name]
    env["LUIGIFLOW_CACHE_DIR"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_cli(*args: str, cwd: pathlib.Path, env: dict[str, str], timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "luigiflow.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_python(code: str, cwd: pathlib.Path, env: dict[str, str]):
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def one_line_error(out: subprocess.CompletedProcess) -> str:
    """The CLI failed with exactly one line on stderr, and no traceback."""
    assert out.returncode != 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


def finished_counts(db: pathlib.Path) -> dict[str, int]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    counts: dict[str, int] = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            if run.info.status == "FINISHED":
                counts[exp.name] = counts.get(exp.name, 0) + 1
    return counts


# ----- item 3: creating the embedded store ------------------------------------------


@pytest.mark.slow
def test_four_first_runs_on_a_fresh_folder_all_succeed(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    env = project_env(tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "luigiflow.cli", "run", "--module", "tests.dags", "Leaf"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out
    counts = finished_counts(project / "mlflow.db")
    assert set(counts) >= {"Source", "Middle", "Leaf"}
    again = run_cli("run", "--module", "tests.dags", "Leaf", cwd=project, env=env)
    assert again.returncode == 0 and "reused" in again.stdout, again.stdout + again.stderr


# ----- item 12: read-only stores, corrupted databases ------------------------------


@contextlib.contextmanager
def read_only(folder: pathlib.Path):
    """Make `folder` read-only in place with a bind mount (chmod does not stop root)."""
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
def test_read_only_store_reads_and_refuses_writes_in_one_line(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    env = project_env(tmp_path)
    built = run_cli("run", "--module", "tests.dags", "Leaf", cwd=project, env=env)
    assert built.returncode == 0, built.stderr
    with read_only(project):
        with pytest.raises(OSError):
            (project / "probe").write_text("x")
        runs = run_cli("runs", "Leaf", cwd=project, env=env)
        assert runs.returncode == 0 and "1 finished run" in runs.stdout, runs.stdout + runs.stderr
        loaded = run_python(
            "from tests.dags import Leaf; print(Leaf().load_output())", project, env
        )
        assert loaded.returncode == 0 and loaded.stdout.strip() == "6", loaded.stderr
        reused = run_cli("run", "--module", "tests.dags", "Leaf", cwd=project, env=env)
        assert reused.returncode == 0, reused.stdout + reused.stderr
        new = run_cli("run", "--module", "tests.dags", "Leaf", "--size", "5", cwd=project, env=env)
        line = one_line_error(new)
        assert "read-only store" in line and str(project / "mlflow.db") in line


def _broken_db_error(project: pathlib.Path, env: dict[str, str]) -> str:
    db = project / "mlflow.db"
    for args in (("runs", "Leaf"), ("run", "--module", "tests.dags", "Source")):
        out = run_cli(*args, cwd=project, env=env)
        line = one_line_error(out)
        assert str(db) in line, line
    return line


@pytest.mark.slow
def test_garbage_database_is_one_line_naming_the_file(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mlflow.db").write_bytes(b"this is not an MLflow store\n" * 200)
    _broken_db_error(project, project_env(tmp_path))


@pytest.mark.slow
def test_truncated_database_is_one_line_naming_the_file(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    env = project_env(tmp_path)
    assert run_cli("run", "--module", "tests.dags", "Leaf", cwd=project, env=env).returncode == 0
    db = project / "mlflow.db"
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)
    _broken_db_error(project, env)


@pytest.mark.slow
def test_zero_length_database_is_never_a_silent_fresh_start(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mlflow.db").write_bytes(b"")
    line = _broken_db_error(project, project_env(tmp_path))
    assert "empty" in line
    assert (project / "mlflow.db").stat().st_size == 0  # nothing was created in it


# ----- item 14: remote download cache, full disk -------------------------------------


@pytest.mark.slow
def test_corrupted_download_cache_is_fetched_again(tmp_path):
    served = tmp_path / "served-artifacts"
    project = tmp_path / "project"
    project.mkdir()
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", served) as url:
        env = project_env(tmp_path, MLFLOW_TRACKING_URI=url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
        assert (
            run_cli("run", "--module", "tests.dags", "Source", cwd=project, env=env).returncode == 0
        )
        load = "from tests.dags import Source; print(Source().load_output())"
        first = run_python(load, project, env)
        assert first.stdout.strip() == "[0, 1, 2]", first.stderr
        [cached] = (tmp_path / "cache").rglob("numbers.json")
        cached.write_text(cached.read_text().replace("2", "3"))  # same size, other bytes
        again = run_python(load, project, env)
        assert again.returncode == 0 and again.stdout.strip() == "[0, 1, 2]", again.stderr
        assert json.loads(cached.read_text()) == [0, 1, 2]

        [on_server] = served.rglob("numbers.json")
        on_server.write_text(on_server.read_text().replace("2", "3"))
        cached.write_text(cached.read_text().replace("2", "3"))
        bad = run_python(load, project, env)
        assert bad.returncode != 0
        last = bad.stderr.strip().splitlines()[-1]
        assert "ArtifactError" in last and "corrupted" in last and "server" in last, bad.stderr


@contextlib.contextmanager
def tiny_disk(folder: pathlib.Path, size: str = "1m"):
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_disk_full_while_writing_an_artifact_marks_the_run_failed(client, tmp_path):
    class Big(lf.MlflowTask):
        artifacts = {"blob": "blob.pkl"}

        def run_task(self):
            self.save({"blob": os.urandom(4 * 2**20)})

    with tiny_disk(tmp_path / "mlruns") as disk, pytest.raises(lf.BuildError) as info:
        with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):
            while True:  # the disk is full before the run writes its first file
                f.write(b"\0" * 65536)
                f.flush()
        lf.build([Big()])
    assert "No space left" in str(info.value)
    [run] = runs_of(client, "Big")
    assert run.info.status == "FAILED"


# ----- item 16: environment variables -----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LUIGIFLOW_HEARTBEAT_S", "0"),
        ("LUIGIFLOW_HEARTBEAT_S", "-1"),
        ("LUIGIFLOW_STALE_AFTER_S", "soon"),
        ("LUIGIFLOW_RECHECK_S", "nan"),
        ("LUIGIFLOW_CACHE_DIR", "/dev/null/cache"),
    ],
)
def test_bad_environment_variable_is_one_line(tmp_path, name, value):
    project = tmp_path / "project"
    project.mkdir()
    env = project_env(tmp_path, **{name: value})
    out = run_cli("run", "--module", "tests.dags", "Source", cwd=project, env=env, timeout=120)
    line = one_line_error(out)
    assert f"{name}={value!r}" in line or f"{name}={value}" in line, line


@pytest.mark.slow
def test_checksum_limit_variable_is_deprecated_in_one_line(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    env = project_env(tmp_path, LUIGIFLOW_CHECKSUM_MAX_BYTES="64MiB")
    out = run_cli("run", "--module", "tests.dags", "Source", cwd=project, env=env)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    mentions = [line for line in out.stderr.splitlines() if "LUIGIFLOW_CHECKSUM_MAX_BYTES" in line]
    assert len(mentions) == 1 and "deprecated" in mentions[0], out.stderr


# ----- item 17: stores made by the previous release ---------------------------------


def _walk(entry: dict):
    yield entry
    for child in entry["upstream"].values():
        yield from _walk(child)


@pytest.mark.slow
def test_store_made_by_the_previous_release(tmp_path):
    old = tmp_path / "previous-release"
    old.mkdir()
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "archive",
            PREVIOUS_RELEASE,
            "luigiflow",
            "tests/__init__.py",
            "tests/dags.py",
        ],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    project = tmp_path / "project"
    project.mkdir()
    old_env = project_env(tmp_path, PYTHONPATH=str(old))
    which = run_python("import luigiflow; print(luigiflow.__file__)", project, old_env)
    assert which.stdout.startswith(str(old)), which.stdout + which.stderr
    built = run_cli("run", "--module", "tests.dags", "Leaf", cwd=project, env=old_env)
    assert built.returncode == 0, built.stderr
    old_ids = _finished_ids(project / "mlflow.db")
    assert len(old_ids) == 3

    env = project_env(tmp_path)
    planned = run_cli(
        "plan", "--module", "tests.dags", "Leaf", "--format", "json", cwd=project, env=env
    )
    assert planned.returncode == 0, planned.stderr
    for entry in _walk(json.loads(planned.stdout)[0]):
        if entry["status"] == "reused":
            assert entry["run_id"] in old_ids
        elif entry["status"] == "will run":
            why = " ".join(entry["reasons"])
            assert "store format" in why or "upstream will run" in why, entry
    rebuilt = run_cli("run", "--module", "tests.dags", "Leaf", cwd=project, env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    loaded = run_python("from tests.dags import Leaf; print(Leaf().load_output())", project, env)
    assert loaded.stdout.strip() == "6", loaded.stderr

    replanned = run_cli(
        "plan", "--module", "tests.dags", "Leaf", "--format", "json", cwd=project, env=env
    )
    assert json.loads(replanned.stdout)[0]["status"] == "reused"

    # Every run made now records the store format it was written in.
    before = _finished_ids(project / "mlflow.db")
    other = run_cli("run", "--module", "tests.dags", "Leaf", "--size", "5", cwd=project, env=env)
    assert other.returncode == 0, other.stderr
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    new_ids = _finished_ids(project / "mlflow.db") - before
    assert len(new_ids) == 3
    for run_id in new_ids:
        assert client.get_run(run_id).data.tags.get("luigiflow.store_format", "").isdigit()


def _finished_ids(db: pathlib.Path) -> set[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exps = [e.experiment_id for e in client.search_experiments()]
    return {
        r.info.run_id
        for r in client.search_runs(exps, max_results=1000)
        if r.info.status == "FINISHED"
    }
