"""Every use of MLflow internals (private names), each guarded with a public fallback.

Keeping them here means an MLflow upgrade is checked in one file.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import TYPE_CHECKING, Any

from luigiflow import _settings
from luigiflow._core import redaction

if TYPE_CHECKING:
    from mlflow import ActiveRun, MlflowClient

_context: tuple[int, dict[str, str]] | None = None


def open_store(client: MlflowClient) -> None:
    """Make MLflow open (and for a new SQLite file, create and migrate) the store now."""
    _ = client._tracking_client.store


def allow_sqlite_uri_filenames() -> None:
    """Let MLflow open `sqlite:///file:<path>?...&uri=true` (the read-only form).

    MLflow makes the parent folder of whatever follows `sqlite:///`; for a URI filename
    that is a folder named `file:...` under the working directory (and an error on a
    read-only mount). The parent of a real store exists already, so that step is skipped
    for URI filenames only.
    """
    from mlflow.store.db import utils

    original = getattr(utils, "_make_parent_dirs_if_sqlite", None)
    if original is None or getattr(original, "_luigiflow", False):
        return

    def make_parent_dirs(db_uri: str) -> None:
        if not db_uri.startswith("sqlite:///file:"):
            original(db_uri)

    make_parent_dirs._luigiflow = True  # type: ignore[attr-defined]
    utils._make_parent_dirs_if_sqlite = make_parent_dirs


def tune_sqlite(client: MlflowClient) -> None:
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


def start_active_run(
    client: MlflowClient,
    experiment_id: str,
    run_name: str,
    tags: dict[str, str],
    parent_tag: str,
) -> ActiveRun:
    """Create a run and make it MLflow's active run, as `mlflow.start_run` does.

    `mlflow.start_run` re-resolves MLflow's context tags (user, source, git) and probes
    for Databricks on every call: about 1 ms a run, for values that never change within
    a process. They are resolved once here and the run joins the fluent run stack, so
    `mlflow.log_*` and autologging in user code land on it. Where that stack is not
    what this MLflow keeps, or system metrics are on (start_run starts their monitor),
    `mlflow.start_run` itself is used.
    """
    active = _start_active_run(client, experiment_id, run_name, tags, parent_tag)
    _guard(active.info.run_id)
    return active


# Runs made active here and not yet ended by luigiflow. MLflow's exit hook ends whatever
# run is still active as FINISHED; ours, registered after it, runs first and ends a run
# luigiflow left active (an interrupt cut its clean-up short) as KILLED: a FINISHED run
# with luigiflow's identity would count as complete.
_unended: set[str] = set()
_hooked = False


def _guard(run_id: str) -> None:
    global _hooked
    _unended.add(run_id)
    if not _hooked:
        atexit.register(end_unended_killed)
        _hooked = True


def end_unended_killed() -> None:
    """End as KILLED the runs luigiflow made active and never ended (top of the stack
    down): at exit, and after an interrupt (`_ops/stopped`)."""
    import mlflow

    while (active := mlflow.active_run()) is not None and active.info.run_id in _unended:
        _unended.discard(active.info.run_id)
        try:
            mlflow.end_run("KILLED")
        except Exception:
            return


def _start_active_run(
    client: MlflowClient,
    experiment_id: str,
    run_name: str,
    tags: dict[str, str],
    parent_tag: str,
) -> ActiveRun:
    global _context
    import mlflow
    from mlflow.tracking import fluent

    # User code in run_task logs through the fluent API: it must reach the same store,
    # even when MLFLOW_TRACKING_URI changed since the process first set it.
    uri = client._tracking_client.tracking_uri
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)

    stack_var = getattr(fluent, "_active_run_stack", None)
    active_run_class = getattr(fluent, "ActiveRun", None)
    stack = stack_var.get() if stack_var is not None and hasattr(stack_var, "get") else None
    if not isinstance(stack, list) or active_run_class is None or _settings.system_metrics_on():
        return mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            tags=tags,
            nested=mlflow.active_run() is not None,
        )
    if _context is None or _context[0] != os.getpid():
        from mlflow.tracking.context.registry import resolve_tags

        # MLflow's context tags include the git remote URL, which may embed a token.
        secrets = _settings.secret_values()
        resolved = {k: redaction.scrub(str(v), secrets) for k, v in resolve_tags({}).items()}
        _context = (os.getpid(), resolved)
    all_tags = {**_context[1], **tags}
    if stack:  # a run is active (build() called inside one): ours nests under it
        all_tags[parent_tag] = stack[-1].info.run_id
    run = client.create_run(experiment_id, tags=all_tags, run_name=run_name)
    active: ActiveRun = active_run_class(run)
    stack.append(active)
    return active


def end_active_run(status: str) -> None:
    """End MLflow's active run (the one `start_active_run` made) with `status`."""
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        _unended.discard(active.info.run_id)
    mlflow.end_run(status)


def end_active_run_if(run_id: str, status: str) -> bool:
    """End MLflow's active run with `status` if it is `run_id`; False when it is not.

    User code may have ended the run itself (`mlflow.end_run()`); ending "the active
    run" then would end someone else's (a run `build()` was called inside) or nothing.
    """
    import mlflow

    active = mlflow.active_run()
    if active is None or active.info.run_id != run_id:
        return False
    _unended.discard(run_id)
    mlflow.end_run(status)
    return True


def active_run_ids() -> list[str]:
    """Ids of the runs on MLflow's fluent stack, innermost last (empty when none)."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return []
    run = mlflow.active_run()
    return [run.info.run_id] if run is not None else []


def end_all_active_runs() -> None:
    """Pop every run left on MLflow's fluent stack (between tests, notebook cells)."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return
    while mlflow.active_run() is not None:
        mlflow.end_run()


def hard_delete_run(uri: str, run_id: str) -> bool:
    """Remove a run row permanently, as `mlflow gc` does; False where the store can't."""
    from mlflow.tracking._tracking_service.utils import _get_store

    store: Any = _get_store(uri)
    if not hasattr(store, "_hard_delete_run"):
        return False
    store._hard_delete_run(run_id)
    return True


def can_hard_delete(uri: str) -> bool:
    from mlflow.tracking._tracking_service.utils import _get_store

    return hasattr(_get_store(uri), "_hard_delete_run")


def delete_artifact_folder(artifact_uri: str) -> None:
    """Delete every artifact of a run through MLflow's artifact repository."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(artifact_uri)
    try:
        repo.delete_artifacts()
    except Exception as exc:  # a missing folder is already clean
        if "No such file" not in str(exc) and "does not exist" not in str(exc):
            raise


def _dispose_inherited_engines() -> None:
    # Luigi forks one process per task when workers > 1. A pooled SQLite/PostgreSQL
    # connection must not be shared across fork, so the child drops (without closing)
    # what it inherited and opens its own.
    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    if module is None:
        return
    for engine in getattr(module.SqlAlchemyStore, "_engine_map", {}).values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_dispose_inherited_engines)
