"""The REST read path gives the same answers as MLflow's client against a real `mlflow
server`, sends what MLflow's client sends for MLflow's auth and TLS settings, batches
completion, and fails in one line, soon, on a server that does not answer."""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import pickle
import socket
import ssl
import subprocess
import sys
import threading
import uuid

import pytest

from luigiflow._errors import ConfigError, TrackingError
from luigiflow._store import current, rest_reads
from luigiflow._store.mlflow_store import MlflowStore
from tests.conftest import REPO, add_run
from tests.counting_proxy import Seen, counting_proxy
from tests.dags import Fan
from tests.servers import free_port, shared_mlflow
from tests.store.mixed import assert_same_reads, populate

pytestmark = [pytest.mark.xdist_group("servers"), pytest.mark.slow]

UNREACHABLE = "cannot reach the MLflow tracking server at"
NO_MLFLOW = (
    "import sys\nfrom luigiflow.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    assert not exc.code, exc\n"
    "print('MLFLOW' if 'mlflow' in sys.modules else 'CLEAN')"
)


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The shared tracking server (tests/servers.py): its experiments here are this
    module's own (Fan, Source, tests.dags' Leaf of size 11, `late-...`)."""
    return shared_mlflow(request.config, tmp_path_factory)[0]


def server_env(url: str, tmp_path: pathlib.Path) -> dict[str, str]:
    return dict(
        os.environ,
        MLFLOW_TRACKING_URI=url,
        LUIGIFLOW_CACHE_DIR=str(tmp_path / "cache"),
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )


def test_every_read_matches_mlflows_client(server: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(rest_reads, "FIRST_PAGE", 3)  # listings take several pages
    populate(MlflowStore(server))
    ours = current.get_store(server)
    assert isinstance(ours, rest_reads.RestStore)
    assert_same_reads(ours, MlflowStore(server))
    exp = ours.experiment_id("Fan")
    assert exp is not None
    pages = {}
    for store in (ours, MlflowStore(server)):  # small pages, followed by their tokens
        walked, token = [], None
        while True:
            page = store._search([exp], "", "paging", True, max_results=3, page_token=token)
            walked += [r.info.run_id for r in page]
            if not (token := page.token):
                break
        pages[type(store)] = walked
    assert len(pages) == 2 and len(set(map(tuple, pages.values()))) == 1
    assert len(next(iter(pages.values()))) > 6
    copy = pickle.loads(pickle.dumps(ours))  # travels to spawned workers
    assert copy.experiment_id("Fan") == ours.experiment_id("Fan")


def test_runs_by_id_are_found_in_experiments_made_after_the_store_looked(server: str):
    writer = MlflowStore(server)
    ours = rest_reads.RestStore(server)
    early = add_run(writer, Fan(index=200))
    assert ours.get_runs([early.info.run_id, "f" * 32]).keys() == {early.info.run_id}
    late_exp = writer.client.create_experiment(f"late-{uuid.uuid4().hex}")
    late = writer.create_run(late_exp, "late", {})
    both = ours.get_runs([early.info.run_id, late.info.run_id])
    assert both.keys() == {early.info.run_id, late.info.run_id}
    assert both[late.info.run_id].info.experiment_id == late_exp


def test_a_no_op_build_and_queries_do_not_import_mlflow(server: str, tmp_path: pathlib.Path):
    env = server_env(server, tmp_path)
    build = ["run", "--module", "tests.dags", "Leaf", "--size", "11"]
    first = subprocess.run(
        [sys.executable, "-m", "luigiflow.cli", *build],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "executed 3" in first.stdout, first.stdout + first.stderr
    run_id = first.stdout.split("luigiflow show ")[-1].split()[0]
    for args in (
        build,
        ["plan", "--module", "tests.dags", "Leaf", "--size", "11"],
        ["runs", "Leaf", "--limit", "20"],
        ["show", run_id],
        ["show", run_id[:8]],
    ):
        out = subprocess.run(
            [sys.executable, "-c", NO_MLFLOW, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.strip().endswith("CLEAN"), (args, out.stdout[-2000:])


def test_completion_of_many_finished_tasks_takes_a_few_requests(server: str):
    from luigiflow._engine.completion import Completion

    tasks = [Fan(index=100 + i) for i in range(30)]
    writer = MlflowStore(server)
    for task in tasks:
        add_run(writer, task)
    with counting_proxy(server) as (url, recorder):
        completion = Completion(rest_reads.RestStore(url))
        completion.prefetch(tasks)
        assert all(completion.find_finished_run(t) is not None for t in tasks)
        # one experiment lookup and one page of its FINISHED runs, whatever the number
        assert recorder.count() <= 2, recorder.endpoints()


@pytest.mark.parametrize(
    "variables",
    [
        {"MLFLOW_TRACKING_USERNAME": "ann", "MLFLOW_TRACKING_PASSWORD": "pä:ss"},
        {"MLFLOW_TRACKING_TOKEN": "tok-123"},
        {
            "MLFLOW_TRACKING_USERNAME": "ann",
            "MLFLOW_TRACKING_PASSWORD": "pw",
            "MLFLOW_TRACKING_TOKEN": "tok-123",
        },
        {"credentials file": "ann\npw"},
        {},
    ],
)
def test_the_server_gets_the_authorization_mlflows_client_sends(
    server: str, variables: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path
):
    for name in ("USERNAME", "PASSWORD", "TOKEN"):
        monkeypatch.delenv(f"MLFLOW_TRACKING_{name}", raising=False)
    monkeypatch.delenv("MLFLOW_WORKSPACE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in variables.items():
        if name == "credentials file":
            user, password = value.split("\n")
            (tmp_path / ".mlflow").mkdir()
            (tmp_path / ".mlflow" / "credentials").write_text(
                f"[mlflow]\nmlflow_tracking_username = {user}\n"
                f"mlflow_tracking_password = {password}\n"
            )
        else:
            monkeypatch.setenv(name, value)
    with counting_proxy(server) as (url, recorder):
        rest_reads.RestStore(url).experiments()
        MlflowStore(url).experiments()

    def sent(seen: Seen) -> dict[str, str | None]:
        headers = {k.lower(): v for k, v in seen.headers.items()}
        return {k: headers.get(k) for k in ("authorization", "x-mlflow-workspace")}

    ours, theirs = (sent(s) for s in recorder.seen)
    assert ours == theirs
    assert any(ours.values()) == bool(variables)


def test_an_auth_plugin_setting_is_read_through_mlflows_client(monkeypatch):
    url = "http://127.0.0.1:5000"
    assert rest_reads.usable(url)
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "some_plugin")
    assert not rest_reads.usable(url)
    assert not rest_reads.usable("sqlite:///x.db")


# ----- TLS: a tiny HTTPS server on 127.0.0.1 with a self-signed certificate -----------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(folder / "key.pem"),
            "-out",
            str(folder / "cert.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    both = folder / "both.pem"
    both.write_text((folder / "cert.pem").read_text() + (folder / "key.pem").read_text())
    return both


class _Experiments(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        default = {"experiment_id": "0", "name": "Default", "lifecycle_stage": "active"}
        body = json.dumps({"experiments": [default]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _https(certificate: pathlib.Path, client_cert: bool) -> tuple[str, http.server.HTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Experiments)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate)
    if client_cert:  # mutual TLS: the client must show the same (self-signed) certificate
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"https://127.0.0.1:{server.server_address[1]}", server


def test_mlflows_tls_settings_are_honoured(certificate, monkeypatch):
    for name in ("SERVER_CERT_PATH", "CLIENT_CERT_PATH", "INSECURE_TLS"):
        monkeypatch.delenv(f"MLFLOW_TRACKING_{name}", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url, server = _https(certificate, client_cert=False)
    try:
        with pytest.raises(TrackingError, match="TLS with the MLflow tracking server at https"):
            rest_reads.RestStore(url).experiments()
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(certificate))
        assert [e.name for e in rest_reads.RestStore(url).experiments()] == ["Default"]
        monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
        with pytest.raises(ConfigError, match="MLFLOW_TRACKING_INSECURE_TLS"):
            rest_reads.RestStore(url).experiments()
        monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
        assert [e.name for e in rest_reads.RestStore(url).experiments()] == ["Default"]
    finally:
        server.shutdown()
    url, server = _https(certificate, client_cert=True)
    try:
        with pytest.raises(TrackingError, match=url):
            rest_reads.RestStore(url).experiments()
        monkeypatch.setenv("MLFLOW_TRACKING_CLIENT_CERT_PATH", str(certificate))
        assert [e.name for e in rest_reads.RestStore(url).experiments()] == ["Default"]
    finally:
        server.shutdown()


# ----- a server that does not answer ----------------------------------------------------


def test_an_unreachable_server_is_one_line_naming_it(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError) as caught:
        rest_reads.RestStore(url).experiment_id("Leaf")
    assert str(caught.value).startswith(f"{UNREACHABLE} {url}")
    # MLflow's own retry settings unset: luigiflow's bounded defaults apply.
    env = {k: v for k, v in server_env(url, tmp_path).items() if "HTTP_REQUEST" not in k}
    for args in (["runs", "Leaf"], ["show", "0123abcd"], ["run", "--module", "tests.dags", "Leaf"]):
        out = subprocess.run(
            [sys.executable, "-m", "luigiflow.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,  # far below MLflow's own retry budget (about 4 minutes)
        )
        assert out.returncode == 1
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert lines[0].startswith(f"TrackingError: {UNREACHABLE} {url}")


def test_a_server_that_accepts_but_never_answers_times_out(monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # the kernel accepts connections; nothing ever answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    try:
        with pytest.raises(TrackingError, match=f"{UNREACHABLE} {url}"):
            rest_reads.RestStore(url).experiments()
    finally:
        listener.close()


def test_a_server_that_is_not_mlflow_is_named(tmp_path):
    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>login</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(TrackingError, match="no MLflow JSON") as caught:
            rest_reads.RestStore(url).experiment_id("Leaf")
        assert url in str(caught.value) and "\n" not in str(caught.value)
    finally:
        server.shutdown()
