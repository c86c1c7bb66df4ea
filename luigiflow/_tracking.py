"""The one place that decides which MLflow store luigiflow talks to.

`MLFLOW_TRACKING_URI` wins; otherwise the embedded default is a SQLite file
`mlflow.db` in the working directory (artifacts in `./mlruns`), the same store that
`mlflow ui` started in that folder shows.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from luigiflow._errors import TrackingError

if TYPE_CHECKING:
    from mlflow import ActiveRun, MlflowClient

_lock = threading.Lock()
_clients: dict[tuple[int, str], MlflowClient] = {}
_experiment_ids: dict[tuple[str, str], str] = {}


def tracking_uri() -> str:
    """The tracking URI in force: `MLFLOW_TRACKING_URI` or `sqlite:///<cwd>/mlflow.db`."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return "sqlite:///" + os.path.join(os.getcwd(), "mlflow.db")


def get_client() -> MlflowClient:
    """An MlflowClient for the current store, one per process and URI."""
    uri = tracking_uri()
    key = (os.getpid(), uri)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                import mlflow
                from mlflow import MlflowClient

                # The fluent API (used so user code, autologging and system metrics land
                # on the active run) must point at the same store as our client.
                mlflow.set_tracking_uri(uri)
                client = MlflowClient(tracking_uri=uri)
                if uri.startswith("sqlite:"):
                    _tune_sqlite(client)
                _clients[key] = client
    return client


def _tune_sqlite(client: MlflowClient) -> None:
    """Put the embedded store in WAL mode with synchronous=NORMAL.

    WAL lets readers (completion checks of other workers, `mlflow ui`) proceed while a
    worker writes, and NORMAL drops an fsync per commit: about a quarter of the cost of
    recording a run. A crash of the process loses nothing; a power cut may lose the
    last commits, which at worst makes a finished task run again.
    """
    from sqlalchemy import event

    engine = getattr(getattr(client._tracking_client, "store", None), "engine", None)
    if engine is None or getattr(engine, "_luigiflow_tuned", False):
        return

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine._luigiflow_tuned = True
    engine.dispose()  # pooled connections opened before the listener reconnect with it


def experiment_id(name: str, create: bool) -> str | None:
    """The id of the experiment `name`; created when missing and `create` is true."""
    uri = tracking_uri()
    cached = _experiment_ids.get((uri, name))
    if cached is not None:
        return cached
    client = get_client()
    with translate_errors(f"looking up experiment {name!r}"):
        exp = client.get_experiment_by_name(name)
        if exp is not None and exp.lifecycle_stage == "deleted":
            if not create:
                return None
            client.restore_experiment(exp.experiment_id)
        if exp is None:
            if not create:
                return None
            exp_id = _create_experiment(client, name)
        else:
            exp_id = exp.experiment_id
    _experiment_ids[(uri, name)] = exp_id
    return exp_id


def _create_experiment(client: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.create_experiment(name))
    except MlflowException:
        # Another worker created it between our lookup and our create.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def forget_experiments() -> None:
    """Drop cached experiment ids (tests switch stores between cases)."""
    _experiment_ids.clear()
    _clients.clear()


_context: tuple[int, dict[str, str]] | None = None


def start_run(experiment_id: str, run_name: str, tags: dict[str, str]) -> ActiveRun:
    """Create a run and make it MLflow's active run, as `mlflow.start_run` does.

    `mlflow.start_run` re-resolves MLflow's context tags (user, source, git) and probes
    for Databricks on every call: about 1 ms a run, for values that never change within
    a process. They are resolved once here and the run joins the fluent run stack, so
    `mlflow.log_*` and autologging in user code land on it. Where that stack is not
    what this MLflow keeps, or system metrics are on (start_run starts their monitor),
    `mlflow.start_run` itself is used.
    """
    global _context
    import mlflow
    from mlflow.tracking import fluent

    stack_var = getattr(fluent, "_active_run_stack", None)
    active_run_class = getattr(fluent, "ActiveRun", None)
    stack = stack_var.get() if stack_var is not None and hasattr(stack_var, "get") else None
    system_metrics = os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").lower()
    if not isinstance(stack, list) or active_run_class is None or system_metrics in ("true", "1"):
        return mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            tags=tags,
            nested=mlflow.active_run() is not None,
        )
    if _context is None or _context[0] != os.getpid():
        from mlflow.tracking.context.registry import resolve_tags

        _context = (os.getpid(), resolve_tags({}))
    all_tags = {**_context[1], **tags}
    if stack:  # a run is active (build() called inside one): ours nests under it
        all_tags["mlflow.parentRunId"] = stack[-1].info.run_id
    run = get_client().create_run(experiment_id, tags=all_tags, run_name=run_name)
    active: ActiveRun = active_run_class(run)
    stack.append(active)
    return active


@contextlib.contextmanager
def translate_errors(doing: str) -> Iterator[None]:
    """Turn connection failures into a TrackingError that names the server."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:
        if _is_connection_problem(exc):
            raise TrackingError(
                f"cannot reach the MLflow tracking server at {tracking_uri()} while "
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


def _dispose_inherited_engines() -> None:
    # Luigi forks one process per task when workers > 1. A pooled SQLite/PostgreSQL
    # connection must not be shared across fork, so the child drops (without closing)
    # what it inherited and opens its own.
    import sys

    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    if module is None:
        return
    for engine in getattr(module.SqlAlchemyStore, "_engine_map", {}).values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_dispose_inherited_engines)
