"""Every use of MLflow internals (private names), each guarded with a public fallback.

Keeping them here means an MLflow upgrade is checked in one file.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import posixpath
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from luigiflow import _settings
from luigiflow._core import platform, redaction
from luigiflow._store import active_run
from luigiflow._store.records import RunRecord, from_mlflow

if TYPE_CHECKING:
    from mlflow import ActiveRun, MlflowClient

    from luigiflow._store.port import RunStore

_context: tuple[int, dict[str, str]] | None = None


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


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """MLflow's "Downloading artifacts" bars off while luigiflow fills its caches (its
    own progress display says what a build does); a user's setting wins."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if name in os.environ:
        yield
        return
    os.environ[name] = "false"
    try:
        yield
    finally:
        os.environ.pop(name, None)


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


def start_active_run(
    client_of: Callable[[], MlflowClient],
    store: RunStore,
    experiment_id: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, str],
    parent_tag: str,
) -> RunRecord:
    """Create a run with its params through `store` and make it MLflow's active run, as
    `mlflow.start_run` + `mlflow.log_params` do (`client_of` gives MLflow's client).

    Where mlflow is not imported yet, the run is created with the context tags
    `start_run` would add, and joins MLflow's fluent run stack only when something
    imports mlflow (see `active_run`): a plain task never pays for MLflow's import.

    `mlflow.start_run` re-resolves MLflow's context tags (user, source, git) and probes
    for Databricks on every call: about 1 ms a run, for values that never change within
    a process. They are resolved once here and the run joins the fluent run stack, so
    `mlflow.log_*` and autologging in user code land on it. Where that stack is not
    what this MLflow keeps, or system metrics are on (start_run starts their monitor),
    `mlflow.start_run` itself is used.
    """
    if (
        not active_run.mlflow_imported()
        and not _settings.system_metrics_on()
        and active_run.context_tags_known()
    ):
        all_tags = {**active_run.context_tags(redaction.secret_values()), **tags}
        record = store.create_run(experiment_id, run_name, all_tags, params=params)
        uri = store.uri
        active_run.join_when_imported(
            record, lambda run, now: _join_fluent_stack(uri, run, client_of if now else None)
        )
        return record
    client = client_of()
    active = _start_active_run(client, store, experiment_id, run_name, tags, params, parent_tag)
    _guard(active.info.run_id)
    return from_mlflow(active)


def _join_fluent_stack(
    uri: str, record: RunRecord, client_of: Callable[[], MlflowClient] | None
) -> None:
    """Put a run luigiflow created on MLflow's fluent stack, pointing MLflow's fluent API
    at the run's store (mlflow was just imported by user code, autologging, a flavour).

    Without `client_of` (called from the import hook, which may run inside luigiflow's
    own `get_client`, under its lock) MLflow's client is not asked for: the artifact
    repository is not primed, and MLflow's client looks the run up on its first upload."""
    import mlflow
    from mlflow.tracking import fluent

    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    stack = _fluent_stack()
    active_run_class = getattr(fluent, "ActiveRun", None)
    if stack is None or active_run_class is None:
        os.environ["MLFLOW_RUN_ID"] = record.info.run_id  # another MLflow: its own way in
        return
    run = _to_mlflow_run(record)
    if client_of is not None and not is_local_artifact_uri(run.info.artifact_uri):
        _prime_artifact_repo(client_of(), run.info.run_id, run.info.artifact_uri)
    stack.append(active_run_class(run))
    _guard(record.info.run_id)


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
    if not active_run.mlflow_imported():
        return  # no run of luigiflow's was ever on MLflow's stack
    import mlflow

    while (active := mlflow.active_run()) is not None and active.info.run_id in _unended:
        _unended.discard(active.info.run_id)
        try:
            mlflow.end_run("KILLED")
        except Exception:
            return


def _start_active_run(
    client: MlflowClient,
    store: RunStore,
    experiment_id: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, str],
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

    active_run_class = getattr(fluent, "ActiveRun", None)
    stack = _fluent_stack()
    if stack is None or active_run_class is None or _settings.system_metrics_on():
        started = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            tags=tags,
            nested=mlflow.active_run() is not None,
        )
        store.log_batch(started.info.run_id, params=params)
        return started
    if _context is None or _context[0] != os.getpid():
        from mlflow.tracking.context.registry import resolve_tags

        # MLflow's context tags include the git remote URL, which may embed a token.
        secrets = redaction.secret_values()
        resolved = {k: redaction.scrub(str(v), secrets) for k, v in resolve_tags({}).items()}
        _context = (os.getpid(), resolved)
    all_tags = {**_context[1], **tags}
    if stack:  # a run is active (build() called inside one): ours nests under it
        all_tags[parent_tag] = stack[-1].info.run_id
    run = _to_mlflow_run(store.create_run(experiment_id, run_name, all_tags, params=params))
    _prime_artifact_repo(client, run.info.run_id, run.info.artifact_uri)
    active: ActiveRun = active_run_class(run)
    stack.append(active)
    return active


