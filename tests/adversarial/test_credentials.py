"""A password given in the tracking URI (http://alice:PASSWORD@host) is in no message
luigiflow prints: the unreachable-server line, any error naming the store, and the
scrubbed texts it writes (where it may appear decoded, apart from its URL)."""

from __future__ import annotations

import pickle
import socket

import pytest

from luigiflow._core import redaction
from luigiflow._errors import TrackingError
from tests.adversarial.cli_inprocess import read_command

PASSWORD = "Hunter%402-pw"  # URL-encoded, as a URI must carry an "@"
DECODED = "Hunter@2-pw"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_unreachable_server_line_masks_the_password(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    uri = f"http://alice:{PASSWORD}@127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "0" if "RETRIES" in name else "5")  # restored afterwards
    for command in (["runs", "Anything"], ["show", "0" * 32], ["ui"]):
        code, out, err = read_command(capsys, *command)
        assert code == 1, (command, out, err)
        [line] = err.strip().splitlines()
        assert line.startswith("TrackingError: ") and "alice:<redacted>@127.0.0.1" in line
        assert PASSWORD not in out + err and DECODED not in out + err


def test_every_error_and_scrubbed_text_masks_uri_passwords(monkeypatch):
    uri = f"postgresql://bob:{PASSWORD}@db:5432/mlflow"
    error = TrackingError(f"cannot reach {uri} while starting")
    assert str(error) == "cannot reach postgresql://bob:<redacted>@db:5432/mlflow while starting"
    assert PASSWORD not in str(pickle.loads(pickle.dumps(error)))  # across worker processes
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # A database driver's own words carry the password decoded and without its URL.
    text = f'FATAL: password "{DECODED}" for user "bob" rejected; url {uri}'
    scrubbed = redaction.scrub(text, redaction.secret_values())
    assert DECODED not in scrubbed and PASSWORD not in scrubbed


@pytest.mark.parametrize("uri", ["http://:tok3nvalue@h", "https://u:p4ss@h/x?y=1"])
def test_an_empty_user_or_a_path_after_the_host_is_masked_too(uri):
    assert "<redacted>@h" in str(TrackingError(uri))
