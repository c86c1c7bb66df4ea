"""Real servers on 127.0.0.1 for integration tests: luigid, mlflow server, PostgreSQL,
`luigiflow serve`."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

REPO = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}: {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {seconds}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def luigid(workdir: pathlib.Path):
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "luigid"),
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
            "--state-path",
            str(workdir / "luigid.pickle"),
            "--logdir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/api/task_list", proc, 60)
        yield url
    finally:
        stop(proc)


def start_mlflow(backend: str, artifacts: pathlib.Path, port: int | None = None):
    port = port or free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        # MLflow's job runner starts eight consumer processes (~2 GB) for GenAI jobs that
        # tracking never uses; on a 2-core machine they slow every other test.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc, 120)
    return proc, url


@contextmanager
def mlflow_server(backend: str, artifacts: pathlib.Path):
    proc, url = start_mlflow(backend, artifacts)
    try:
        yield url
    finally:
        stop(proc)


@contextmanager
def luigiflow_serve(run_id: str, cwd: pathlib.Path, *options: str, seconds: float = 180):
    """`luigiflow serve RUN_ID --port P [options]` answering /ping; yields the port. Its
    output goes to serve.log in `cwd`, whose tail is in the error if it never answers."""
    port = free_port()
    log = cwd / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "luigiflow.cli", "serve", run_id, "--port", str(port), *options],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/ping", proc, seconds)
        except (RuntimeError, TimeoutError) as exc:
            tail = log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{exc}; luigiflow serve said:\n{tail}") from exc
        yield port
    finally:
        stop(proc)


@contextmanager
def postgres():
    port = free_port()
    out = subprocess.run(
        [str(REPO / "scripts" / "postgres.sh"), "start", str(port)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    uri, data = out.stdout.split()
    try:
        yield uri
    finally:
        subprocess.run(
            [str(REPO / "scripts" / "postgres.sh"), "stop", data], capture_output=True, timeout=60
        )