def _to_mlflow_run(record: RunRecord) -> Any:
    """MLflow's `Run` for a record (what `ActiveRun` wraps)."""
    from mlflow.entities import Param, Run, RunData, RunInfo, RunTag

    info = record.info
    return Run(
        RunInfo(
            run_id=info.run_id,
            experiment_id=info.experiment_id,
            user_id=record.data.tags.get("mlflow.user", "unknown"),
            status=info.status,
            start_time=info.start_time,
            end_time=info.end_time,
            lifecycle_stage=info.lifecycle_stage,
            artifact_uri=info.artifact_uri,
            run_name=info.run_name,
        ),
        RunData(
            params=[Param(k, v) for k, v in record.data.params.items()],
            tags=[RunTag(k, v) for k, v in record.data.tags.items()],
        ),
    )


def _prime_artifact_repo(client: MlflowClient, run_id: str, artifact_uri: str) -> None:
    """Put the new run's artifact repository in MLflow's cache, built as MLflow builds it.

    MLflow's client otherwise asks the server for the run (one `runs/get`) on the first
    artifact upload, for the artifact URI that `create_run` just returned."""
    try:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.tracking._tracking_service import utils
        from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

        cache = utils._artifact_repos_cache
        tracking_uri = client._tracking_client.tracking_uri
        uri = add_databricks_profile_info_to_artifact_uri(artifact_uri, tracking_uri)
        repo = get_artifact_repository(uri, tracking_uri=tracking_uri)
    except (ImportError, AttributeError, TypeError):
        return  # another MLflow: its client looks the run up itself
    if len(cache) > 1024:
        cache.popitem(last=False)
    cache[run_id] = repo


# A strict subset of the keys MLflow accepts (its `[/\\w.\\- :]`, no path tricks) and
# of its length limits: a batch within them is stored by MLflow exactly as given.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_./ -]{1,250}")
_MAX_PARAM_VALUE, _MAX_TAG_VALUE = 6000, 8000


def _plain_key(key: object) -> bool:
    if not isinstance(key, str) or not _PLAIN_KEY.fullmatch(key):
        return False
    normal = posixpath.normpath(key)
    return normal == key and normal != "." and not normal.startswith(("..", "/"))


def _plain_batch(
    metrics: Sequence[tuple[str, float, int, int]],
    params: Mapping[str, str],
    tags: Mapping[str, str],
) -> bool:
    """MLflow's validators would pass this batch unchanged: checked without them."""
    for key, value, timestamp, step in metrics:
        number = type(value) in (int, float)
        if not (_plain_key(key) and number and type(timestamp) is int and timestamp >= 0):
            return False
        if type(step) is not int:
            return False
    return all(
        _plain_key(k) and isinstance(v, str) and len(v) <= _MAX_PARAM_VALUE
        for k, v in params.items()
    ) and all(
        _plain_key(k) and isinstance(v, str) and len(v) <= _MAX_TAG_VALUE for k, v in tags.items()
    )


def validated_batch(
    metrics: Sequence[tuple[str, float, int, int]],
    params: Mapping[str, str],
    tags: Mapping[str, str],
) -> tuple[dict[str, str], dict[str, str]] | None:
    """Params and tags as MLflow's `log_batch` would store them (long tag values cut,
    with MLflow's warning), raising MLflow's own error for a bad key or value; None
    where this MLflow keeps its validators elsewhere.

    A batch of plain keys and values within MLflow's limits (luigiflow's own tags,
    parameter names, ordinary metric names) is checked here without importing mlflow;
    anything else goes through MLflow's validators, which say what is wrong."""
    if _plain_batch(metrics, params, tags):
        return dict(params), dict(tags)
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.validation import (
            _validate_batch_log_data,
            _validate_param_keys_unique,
        )
    except ImportError:
        return None
    checked_params = [Param(k, v) for k, v in params.items()]
    _validate_param_keys_unique(checked_params)
    _, checked_params, checked_tags = _validate_batch_log_data(
        [Metric(k, v, ts, step) for k, v, ts, step in metrics],
        checked_params,
        [RunTag(k, v) for k, v in tags.items()],
    )
    return (
        {p.key: p.value for p in checked_params},
        {t.key: t.value for t in checked_tags},
    )


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


