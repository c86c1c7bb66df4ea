"""`luigiflow serve` against bad payloads: every format's column problems are a 400 naming
them, no answer carries internals (stack traces, paths, exception classes), bodies are
capped before they are read, and valid requests and /ping behave as MLflow documents."""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import luigi
import numpy as np
import pytest

import luigiflow as lf
from tests.conftest import REPO, runs_of
from tests.conftest import luigiflow_cli as cli
from tests.servers import luigiflow_serve

pytestmark = pytest.mark.xdist_group("serve")  # one worker holds the module's server

COLUMNS = ["height", "weight", "age"]
LIMIT_MB = 2


class TinyModel(lf.MlflowTask):
    """A scaler and a logistic regression on three raw columns, logged as one bundle."""

    artifacts = {"model": "model.joblib"}
    rows = luigi.IntParameter(default=40)

    def run_task(self) -> None:
        import pandas as pd
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        rng = np.random.default_rng(0)
        frame = pd.DataFrame(
            {
                "height": rng.normal(170, 10, self.rows),
                "weight": rng.normal(70, 10, self.rows),
                "age": rng.integers(20, 60, self.rows),
            }
        )
        target = (frame["height"] > 170).astype(int)
        scaler = StandardScaler().fit(frame)
        model = LogisticRegression().fit(scaler.transform(frame), target)
        self.log_model_bundle([scaler, model], input_example=frame.head(5))
        self.save({"model": model})


def rows(n: int = 3) -> list[dict]:
    return [{"height": 160.0 + 10 * i, "weight": 70.0, "age": 30 + i} for i in range(n)]


@pytest.fixture(scope="module")
def server(template_db: pathlib.Path, tmp_path_factory: pytest.TempPathFactory):
    """One model built and served for the whole module: its tests only send requests, and
    a build plus a server start in subprocesses was most of each test's time."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("serve")
    shutil.copy(template_db, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:  # what `store` sets, for the module
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("LUIGIFLOW_CACHE_DIR", str(folder / "cache"))
        patch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        # Built in a subprocess, as a user would: importing luigiflow.models here would add
        # `models` to the package namespace of this test worker.
        cli("run", "--module", "tests.test_serve_security", "TinyModel", cwd=folder)
        [run] = runs_of(MlflowClient(tracking_uri=uri), "TinyModel", "FINISHED")
        with luigiflow_serve(run.info.run_id, folder, "--max-body-mb", str(LIMIT_MB)) as port:
            yield port


def post(port: int, body: bytes, content_type: str = "application/json"):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


INTERNALS = [
    re.compile(r"Traceback|stack_trace|site-packages|\.py\b|File \""),
    re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception|Invalid)\b"),  # ValueError, MlflowException
    re.compile(r"(?<![\w:])/[\w.-]+/[\w./-]+"),  # an absolute path
]


def internals(text: str) -> list[str]:
    found = [m.group(0) for pattern in INTERNALS for m in pattern.finditer(text)]
    found += [p for p in (sys.prefix, str(REPO)) if p in text]
    return found


def csv_body(records: list[dict]) -> bytes:
    import pandas as pd

    return pd.DataFrame(records).to_csv(index=False).encode()


def parquet_body(records: list[dict]) -> bytes:
    import pandas as pd

    buffer = io.BytesIO()
    pd.DataFrame(records).to_parquet(buffer)
    return buffer.getvalue()


def split(records: list[dict]) -> bytes:
    columns = list(records[0])
    data = [[r[c] for c in columns] for r in records]
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


def payloads(records: list[dict]) -> dict[str, tuple[bytes, str]]:
    """The same rows in every format MLflow's scoring server accepts."""
    return {
        "dataframe_split": (split(records), "application/json"),
        "dataframe_records": (
            json.dumps({"dataframe_records": records}).encode(),
            "application/json",
        ),
        "instances": (json.dumps({"instances": records}).encode(), "application/json"),
        "inputs": (
            json.dumps({"inputs": {c: [r[c] for r in records] for c in records[0]}}).encode(),
            "application/json",
        ),
        "csv": (csv_body(records), "text/csv"),
        "parquet": (parquet_body(records), "application/vnd.apache.parquet"),
    }


