"""Only helpful output: commands that work as printed, no false messages."""

from __future__ import annotations

import os

import pytest

from tests.conftest import luigiflow_cli as cli
from tests.servers import free_port

pytestmark = pytest.mark.slow  # starts servers or subprocesses (see scripts/test --fast)


def test_ui_with_a_server_uri_where_nothing_answers(store, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    out = cli("ui", cwd=tmp_path, check=False, env=dict(os.environ, MLFLOW_TRACKING_URI=uri))
    assert out.returncode == 1
    assert "already a server" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("TrackingError:")
    assert uri in lines[0] and "MLFLOW_TRACKING_URI" in lines[0]
