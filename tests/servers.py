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

import pytest

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


def start_mlflow(
    backend: str,
    artifacts: pathlib.Path | str,
    port: int | None = None,
    options: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    log: pathlib.Path | None = None,
):
    """`mlflow server` with proxied artifacts at `artifacts` (a folder or e.g. s3://bucket),
    extra command-line `options` and environment `env`; (process, URL) once it answers.
    Its output goes to `log` when given (its tail is in the error if it never answers)."""
    port = port or free_port()
    out = log.open("wb") if log else subprocess.DEVNULL
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
            *options,
        ],
        stdout=out,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        start_new_session=True,
        # MLflow's job runner starts eight consumer processes (~2 GB) for GenAI jobs that
        # tracking never uses; on a 2-core machine they slow every other test.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})},
    )
    if log:
        out.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc, 120)
    except (RuntimeError, TimeoutError) as exc:
        stop(proc)
        tail = log.read_text(errors="replace")[-3000:] if log else ""
        raise RuntimeError(f"{exc}; mlflow server said:\n{tail}") from exc
    return proc, url


@contextmanager
def mlflow_server(backend: str, artifacts: pathlib.Path):
    proc, url = start_mlflow(backend, artifacts)
    try:
        yield url
    finally:
        stop(proc)


_shared: dict[str, tuple[str, pathlib.Path]] = {}


def shared_mlflow(
    config: pytest.Config, factory: pytest.TempPathFactory
) -> tuple[str, pathlib.Path]:
    """One plain `mlflow server` (SQLite, proxied artifacts) per test process, for the
    modules whose tests need a server but not a private one (starting one costs 10-15 s
    on a loaded machine); each xdist worker starts its own. Its users keep apart by the
    names of their experiments, which no other user of it picks. (URL, artifacts folder);
    stopped when pytest ends."""
    if "mlflow" not in _shared:
        folder = factory.mktemp("shared-mlflow")
        proc, url = start_mlflow(f"sqlite:///{folder / 'server.db'}", folder / "artifacts")
        config.add_cleanup(lambda: stop(proc))
        _shared["mlflow"] = (url, folder / "artifacts")
    return _shared["mlflow"]


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


# What an S3 client needs to reach the emulator: any key pair is accepted by moto.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_s3(bucket: str):
    """An S3 emulator (moto's server) on 127.0.0.1 holding an empty `bucket`; yields its
    endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        # Buckets by path only (as MLflow addresses them with MLFLOW_S3_ENDPOINT_URL),
        # whatever host name the server is reached by.
        env={**os.environ, "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/moto-api/", proc, 60)
        request = urllib.request.Request(f"{url}/{bucket}", method="PUT")  # CreateBucket
        with urllib.request.urlopen(request, timeout=10):
            pass
        yield url
    finally:
        stop(proc)


ADMIN = ("admin", "admin-password-for-tests")


@contextmanager
def mlflow_basic_auth_server(folder: pathlib.Path, options: str = ""):
    """`mlflow server --app-name basic-auth` as docs/team.md starts it (its configuration
    file, admin and secret key in `folder`; `options`: more lines of its [mlflow] section);
    yields its URL. Users are created with `create_user`."""
    config = folder / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN[0]}\n"
        f"admin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n" + options
    )
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-static-secret-for-the-tests",
    }
    proc, url = start_mlflow(
        f"sqlite:///{folder / 'server.db'}",
        folder / "artifacts",
        options=("--app-name", "basic-auth"),
        env=env,
        log=folder / "server.log",
    )
    try:
        yield url
    finally:
        stop(proc)


def auth_request(url: str, endpoint: str, body: dict, who: tuple[str, str] = ADMIN) -> dict:
    """POST `body` to a basic-auth server's REST `endpoint` as `who`; its JSON answer."""
    import base64
    import json

    pair = base64.standard_b64encode(f"{who[0]}:{who[1]}".encode()).decode()
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{endpoint}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Basic {pair}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"{}")