@pytest.mark.slow  # a build and a server in subprocesses
def test_every_format_answers_valid_rows_and_names_bad_columns(server):
    problems = []
    expected = None
    for fmt, (body, ctype) in payloads(rows()).items():
        status, text = post(server, body, ctype)
        if status != 200:
            problems.append(f"{fmt} valid: {status} {text[:300]}")
            continue
        predictions = json.loads(text)["predictions"]
        expected = expected or predictions
        if predictions != expected or len(predictions) != 3:
            problems.append(f"{fmt} valid: predictions {predictions} != {expected}")

    extra = [{**r, "favourite_colour": "red"} for r in rows()]
    missing = [{k: v for k, v in r.items() if k != "weight"} for r in rows()]
    wrong = [{**r, "height": "tall"} for r in rows()]
    for label, records, word in [
        ("unexpected", extra, "favourite_colour"),
        ("missing", missing, "weight"),
        ("wrong type", wrong, "height"),
    ]:
        for fmt, (body, ctype) in payloads(records).items():
            status, text = post(server, body, ctype)
            if status != 400 or word not in text or internals(text):
                problems.append(f"{fmt} {label}: {status} {text[:300]} {internals(text)}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow  # a build and a server in subprocesses
def test_malformed_bodies_are_400_without_internals(server):
    deep = b'{"dataframe_split": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    cases = {
        "deep json": (deep, "application/json"),
        "broken json": (b'{"dataframe_split": {"columns": ["height"', "application/json"),
        "not utf-8 json": (b'{"dataframe_records": [{"height": "\xff\xfe"}]}', "application/json"),
        "json list": (b"[1, 2, 3]", "application/json"),
        "no format key": (b'{"rows": []}', "application/json"),
        "two format keys": (
            json.dumps({"instances": rows(), "inputs": rows()}).encode(),
            "application/json",
        ),
        "split not an object": (b'{"dataframe_split": 7}', "application/json"),
        "ragged split": (
            json.dumps(
                {"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0, 3], [1.0]]}}
            ).encode(),
            "application/json",
        ),
        "broken csv": (b'height,weight,age\n1,2,3\n"4,5\n6,7,8,9,10\n', "text/csv"),
        "binary csv": (b"\xff\xfe\x00\x01" * 50, "text/csv"),
        "broken parquet": (b"PAR1 this is not parquet PAR1", "application/vnd.apache.parquet"),
        "truncated parquet": (parquet_body(rows())[:-20], "application/vnd.apache.parquet"),
        "empty": (b"", "application/json"),
    }
    problems = []
    for label, (body, ctype) in cases.items():
        status, text = post(server, body, ctype)
        try:
            message = json.loads(text)["message"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"{label}: body is not our JSON error: {status} {text[:300]}")
            continue
        if status != 400 or not message or internals(text):
            problems.append(f"{label}: {status} {text[:300]} {internals(text)}")
    status, text = post(server, split(rows()), "text/plain")
    if status != 415 or internals(text) or "text/plain" not in text:
        problems.append(f"unsupported content type: {status} {text[:300]}")
    assert not problems, "\n".join(problems)


def raw_request(port: int, head: bytes, body_chunks: list[bytes]) -> tuple[int, bytes]:
    """Send a request by hand (headers, then the body chunks) and read one whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading: its answer still counts
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                return 0, answer
            answer += data
        head_part, _, rest = answer.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head_part.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                break
            rest += data
    return int(head_part.split(b" ", 2)[1]), head_part + b"\r\n\r\n" + rest


@pytest.mark.slow  # a build and a server in subprocesses
def test_oversized_bodies_are_413_before_and_after_sending(server):
    too_big = LIMIT_MB * 2**20 + 1
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(too_big).encode() + b"\r\n\r\n"
    )
    # Only the headers: the answer comes from Content-Length, without waiting for the body.
    status, answer = raw_request(server, head, [])
    assert status == 413, answer[:300]
    assert b"413" in answer and not internals(answer.decode("utf-8", "replace"))
    assert str(LIMIT_MB).encode() in answer.split(b"\r\n\r\n", 1)[1]
    # A client that sends the whole body anyway still reads the 413.
    status, answer = raw_request(server, head, [b" " * 65536] * (too_big // 65536 + 1))
    assert status == 413, answer[:300]
    # Chunked, with no Content-Length: cut off once the limit is passed.
    chunked_head = (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b" " * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    status, answer = raw_request(
        server, chunked_head, [chunk] * (too_big // 65536 + 2) + [b"0\r\n\r\n"]
    )
    assert status == 413, answer[:300]
    # Just under the limit is read in full and answered normally.
    body = json.dumps({"dataframe_records": rows(3)}).encode()
    padded = body[:-1] + b" " * (LIMIT_MB * 2**20 - len(body) - 1) + b"}"
    assert post(server, padded)[0] == 200


@pytest.mark.slow  # a build and a server in subprocesses
def test_ping_and_health_are_mlflows(server):
    for path in ("/ping", "/health"):
        with urllib.request.urlopen(f"http://127.0.0.1:{server}{path}", timeout=30) as r:
            assert r.status == 200 and r.read() == b"\n"


@pytest.mark.slow  # starts a Python process (see scripts/test --fast)
def test_serve_help_names_the_default_body_limit():
    out = subprocess.run(
        [sys.executable, "-m", "luigiflow.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "--max-body-mb" in out.stdout and "32" in out.stdout
