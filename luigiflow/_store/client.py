"""The one place that decides which MLflow store luigiflow talks to, and how.

`MLFLOW_TRACKING_URI` wins; otherwise the embedded default is a SQLite file
`mlflow.db` in the working directory (artifacts in `./mlruns`), the same store that
`mlflow ui` started in that folder shows. MLflow's exceptions become luigiflow
errors here (`translate_errors`), nowhere else.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from luigiflow import _settings
from luigiflow._errors import TrackingError
from luigiflow._store import mlflow_compat

if TYPE_CHECKING:
    from mlflow import MlflowClient

_lock = threading.Lock()
_clients: dict[tuple[int, str], MlflowClient] = {}


def tracking_uri() -> str:
    """The tracking URI in force: `MLFLOW_TRACKING_URI` or `sqlite:///<cwd>/mlflow.db`."""
    return _settings.tracking_uri()


def get_client(uri: str | None = None) -> MlflowClient:
    """An MlflowClient for a store (default: the current one), one per process and URI."""
    uri = uri or tracking_uri()
    key = (os.getpid(), uri)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                import mlflow
                from mlflow import MlflowClient

                if uri.startswith(("http://", "https://")):
                    _settings.bound_http_retries()
                # The fluent API (used so user code, autologging and system metrics land
                # on the active run) must point at the same store as our client.
                mlflow.set_tracking_uri(uri)
                client = MlflowClient(tracking_uri=uri)
                if uri.startswith("sqlite:"):
                    mlflow_compat.tune_sqlite(client)
                _clients[key] = client
    return client


@contextlib.contextmanager
def translate_errors(doing: str, uri: str | None = None) -> Iterator[None]:
    """Turn connection failures into a TrackingError that names the server."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:
        if _is_connection_problem(exc):
            raise TrackingError(
                f"cannot reach the MLflow tracking server at {uri or tracking_uri()} while "
                f"{doing}: {type(exc).__name__}; check that it is running and that "
                "MLFLOW_TRACKING_URI is right"
            ) from exc
        raise


def _is_connection_problem(exc: BaseException) -> bool:
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        text = str(exc)
        return "Max retries exceeded" in text or "Connection refused" in text
    return False
