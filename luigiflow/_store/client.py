"""The one place that decides which MLflow store luigiflow talks to, and how.

`MLFLOW_TRACKING_URI` wins; otherwise the embedded default is a SQLite file
`mlflow.db` in the working directory (artifacts in `./mlruns`), the same store that
`mlflow ui` started in that folder shows. MLflow's exceptions become luigiflow
errors here (`translate_errors`), nowhere else.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import pathlib
import re
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from luigiflow import _settings
from luigiflow._errors import TrackingError, mask_credentials
from luigiflow._store import mlflow_compat, sqlite_file

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Reentrant: a Ctrl-C handler (marking runs KILLED) may ask for a client while the main
# thread it interrupted is inside this lock opening one; a plain lock waited for itself.
_lock = threading.RLock()
_clients: dict[tuple[int, str], MlflowClient] = {}
_read_only: dict[str, pathlib.Path] = {}  # tracking URI -> its SQLite file opened read-only


def tracking_uri() -> str:
    """The tracking URI in force: `MLFLOW_TRACKING_URI` or `sqlite:///<cwd>/mlflow.db`."""
    return _settings.tracking_uri()


def get_client(uri: str | None = None) -> MlflowClient:
    """An MlflowClient for a store (default: the current one), one per process and URI."""
    uri = uri or tracking_uri()
    key = (os.getpid(), uri)
    client = _clients.get(key)
    if client is None:
        # Import MLflow before taking the lock: importing it runs luigiflow's import hook
        # (_store/active_run.py), which joins a run to MLflow's fluent stack and asks for
        # this client again; under the lock that second call waited for itself forever.
        import mlflow  # noqa: F401

        with _lock:
            client = _clients.get(key)
            if client is None:
                if uri.startswith(("http://", "https://")):
                    _settings.bound_http_retries()
                    _settings.download_through_server()
                db = sqlite_file.sqlite_path(uri)
                client = _open(uri) if db is None else _open_sqlite(uri, db)
                _clients[key] = client
    return client


def _open(uri: str) -> MlflowClient:
    import mlflow
    from mlflow import MlflowClient

    # The fluent API (used so user code, autologging and system metrics land on the
    # active run) must point at the same store as our client.
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _open_sqlite(uri: str, db: pathlib.Path) -> MlflowClient:
    """Open the embedded store: judged, created and migrated under its creation lock."""
    read_only = sqlite_file.is_read_only(db)
    with sqlite_file.creation_lock(db):
        sqlite_file.judge(db)
        if read_only and not db.exists():
            raise sqlite_file.read_only_error(db, "creating a new store")
        if not db.exists():
            sqlite_file.announce_new_store(db)
        sqlite_file.refuse_silent_migration(db, uri, read_only)
        if read_only:
            mlflow_compat.allow_sqlite_uri_filenames()
            _read_only[uri] = db
        try:
            with mlflow_compat.quiet_migrations():
                client = _open(sqlite_file.read_only_uri(db) if read_only else uri)
                mlflow_compat.open_store(client)  # MLflow creates and migrates it here
        except Exception as exc:
            broken = sqlite_file.broken_store_error(db, exc)
            if broken is not None:
                raise broken from exc
            raise
        if not read_only:
            mlflow_compat.tune_sqlite(client)
    return client


def is_read_only(uri: str) -> bool:
    """The store at `uri` is an SQLite file this process can only read.

    Judged from the file system, without opening the store: a no-op build on a store
    that reads without MLflow (see `sqlite_reads`) must not import mlflow for this.
    """
    db = sqlite_file.sqlite_path(uri)
    return uri in _read_only or (db is not None and sqlite_file.is_read_only(db))


def refuse_writes_if_read_only(uri: str, doing: str) -> None:
    """Say "read-only store" in one line before a write that could not succeed.

    Judged from the file system: an existing store that luigiflow writes in SQL needs no
    MLflow client (whose import costs more than executing a small task); a store that
    does not exist yet is created and migrated by MLflow here."""
    db = sqlite_file.sqlite_path(uri)
    if db is None:
        return
    if not db.exists() and not sqlite_file.is_read_only(db):
        get_client(uri)
    if uri in _read_only or sqlite_file.is_read_only(db):
        raise sqlite_file.read_only_error(db, doing)


def flush_async_logging(uri: str) -> None:
    """Values user code logged through MLflow with `synchronous=False` reach the store
    (nothing to do where nothing imported mlflow)."""
    if "mlflow" in sys.modules:
        mlflow_compat.flush_async_logging(get_client(uri))


@contextlib.contextmanager
def translate_errors(doing: str, uri: str | None = None) -> Iterator[None]:
    """Turn connection failures into a TrackingError that names the server."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:
        db = sqlite_file.sqlite_path(uri or tracking_uri())
        if db is not None:
            if "readonly database" in str(exc):
                raise sqlite_file.read_only_error(db, doing) from exc
            broken = sqlite_file.broken_store_error(db, exc)
            if broken is not None:
                raise broken from exc
        named = server_error(exc, shown_uri(uri or tracking_uri()), doing)
        if named is not None:
            raise named from exc
        if _is_connection_problem(exc):
            shown = shown_uri(uri or tracking_uri())
            raise TrackingError(
                f"cannot reach the MLflow tracking server at {shown} "
                f"while {doing}: {type(exc).__name__}; check that it is running and that "
                "MLFLOW_TRACKING_URI is right" + _outage_note()
            ) from exc
        raise


