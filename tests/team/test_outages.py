"""The tracking server goes away for a moment (HTTP 503 from a database that is down,
reset connections, a restart): a build rides it out within LUIGIFLOW_OUTAGE_WINDOW and
finishes the task once; a longer outage fails with one line; server-side errors are
named as what they are. A real `mlflow server` behind a fault-injecting proxy on
127.0.0.1 (tests/counting_proxy.py) that answers instead of forwarding while on.
"""

from __future__ import annotations

import json
import pathlib
import time

import pytest

from tests.counting_proxy import Fault, counting_proxy
from tests.servers import shared_mlflow
from tests.team import tasks

pytestmark = [pytest.mark.xdist_group("servers"), pytest.mark.slow]

RETRY_VARIABLES = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
)
UNAVAILABLE = json.dumps(
    {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "(psycopg2.OperationalError) ..."}
).encode()


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return shared_mlflow(request.config, tmp_path_factory)[0]


@pytest.fixture
def proxied(server, store, monkeypatch, tmp_path: pathlib.Path):
    """(proxy URL, recorder): this process's builds reach the server through the proxy."""
    for name in RETRY_VARIABLES:  # luigiflow's own defaults, not a user's choice
        monkeypatch.delenv(name, raising=False)
    with counting_proxy(server) as (url, recorder):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield url, recorder
    tasks.BODY_HOOKS.clear()


def _fault_mid_task(recorder, fault: Fault, seconds: float) -> None:
    def start() -> None:
        fault.until = time.monotonic() + seconds
        recorder.fault = fault

    tasks.BODY_HOOKS.append(start)


def _runs(client_url: str, task) -> list:
    from mlflow import MlflowClient

    from tests.conftest import runs_of

    return [
        r
        for r in runs_of(MlflowClient(tracking_uri=client_url), "Outaged")
        if r.data.tags["luigiflow.identity"] == task.identity
    ]


def _finished(client_url: str, task) -> list:
    return [r for r in _runs(client_url, task) if r.info.status == "FINISHED"]


@pytest.mark.parametrize("status", [503, 0], ids=["http-503", "connection-reset"])
def test_a_short_outage_mid_task_is_ridden_out(proxied, server, monkeypatch, status):
    import luigiflow as lf

    _url, recorder = proxied
    monkeypatch.setenv("LUIGIFLOW_OUTAGE_WINDOW", "60")
    fault = Fault(status, UNAVAILABLE)
    _fault_mid_task(recorder, fault, 5.0)
    task = tasks.Outaged(label=f"short-{status}")
    result = lf.build([task])
    assert result.executed == [task]
    assert fault.answered > 0  # the outage was met, and outlasted
    assert len(_finished(server, task)) == 1


def test_an_outage_longer_than_the_window_fails_in_one_line(proxied, server, monkeypatch):
    import luigiflow as lf

    _url, recorder = proxied
    monkeypatch.setenv("LUIGIFLOW_OUTAGE_WINDOW", "1")
    _fault_mid_task(recorder, Fault(503, UNAVAILABLE), 600.0)
    task = tasks.Outaged(label="long")
    with pytest.raises(lf.BuildError) as caught:
        lf.build([task])
    [error] = caught.value.failures.values()
    assert isinstance(error, lf.TrackingError), error
    text = str(error)
    assert "HTTP 503" in text and "LUIGIFLOW_OUTAGE_WINDOW" in text, text
    assert _finished(server, task) == []
    # The outage kept the run from being marked: it is left RUNNING with a fresh
    # heartbeat. The next build in this process retires it at once (its worker, this
    # process's earlier build, is gone), not after the lease.
    tasks.BODY_HOOKS.clear()
    recorder.fault = None
    [left] = _runs(server, task)
    assert left.info.status == "RUNNING"
    monkeypatch.setenv("LUIGIFLOW_STALE_AFTER_S", "3600")
    assert lf.build([task]).executed == [task]
    retired = {r.info.run_id: r for r in _runs(server, task)}[left.info.run_id]
    assert retired.info.status == "KILLED"
    assert "is gone" in retired.data.tags["luigiflow.error"], retired.data.tags
    assert len(_finished(server, task)) == 1


