"""Proxied S3 artifacts, as docs/team.md sets them up: `mlflow server
--artifacts-destination s3://bucket` (proxied mode) in front of an S3 emulator (moto's
server) that only the tracking server can reach, as an object store on the server's
private network. Clients have no AWS credentials and cannot resolve the object store's
host name: every file must go through the tracking server.

MLflow 3.17's client downloads through presigned URLs of the object store whenever the
server offers them (its /server-info says so for an S3 destination); a client that
cannot reach the object store then failed every download ("Failed to download artifacts
from path 'raw.npy'").
"""

from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from tests.counting_proxy import counting_proxy
from tests.servers import S3_CREDENTIALS, moto_s3, start_mlflow, stop

pytestmark = [pytest.mark.xdist_group("servers"), pytest.mark.slow]

BUCKET = "team-artifacts"
# Only the tracking server reaches the object store, by this name through its HTTP proxy
# (RFC 6761: .invalid never resolves, so a client handed a URL with it cannot connect).
PRIVATE_HOST = "s3.luigiflow.invalid"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(tracking server URL, emulator URL): `mlflow server` proxying s3://BUCKET."""
    folder = tmp_path_factory.mktemp("s3-server")
    with moto_s3(BUCKET) as s3, counting_proxy(s3) as (gateway, _recorder):
        port = s3.rpartition(":")[2]
        env = {
            **S3_CREDENTIALS,
            "MLFLOW_S3_ENDPOINT_URL": f"http://{PRIVATE_HOST}:{port}",
            "HTTP_PROXY": gateway,
            "http_proxy": gateway,
            "NO_PROXY": "",
            "no_proxy": "",
        }
        proc, url = start_mlflow(
            f"sqlite:///{folder / 'server.db'}",
            f"s3://{BUCKET}",
            env=env,
            log=folder / "server.log",
        )
        try:
            yield url, s3
        finally:
            stop(proc)


def _client_env(url: str, tmp_path: pathlib.Path) -> dict[str, str]:
    """A client's environment: the tracking URI, no AWS credentials or profile, and no
    MLflow download setting of its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k != "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"
    }
    env.update(MLFLOW_TRACKING_URI=url, HOME=str(tmp_path / "home"))
    env["LUIGIFLOW_CACHE_DIR"] = str(tmp_path / "cache")
    return env


def _object(s3: str, suffix: str) -> bytes:
    import boto3

    bucket = boto3.client(
        "s3",
        endpoint_url=s3,
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    [key] = [k for k in keys if k.endswith(suffix)]
    return bucket.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_a_chain_loads_proxied_s3_artifacts_without_s3_access(s3_server, store, tmp_path):
    url, s3 = s3_server
    command = ["run", "--module", "tests.team.artifact_tasks", "Doubled", "--size", "7"]
    done = subprocess.run(
        [sys.executable, "-m", "luigiflow.cli", *command],
        cwd=tmp_path,
        env=_client_env(url, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "executed 2, reused 0, failed 0" in done.stdout, done.stdout
    # Both results live in the bucket, and the downstream one was computed from the
    # upstream file it downloaded through the tracking server.
    assert np.array_equal(np.load(io.BytesIO(_object(s3, "/raw.npy"))), np.arange(7))
    doubled = np.load(io.BytesIO(_object(s3, "/doubled.npy")))
    assert np.array_equal(doubled, np.arange(7) * 2)
