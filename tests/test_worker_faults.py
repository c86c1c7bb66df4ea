"""A crash, a kill or an interrupt is never taken as done, and is reported as what it is.

Real processes throughout: `luigiflow run` and `lf.build` in subprocesses, real
signals, a real SQLite store (and a real `mlflow server` where uploads are involved).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

import luigiflow as lf
from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of
from tests.servers import free_port, mlflow_server

PY = sys.executable


def _start(args: list[str], cwd: pathlib.Path, env: dict[str, str]) -> subprocess.Popen:
    # Its own session: a signal to the group is what Ctrl-C in a terminal sends.
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for(paths: list[pathlib.Path], proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while not all(p.exists() for p in paths):
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"exited early with {proc.returncode}:\n{out}\n{err}")
        assert time.time() < deadline, f"{paths} never appeared"
        time.sleep(0.05)


def _interrupted(
    args: list[str],
    cwd: pathlib.Path,
    env: dict[str, str],
    markers: list[pathlib.Path],
    interrupt: Callable[[subprocess.Popen], None],
) -> tuple[subprocess.Popen, str, str]:
    """Start `args`, wait until its tasks wrote every marker, `interrupt` it and let it
    end; returns (process, stdout, stderr). Its group is SIGKILLed if anything fails."""
    proc = _start(args, cwd, env)
    try:
        _wait_for(markers, proc)
        interrupt(proc)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc, out, err


def _ctrl_c(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends


def _sigkill_worker(marker: pathlib.Path) -> Callable[[subprocess.Popen], None]:
    """SIGKILL the worker process whose pid the task wrote in `marker`."""
    return lambda _proc: os.kill(int(marker.read_text()), signal.SIGKILL)


def _run_cmd(*words: str) -> list[str]:
    return [PY, "-m", "luigiflow.cli", "run", "--module", "tests.exec_tasks", *words]


def _leftovers(tmp: pathlib.Path) -> list[str]:
    return sorted(
        p.name
        for p in tmp.iterdir()
        if p.name.startswith(("luigiflow-build-", "luigiflow-upload-"))
    )


def _env(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return dict(os.environ, TMPDIR=str(tmp), **extra)


# ----- item 4: a SIGKILLed worker process ---------------------------------------------


@pytest.mark.slow
def test_sigkilled_worker_child_fails_luigiflow_run(client, tmp_path):
    markers = tmp_path / "markers"
    proc, out, err = _interrupted(
        _run_cmd("Napper", "--name", "victim", "--markers", str(markers), "--workers", "2"),
        tmp_path,
        _env(tmp_path),
        [markers / "victim"],
        _sigkill_worker(markers / "victim"),
    )
    assert proc.returncode != 0, out + err
    assert "Napper" in err and "worker process died" in err, err
    assert "failed 1" in out
    # Marked at once by the surviving parent, not after the stale timeout.
    [run] = runs_of(client, "Napper")
    assert run.info.status in ("FAILED", "KILLED")
    assert "worker process died" in run.data.tags["luigiflow.error"]


@pytest.mark.slow
def test_sigkilled_worker_child_makes_build_raise(client, tmp_path):
    markers = tmp_path / "markers"
    code = (
        "import luigiflow as lf, sys\n"
        "from tests.exec_tasks import Napper\n"
        f"task = Napper(name='victim', markers={str(markers)!r})\n"
        "try:\n"
        "    lf.build([task], workers=2)\n"
        "except lf.BuildError as exc:\n"
        "    [(failed, cause)] = exc.failures.items()\n"
        "    print(repr(failed), '|', type(cause).__name__, '|', cause)\n"
        "    sys.exit(3)\n"
    )
    proc, out, err = _interrupted(
        [PY, "-c", code],
        tmp_path,
        _env(tmp_path),
        [markers / "victim"],
        _sigkill_worker(markers / "victim"),
    )
    assert proc.returncode == 3, out + err
    assert out.startswith("Napper(name=victim"), out
    assert "worker process died" in out and "SIGKILL" in out, out
    [run] = runs_of(client, "Napper")
    assert run.info.status in ("FAILED", "KILLED")


# ----- item 8: a task that ends its own run --------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:  # a zombie is gone too
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
@pytest.mark.slow
def test_worker_children_die_with_a_sigkilled_build(client, tmp_path):
    # Orphaned, a child would go on writing while the next process to open the store
    # resets the WAL under it (its SQLite locks were its parent's): results lost.
    markers = tmp_path / "markers"
    proc = _start(
        _run_cmd("Nappers", "--markers", str(markers), "--seconds", "150", "--workers", "2"),
        tmp_path,
        _env(tmp_path),
    )
    try:
        _wait_for([markers / "left", markers / "right"], proc)
        children = [int((markers / n).read_text()) for n in ("left", "right")]
        os.kill(proc.pid, signal.SIGKILL)  # the build's own process only (OOM killer)
        proc.communicate(timeout=60)
        deadline = time.time() + 45  # they sleep 150 s
        while any(_alive(pid) for pid in children):
            assert time.time() < deadline, "worker children outlived the killed build"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert not runs_of(client, "Napper", "FINISHED")


def test_task_that_ends_its_own_run_then_raises_is_never_finished(client, monkeypatch):
    from tests.exec_tasks import EndsOwnRun

    task = EndsOwnRun(attempt="raise")
    with pytest.raises(lf.BuildError, match="failed after ending its own run"):
        lf.build([task])
    [run] = runs_of(client, "EndsOwnRun")
    assert run.info.status == "FAILED"
    assert task.find_run() is None
    monkeypatch.setenv("ENDS_OWN_RUN_OK", "1")
    result = lf.build([task])
    assert result.executed == [task]
    assert task.load_output() == {"ok": True}
    statuses = sorted(r.info.status for r in runs_of(client, "EndsOwnRun"))
    assert statuses == ["FAILED", "FINISHED"]


# ----- item 9: an unreachable tracking server ------------------------------------------


@pytest.mark.slow
def test_library_fails_fast_on_unreachable_server(tmp_path, store):
    url = f"http://127.0.0.1:{free_port()}"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")
    }  # MLflow's own defaults: 7 retries with backoff, about 4 minutes
    env["MLFLOW_TRACKING_URI"] = url
    code = (
        "import luigiflow as lf, sys\n"
        "from tests.dags import Leaf, Source\n"
        "for call in (lambda: lf.build([Leaf()]), lambda: Source().find_run(),\n"
        "             lambda: Source().load_output()):\n"
        "    try:\n"
        "        call()\n"
        "    except lf.LuigiflowError as exc:\n"
        "        print(f'{type(exc).__name__}: {exc}')\n"
    )
    # A generous bound far below MLflow's retry budget: the old code hangs past it.
    out = subprocess.run(
        [PY, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 3, out.stdout + out.stderr
    for line in lines:
        assert line.startswith("TrackingError: ") and url in line, line
    assert "Traceback" not in out.stderr


# ----- item 11: Ctrl-C and SIGTERM -----------------------------------------------------


def _assert_all_killed(client, experiment: str, err: str) -> None:
    runs = runs_of(client, experiment)
    assert runs, err
    assert {r.info.status for r in runs} == {"KILLED"}, [
        (r.info.run_id, r.info.status) for r in runs
    ]
    for run in runs:
        assert run.info.run_id in err, err  # the user is told which runs were stopped


@pytest.mark.slow
def test_ctrl_c_during_multi_worker_build_kills_runs_at_once(client, tmp_path):
    markers = tmp_path / "markers"
    env = _env(tmp_path)
    proc, out, err = _interrupted(
        _run_cmd("Nappers", "--markers", str(markers), "--workers", "2"),
        tmp_path,
        env,
        [markers / "left", markers / "right"],
        _ctrl_c,
    )
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err, err
    _assert_all_killed(client, "Napper", err)
    assert _leftovers(pathlib.Path(env["TMPDIR"])) == []


@pytest.mark.slow
def test_sigterm_to_the_parent_kills_runs_and_removes_upload_folders(store, tmp_path):
    from mlflow import MlflowClient

    markers = tmp_path / "markers"
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "served") as url:
        env = _env(tmp_path, MLFLOW_TRACKING_URI=url)
        staging: list[list[str]] = []

        def sigterm(proc: subprocess.Popen) -> None:
            staging.append(_leftovers(pathlib.Path(env["TMPDIR"])))
            proc.send_signal(signal.SIGTERM)  # `kill PID`: the parent alone

        proc, out, err = _interrupted(
            _run_cmd("Nappers", "--markers", str(markers), "--workers", "2"),
            tmp_path,
            env,
            [markers / "left", markers / "right"],
            sigterm,
        )
        assert staging[0]  # staging exists while running
        assert proc.returncode != 0, out + err
        assert "Traceback" not in err, err
        _assert_all_killed(MlflowClient(tracking_uri=url), "Napper", err)
        assert _leftovers(pathlib.Path(env["TMPDIR"])) == []


@pytest.mark.slow
def test_ctrl_c_with_one_worker_prints_one_line(client, tmp_path):
    markers = tmp_path / "markers"
    env = _env(tmp_path)
    proc, out, err = _interrupted(
        _run_cmd("Napper", "--name", "solo", "--markers", str(markers)),
        tmp_path,
        env,
        [markers / "solo"],
        _ctrl_c,
    )
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    _assert_all_killed(client, "Napper", err)
    assert _leftovers(pathlib.Path(env["TMPDIR"])) == []


@pytest.mark.slow
def test_interrupted_build_leaves_nothing_that_counts(client, tmp_path):
    """After an interrupt, the next build runs the task again (nothing stale counts)."""
    markers = tmp_path / "markers"
    env = _env(tmp_path)
    _interrupted(
        _run_cmd("Napper", "--name", "again", "--markers", str(markers)),
        tmp_path,
        env,
        [markers / "again"],
        _ctrl_c,
    )
    out = cli(
        "run",
        "--module",
        "tests.exec_tasks",
        "Napper",
        "--name",
        "again",
        "--markers",
        str(markers),
        "--seconds",
        "0",
        cwd=tmp_path,
        env=env,
    )
    assert "executed 1, reused 0, failed 0" in out.stdout


@pytest.mark.slow  # starts a Python process (see scripts/test --fast)
def test_processes_the_tests_start_take_ctrl_c_as_a_terminal_would():
    # Under a shell's background job SIGINT arrives ignored, and an ignored signal survives
    # exec: the `luigiflow run` processes the interrupt tests start then ignored their Ctrl-C
    # and the tests hung until their timeout (tests/conftest.py restores the default).
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
