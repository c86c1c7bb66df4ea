"""MLflow's tracking store behind its client: opening, migrating and tuning it, ending
a run without MLflow's extra reads, and the SQL store's own operations (hard delete,
marking a run under the store's write lock).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from luigiflow._core import platform
from luigiflow._store.records import RunRecord

if TYPE_CHECKING:
    from mlflow import MlflowClient


# MLflow and alembic say at INFO what they do to a new store ("Creating initial MLflow
# database tables...", "Running upgrade ..."): not news on a luigiflow command's output.
_MIGRATION_LOGGERS = ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration")


def open_store(client: MlflowClient) -> None:
    """Make MLflow open (and for a new SQLite file, create and migrate) the store now."""
    _ = client._tracking_client.store


@contextlib.contextmanager
def quiet_migrations() -> Iterator[None]:
    """MLflow creating or migrating a store (in its client's constructor or on first
    use) without its INFO lines; its warnings and errors still show."""
    loggers = [logging.getLogger(name) for name in _MIGRATION_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def schema_revisions() -> tuple[str, frozenset[str]]:
    """The installed MLflow's newest store schema revision, and every revision its
    migrations know, read from its alembic scripts without importing mlflow (a build
    checks a store before it writes, and a plain build does not import mlflow)."""
    import importlib.util
    import pathlib
    import re

    spec = importlib.util.find_spec("mlflow")  # locates the package, imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("mlflow is not installed")
    folder = pathlib.Path(next(iter(spec.submodule_search_locations)))
    downs: dict[str, str | None] = {}
    for script in (folder / "store" / "db_migrations" / "versions").glob("*.py"):
        text = script.read_text(encoding="utf-8")
        rev = re.search(r"^revision\s*=\s*['\"](\w+)['\"]", text, re.M)
        down = re.search(r"^down_revision\s*=\s*['\"](\w+)['\"]", text, re.M)
        if rev is not None:
            downs[rev.group(1)] = down.group(1) if down else None
    heads = set(downs) - set(downs.values())
    if len(heads) != 1:  # MLflow's own check (_get_latest_schema_revision)
        raise RuntimeError(f"MLflow's migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop(), frozenset(downs)


def mlflow_version() -> str:
    """The installed MLflow's version, without importing mlflow."""
    from importlib.metadata import version

    return version("mlflow")


def upgrade_store(uri: str) -> None:
    """Migrate a store to this MLflow's newest schema, as `mlflow db upgrade` does."""
    from mlflow.store.db import utils

    engine = utils.create_sqlalchemy_engine_with_retry(uri)
    try:
        utils._upgrade_db(engine)
    finally:
        engine.dispose()


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

    engine = getattr(_backend(client), "engine", None)
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


def latest_metric_positions(
    client: MlflowClient, run_id: str, run: Any = None
) -> dict[str, tuple[int, int]]:
    """Per metric key of the run, the (step, timestamp) of the value it shows (`run`: the
    run as just read, saving a request)."""
    run = run if run is not None else client.get_run(run_id)
    found = getattr(run.data, "_metric_objs", None)
    if isinstance(found, list):
        return {m.key: (int(m.step), int(m.timestamp or 0)) for m in found}
    positions = {}
    for key in run.data.metrics:  # another MLflow: its history, one request per key
        history = client.get_metric_history(run_id, key)
        newest = max(history, key=lambda m: (m.step, m.timestamp, m.value))
        positions[key] = (int(newest.step), int(newest.timestamp or 0))
    return positions


def _backend(client: MlflowClient) -> Any:
    """The tracking store object behind MLflow's client, or None."""
    return getattr(getattr(client, "_tracking_client", None), "store", None)


def flush_async_logging(client: MlflowClient) -> None:
    """Hand values user code logged with `synchronous=False` to the store before the run
    ends (what `set_terminated` does first)."""
    store = _backend(client)
    if store is not None and hasattr(store, "shut_down_async_logging"):
        store.shut_down_async_logging()


def terminate(client: MlflowClient, run_id: str, status: str) -> None:
    """`set_terminated` without its `_log_url`: on a tracking server that fetches the run
    (one `runs/get` a task) to print two "View run/experiment at" lines a task; the
    build's own summary names the runs."""
    import time

    from mlflow.entities import RunStatus

    store = _backend(client)
    if store is None or not hasattr(store, "update_run_info"):
        client.set_terminated(run_id, status)
        return
    flush_async_logging(client)
    store.update_run_info(
        run_id,
        run_status=RunStatus.from_string(status),
        end_time=int(time.time() * 1000),
        run_name=None,
    )


def hard_delete_run(uri: str, run_id: str) -> bool:
    """Remove a run row permanently, as `mlflow gc` does; False where the store can't."""
    from mlflow.tracking._tracking_service.utils import _get_store

    store: Any = _get_store(uri)
    if not hasattr(store, "_hard_delete_run"):
        return False
    store._hard_delete_run(run_id)
    return True


def retire_under_lock(
    uri: str, run_id: str, retire_tags: Callable[[RunRecord], dict[str, str] | None]
) -> tuple[RunRecord | None, bool]:
    """Read a run under the store's write lock and, in the same transaction, mark it KILLED
    with the tags `retire_tags` returns (None: leave it). Returns (the run as read, or None
    when it is gone; whether it was marked). SQL stores only (where gc can delete).

    The lock is taken first (a no-op update of the run's row: the database on SQLite, the
    row on PostgreSQL), so no heartbeat of a resumed worker commits between the look and
    the change, and a worker whose run is marked never finishes it (the compare-and-set in
    `finish_run`).
    """
    from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag
    from mlflow.tracking._tracking_service.utils import _get_store

    from luigiflow._store.records import RunData, RunInfo, RunRecord

    store: Any = _get_store(uri)
    try:
        session_of = store.ManagedSessionMaker(read_only=False)
    except TypeError:  # an MLflow whose sessions are all read-write
        session_of = store.ManagedSessionMaker()
    with session_of as session:
        query = session.query(SqlRun).filter(SqlRun.run_uuid == run_id)
        if not query.update({SqlRun.status: SqlRun.status}, synchronize_session=False):
            return None, False
        row = query.one()
        tags = {t.key: t.value for t in session.query(SqlTag).filter(SqlTag.run_uuid == run_id)}
        record = RunRecord(
            RunInfo(
                run_id=row.run_uuid,
                experiment_id=str(row.experiment_id),
                status=row.status,
                start_time=row.start_time or 0,
                end_time=row.end_time,
                artifact_uri=row.artifact_uri or "",
                lifecycle_stage=row.lifecycle_stage,
                run_name=row.name or "",
            ),
            RunData(tags=tags),
        )
        marks = retire_tags(record)
        if marks is None:
            return record, False
        query.update(
            {SqlRun.status: "KILLED", SqlRun.end_time: int(time.time() * 1000)},
            synchronize_session=False,
        )
        for key, value in marks.items():
            session.merge(SqlTag(key=key, value=value, run_uuid=run_id))
        return record, True


def can_hard_delete(uri: str) -> bool:
    from mlflow.tracking._tracking_service.utils import _get_store

    return hasattr(_get_store(uri), "_hard_delete_run")


def _dispose_inherited_engines() -> None:
    # Luigi forks one process per task when workers > 1. A pooled SQLite/PostgreSQL
    # connection must not be shared across fork, so the child drops (without closing)
    # what it inherited and opens its own.
    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    if module is None:
        return
    for engine in getattr(module.SqlAlchemyStore, "_engine_map", {}).values():
        engine.dispose(close=False)


platform.at_fork_in_child(_dispose_inherited_engines)