def shown_uri(uri: str) -> str:
    """The URI with a password in it masked: messages are printed and stored."""
    return mask_credentials(uri)


def _outage_note() -> str:
    """How long requests were retried, when a server that had answered went away."""
    if not _settings.riding_out():
        return ""
    return f" (retried for {_settings.OUTAGE_WINDOW_S}={_settings.outage_window():g} s)"


def credentials() -> tuple[str | None, str | None]:
    """MLflow's username and password, as its client finds them: the environment first,
    then ~/.mlflow/credentials."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or None
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or None
    path = os.path.expanduser("~/.mlflow/credentials")
    if (user is None or password is None) and os.path.exists(path):
        config = configparser.ConfigParser()
        config.read(path)
        if "mlflow" in config:
            user = user or config["mlflow"].get("mlflow_tracking_username")
            password = password or config["mlflow"].get("mlflow_tracking_password")
    return user, password


# MLflow's client retries HTTP 408/429/5xx and then reports only the last status
# ("too many 503 error responses"), not the server's message; other answers it reports
# as "failed with error code 401 != 200".
_RETRIED_STATUS = re.compile(r"too many (\d{3}) error responses|error code (\d{3}) != 200")


def server_error(exc: BaseException, uri: str, doing: str) -> TrackingError | None:
    """A server-side failure named as what it is (disk full, login, permission,
    unavailable, an internal error), not as a server that cannot be reached; None for
    anything else."""
    text = str(exc)
    code = str(getattr(exc, "error_code", "") or "")
    found = _RETRIED_STATUS.search(text)
    status = int(found.group(1) or found.group(2)) if found else 403 if "HTTP 403" in text else 0
    return status_error(status, code, text, uri, doing)


# The permission MLflow's basic-auth app checks for what luigiflow was doing: reads need
# READ, deleting a run MANAGE, every other write (a run, its tags, results, files) EDIT.
_READING = ("reading", "listing", "looking up", "fetching", "downloading", "checking")
_EXPERIMENT = re.compile(r"experiment ('[^']*')")


def _permission_for(doing: str) -> str:
    if doing.startswith("deleting"):
        return "MANAGE"
    return "READ" if doing.startswith(_READING) else "EDIT"


def login_error(uri: str, doing: str) -> TrackingError:
    """HTTP 401: the server wants a login this process did not give, or refused it."""
    user, password = credentials()
    if user and password:
        refused = f"refused the password of user {user!r}"
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        refused = "refused the token in MLFLOW_TRACKING_TOKEN"
    else:
        refused = "asks for a login, and none was given"
    return TrackingError(
        f"the MLflow tracking server at {uri} {refused} (HTTP 401) while {doing}; set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to your account on that "
        "server (its admin creates accounts)"
    )


def _denied_error(uri: str, doing: str) -> TrackingError:
    """HTTP 403: the user lacks MLflow's permission for this on an experiment."""
    user = credentials()[0] or "this user"
    permission = _permission_for(doing)
    named = _EXPERIMENT.search(doing)
    where = f"experiment {named.group(1)}" if named else "the experiment concerned"
    return TrackingError(
        f"the MLflow tracking server at {uri} denied {user} permission while {doing} "
        f"(HTTP 403 PERMISSION_DENIED); ask for {permission} permission on {where}: a user "
        "with MANAGE permission on it (whoever created it has it) or an admin of the "
        "server can grant it"
    )


def status_error(
    status: int, code: str, message: str, uri: str, doing: str
) -> TrackingError | None:
    """The one line for a server's error answer (`status`, MLflow `code`), or None when
    the answer names nothing more precise than "refused"."""
    if "No space left" in message or "Errno 28" in message:
        return TrackingError(
            f"the MLflow tracking server at {uri} is out of disk space (No space left on "
            f"device) while {doing}; free space where it keeps artifacts "
            "(--artifacts-destination) and its database"
        )
    if status == 401 or code == "UNAUTHENTICATED":
        return login_error(uri, doing)
    if status == 403 or code == "PERMISSION_DENIED":
        return _denied_error(uri, doing)
    if status in (502, 503, 504):
        return TrackingError(
            f"the MLflow tracking server at {uri} answered HTTP {status} (unavailable: its "
            f"database or a proxy before it is down) while {doing}{_outage_note()}; see "
            "the server's log, then build again"
        )
    if status >= 500:
        return TrackingError(
            f"the MLflow tracking server at {uri} failed with HTTP {status} while {doing} "
            "(an error inside the server: a full disk where it keeps artifacts or its "
            "database, or a database it cannot write); see the server's log"
        )
    return None


def _is_connection_problem(exc: BaseException) -> bool:
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        text = str(exc)
        return "Max retries exceeded" in text or "Connection refused" in text
    return False