def active_model_id() -> str | None:
    """MLflow's active logged model: metrics logged while it is set are linked to it."""
    env = ("MLFLOW_ACTIVE_MODEL_ID", "_MLFLOW_ACTIVE_MODEL_ID")
    if not active_run.mlflow_imported() and not any(os.environ.get(k) for k in env):
        return None  # only MLflow's code (or these variables) can set one
    try:
        from mlflow.tracking.fluent import get_active_model_id
    except ImportError:
        return "unknown"  # cannot tell: let MLflow's client write the metrics
    found = get_active_model_id()
    return str(found) if found is not None else None


def run_artifact_uri(artifact_location: str, run_id: str) -> str:
    """Where MLflow puts a new run's artifacts in an experiment's artifact location."""
    parsed = urllib.parse.urlparse(artifact_location)
    if parsed.scheme in ("", "file") and not parsed.query and not parsed.params:
        # MLflow's append_to_uri_path for a path or file: URI, without importing it.
        head = artifact_location if parsed.scheme == "" else parsed.path
        joined = posixpath.join(head, run_id, "artifacts") if head else f"{run_id}/artifacts"
        if parsed.scheme == "":
            return joined
        if parsed.path.startswith("/") and not parsed.fragment:
            return urllib.parse.urlunparse(parsed._replace(path=joined))
    from mlflow.utils.uri import append_to_uri_path

    return str(append_to_uri_path(artifact_location, run_id, "artifacts"))


def not_found(message: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    return MlflowException(message, RESOURCE_DOES_NOT_EXIST)


def invalid(message: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, INVALID_PARAMETER_VALUE)


def is_inactive_experiment_error(exc: BaseException) -> bool:
    """MLflow refused to create a run in an experiment that is deleted."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and "must be in the 'active' state" in str(exc)


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
    if not active_run.forget(run_id):
        return False  # never on MLflow's stack: mlflow was not imported by its task
    import mlflow

    active = mlflow.active_run()
    if active is None or active.info.run_id != run_id:
        return False
    if pop_active_run(run_id):
        terminate(mlflow.MlflowClient(), run_id, status)
    else:
        _unended.discard(run_id)
        mlflow.end_run(status)
    return True


def is_local_artifact_uri(uri: str) -> bool:
    scheme = urllib.parse.urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def _fluent_stack() -> list[Any] | None:
    """MLflow's stack of active runs (this context's), or None where it keeps no such list."""
    from mlflow.tracking import fluent

    stack_var = getattr(fluent, "_active_run_stack", None)
    stack = stack_var.get() if stack_var is not None and hasattr(stack_var, "get") else None
    return stack if isinstance(stack, list) else None


def _backend(client: MlflowClient) -> Any:
    """The tracking store object behind MLflow's client, or None."""
    return getattr(getattr(client, "_tracking_client", None), "store", None)


def pop_active_run(run_id: str) -> bool:
    """Take `run_id` off MLflow's active-run stack as `mlflow.end_run` does, without
    writing anything (the caller ends the run in the store). False, with nothing done,
    where it is not the top of the stack or this MLflow keeps its fluent state otherwise.
    True, with nothing done, for a run that never joined the stack (nothing imported
    mlflow while its task ran).
    """
    if not active_run.forget(run_id):
        return True
    from mlflow.tracking import fluent

    last_var = getattr(fluent, "_last_active_run_id", None)
    run_id_env = getattr(fluent, "MLFLOW_RUN_ID", None)
    monitors = getattr(fluent, "run_id_to_system_metrics_monitor", None)
    stack = _fluent_stack()
    usable = (
        stack is not None
        and bool(stack)
        and stack[-1].info.run_id == run_id
        and hasattr(last_var, "set")
        and hasattr(run_id_env, "unset")
        and isinstance(monitors, dict)
    )
    if not usable:
        return False
    assert stack is not None and isinstance(monitors, dict)
    _unended.discard(run_id)
    run_id_env.unset()  # type: ignore[union-attr]
    stack.pop()
    last_var.set(run_id)  # type: ignore[union-attr]
    monitor = monitors.pop(run_id, None)
    if monitor is not None:
        monitor.finish()
    return True


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


platform.at_fork_in_child(_dispose_inherited_engines)