NO_SPACE = json.dumps(
    {"error_code": "INTERNAL_ERROR", "message": "[Errno 28] No space left on device"}
).encode()
DENIED = json.dumps({"error_code": "PERMISSION_DENIED", "message": "Permission denied"}).encode()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault(500, NO_SPACE, path_contains="mlflow-artifacts"), "is out of disk space"),
        (Fault(403, DENIED, path_contains="runs/create"), "denied this user permission"),
        (Fault(403, DENIED, path_contains="runs/search"), "denied this user permission"),
    ],
    ids=["artifact-disk-full", "create-forbidden", "read-forbidden"],
)
def test_server_errors_are_named_as_what_they_are(proxied, monkeypatch, fault, expected):
    import luigiflow as lf

    _url, recorder = proxied
    monkeypatch.setenv("LUIGIFLOW_OUTAGE_WINDOW", "0")  # a server error is no outage
    recorder.fault = fault
    with pytest.raises(lf.LuigiflowError) as caught:
        lf.build([tasks.Outaged(label=f"named-{fault.path_contains}")])
    error = caught.value
    if isinstance(error, lf.BuildError):
        [error] = error.failures.values()
    assert isinstance(error, lf.TrackingError), error
    assert expected in str(error) and "cannot reach" not in str(error), error
    assert fault.answered > 0


def test_credentials_in_the_tracking_uri_are_masked(store, tmp_path):
    import os

    from tests.conftest import luigiflow_cli
    from tests.servers import free_port

    uri = f"http://alice:S3cretPassw0rd@127.0.0.1:{free_port()}"
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    out = luigiflow_cli("run", "--module", "tests.dags", "Leaf", cwd=tmp_path, env=env, check=False)
    assert out.returncode == 1
    assert "S3cretPassw0rd" not in out.stdout + out.stderr
    assert "alice:<redacted>@127.0.0.1" in out.stderr, out.stderr


def test_a_run_a_dead_client_left_running_is_retired_at_once_by_its_successor(
    proxied, server, monkeypatch, tmp_path
):
    """A client process on this host fails in an outage that keeps it from marking its
    run; the next client here (another process) retires that run at once (its worker's
    pid is gone), not after the run's lease."""
    import os
    import threading

    import luigiflow as lf
    from tests.conftest import luigiflow_cli

    _url, recorder = proxied
    created = "POST /api/2.0/mlflow/runs/create"
    stop = threading.Event()

    def outage_once_the_run_exists() -> None:
        while not stop.is_set() and recorder.endpoints()[created] == 0:
            time.sleep(0.01)
        recorder.fault = Fault(503, UNAVAILABLE)

    watcher = threading.Thread(target=outage_once_the_run_exists, daemon=True)
    watcher.start()
    env = dict(os.environ, LUIGIFLOW_OUTAGE_WINDOW="3")
    out = luigiflow_cli(
        "run", "--module", "tests.team.tasks", "Outaged", "--label", "orphan",
        cwd=tmp_path, env=env, check=False, timeout=300,
    )  # fmt: skip
    stop.set()
    watcher.join()
    recorder.fault = None
    assert out.returncode == 1, out.stdout + out.stderr
    task = tasks.Outaged(label="orphan")
    [left] = _runs(server, task)
    assert left.info.status == "RUNNING"  # the outage kept its client from marking it

    # Bounded: without the pid check the rebuild would wait out this lease, then retire
    # the run for its silence ("no heartbeat"), not for its gone worker.
    monkeypatch.setenv("LUIGIFLOW_STALE_AFTER_S", "120")
    assert lf.build([task]).executed == [task]
    retired = {r.info.run_id: r for r in _runs(server, task)}[left.info.run_id]
    assert retired.info.status == "KILLED"
    assert "is gone" in retired.data.tags["luigiflow.error"], retired.data.tags
    assert len(_finished(server, task)) == 1
