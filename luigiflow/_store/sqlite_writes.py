"""The start and the end of a run on the embedded SQLite store, one transaction each.

Each MLflow client call costs 2-3 ms on SQLite (an ORM session, the run read again
with its tags, params and metrics, a commit), and recording a task took five: the
run, its params, its inputs, its results, its status. Here a run is created with its
params in one transaction, and ended with its inputs, metrics, tags and status in
another, in SQL on MLflow's tables, as `SqlAlchemyStore` writes them:

- values are checked by MLflow's own validators (`mlflow_compat.validated_batch`),
  so a bad metric name fails as MLflow fails it, and a long tag is cut as MLflow cuts it;
- `latest_metrics`, which the MLflow UI and metric filters read, is kept as MLflow
  keeps it (the value of the highest step, then timestamp, then value);
- an upstream artifact or data file is one `datasets` row per experiment, shared by
  every run that read it, linked by one `inputs` row per run.

Only for a database that has every column these statements name and no other required
one (`sqlite_schema`, judged again inside each transaction when the schema or its
revision changed); anything else (a missing or unknown required column, a run-name tag,
an active MLflow logged model) raises `Unwritable` and the caller writes through
MLflow's client. Ending a run in one transaction also means a run is never FINISHED
without its results. tests/store/test_sqlite_writes.py builds the same graphs both
ways and compares every row.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import posixpath
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence

from luigiflow._store import liveness, mlflow_compat, schema, sqlite_file, workspaces
from luigiflow._store.port import DatasetRef
from luigiflow._store.records import ACTIVE, RUNNING, RunData, RunInfo, RunRecord

RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
_MAX_FLOAT = 1.7976931348623157e308  # SQL has no infinity: MLflow stores +/-max


_ANYWHERE = workspaces.Scope(None, False)
# What MLflow's SqlAlchemyStore sets on a new experiment (the workspace where it exists).
EXPERIMENT_COLUMNS = frozenset(
    {"experiment_id", "name", "artifact_location", "lifecycle_stage", "creation_time"}
    | {"last_update_time", "workspace"}
)
MAX_EXPERIMENT_NAME = 500  # MLflow's MAX_EXPERIMENT_NAME_LENGTH
SERVER_ROOT = "_MLFLOW_SERVER_ARTIFACT_ROOT"  # inside a server, MLflow's root is its own


class Unwritable(Exception):
    """This write must go through MLflow's client."""


class SqliteWriter:
    """luigiflow's own writes to one SQLite file whose schema has what they write."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._connections = sqlite_file.LocalConnections(path, read_only=False)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connections.get()
        if conn.in_transaction:  # one an interrupt left open (see below): never ours to keep
            conn.execute("ROLLBACK")
        # An interrupt during SQLite's busy wait is raised as soon as BEGIN returns, and a
        # COMMIT can fail busy: both inside the try, or the connection (never closed) would
        # keep the write lock and lock every other writer out of the store.
        try:
            # IMMEDIATE takes the write lock first: two writers queue instead of failing
            # to upgrade a read lock, and check-then-insert (datasets) cannot race.
            conn.execute("BEGIN IMMEDIATE")
            verdict = self._connections.verdict()
            if not verdict.writable:
                raise Unwritable(f"schema revision {verdict.revision}: {verdict.why_not}")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # ----- a new experiment ---------------------------------------------------------
    def create_experiment(
        self, name: str, tags: Mapping[str, str], scope: workspaces.Scope | None = None
    ) -> str:
        """A new experiment as MLflow's `SqlAlchemyStore.create_experiment` makes it, with
        MLflow's default artifact location for an embedded store (`./mlruns/<id>`,
        resolved against this process's working directory).

        Unwritable (MLflow's client does it, and says what is wrong) for a name that is
        taken or odd, an MLflow workspace, a server's artifact root, or a table with a
        required column these statements leave out."""
        if (scope or _ANYWHERE).workspace is not None or os.environ.get(SERVER_ROOT):
            raise Unwritable("an MLflow workspace or a server's artifact root")
        if not 0 < len(name) <= MAX_EXPERIMENT_NAME:  # `tags` are luigiflow's own
            raise Unwritable("a name MLflow's validators should judge")
        with self._transaction() as conn:
            found = {row[1]: row for row in conn.execute("PRAGMA table_info(experiments)")}
            tag_columns = {row[1] for row in conn.execute("PRAGMA table_info(experiment_tags)")}
            left_out = [
                column
                for column, (_cid, _n, _type, notnull, default, pk) in found.items()
                if column not in EXPERIMENT_COLUMNS and notnull and default is None and not pk
            ]
            if left_out or not EXPERIMENT_COLUMNS - {"workspace"} <= found.keys():
                raise Unwritable(f"experiments has columns {sorted(found)}")
            if not {"key", "value", "experiment_id"} <= tag_columns:
                raise Unwritable("experiment_tags")
            if conn.execute("SELECT 1 FROM experiments WHERE name = ?", (name,)).fetchone():
                raise Unwritable("taken")  # MLflow's client says RESOURCE_ALREADY_EXISTS
            now = int(time.time() * 1000)
            extra = {"workspace": workspaces.DEFAULT} if "workspace" in found else {}
            columns = ["name", "lifecycle_stage", "creation_time", "last_update_time", *extra]
            values = [name, ACTIVE, now, now, *extra.values()]
            marks = ", ".join("?" for _ in columns)
            cursor = conn.execute(
                f"INSERT INTO experiments ({', '.join(columns)}) VALUES ({marks})", values
            )
            experiment_id = int(cursor.lastrowid or 0)
            root = pathlib.Path.cwd().joinpath("mlruns").as_posix()  # MLflow's "./mlruns"
            location = posixpath.join(root, str(experiment_id))
            conn.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                (location, experiment_id),
            )
            conn.executemany(
                "INSERT INTO experiment_tags (key, value, experiment_id) VALUES (?, ?, ?)",
                [(k, v, experiment_id) for k, v in tags.items()],
            )
        return str(experiment_id)

    # ----- the start of a run -------------------------------------------------------
    def create_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str],
        params: Mapping[str, str],
        start_time: int | None = None,
        scope: workspaces.Scope | None = None,
    ) -> RunRecord:
        """A RUNNING run with its tags and params, as MLflow's `create_run` + `log_batch`
        (in an experiment of the MLflow workspace in `scope`, as MLflow's client checks)."""
        if RUN_NAME_TAG in tags and tags[RUN_NAME_TAG] != run_name:
            raise Unwritable("run name and mlflow.runName differ")
        checked = mlflow_compat.validated_batch([], params, {})
        if checked is None:
            raise Unwritable("MLflow's validators are not where they were")
        params = checked[0]
        run_id = uuid.uuid4().hex
        start = start_time if start_time is not None else int(time.time() * 1000)
        all_tags = dict(tags)
        all_tags.setdefault(RUN_NAME_TAG, run_name)
        user = all_tags.get(USER_TAG, "unknown")
        in_scope, scope_args = (scope or _ANYWHERE).on_experiments()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT artifact_location, lifecycle_stage FROM experiments "
                f"WHERE experiment_id = ? {in_scope}",
                (int(experiment_id), *scope_args),
            ).fetchone()
            if row is None:
                raise mlflow_compat.not_found(f"No Experiment with id={experiment_id} exists")
            if row[1] != ACTIVE:
                raise mlflow_compat.invalid(
                    f"The experiment {experiment_id} must be in the 'active' state. "
                    f"Current state is {row[1]}."
                )
            artifact_uri = mlflow_compat.run_artifact_uri(row[0], run_id)
            conn.execute(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, "
                "entry_point_name, user_id, status, start_time, end_time, source_version, "
                "lifecycle_stage, artifact_uri, experiment_id, deleted_time) "
                "VALUES (?, ?, 'UNKNOWN', '', '', ?, ?, ?, NULL, '', ?, ?, ?, NULL)",
                (run_id, run_name, user, RUNNING, start, ACTIVE, artifact_uri, int(experiment_id)),
            )
            conn.executemany(
                "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                [(k, v, run_id) for k, v in all_tags.items()],
            )
            conn.executemany(
                "INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
                [(k, v, run_id) for k, v in params.items()],
            )
        return RunRecord(
            RunInfo(
                run_id, str(experiment_id), RUNNING, start, None, artifact_uri, ACTIVE, run_name
            ),
            RunData(all_tags, dict(params), {}),
        )

    # ----- the end of a run ---------------------------------------------------------
    def finish_run(
        self,
        run_id: str,
        status: str,
        metrics: Sequence[tuple[str, float, int, int]],
        tags: Mapping[str, str],
        inputs: Sequence[DatasetRef],
        end_time: int | None = None,
        scope: workspaces.Scope | None = None,
    ) -> None:
        """Inputs, metrics `(key, value, timestamp, step)`, tags and the final status."""
        if RUN_NAME_TAG in tags:
            raise Unwritable("a run-name tag also renames the run")
        if metrics and mlflow_compat.active_model_id() is not None:
            raise Unwritable("metrics of an active logged model are linked to it")
        checked = mlflow_compat.validated_batch(metrics, {}, tags)
        if checked is None:
            raise Unwritable("MLflow's validators are not where they were")
        tags = checked[1]
        end = end_time if end_time is not None else int(time.time() * 1000)
        with self._transaction() as conn:
            experiment_id = _active_run(conn, run_id, scope or _ANYWHERE)
            _still_running(conn, run_id)
            _write_inputs(conn, experiment_id, run_id, inputs)
            _write_metrics(conn, run_id, metrics)
            conn.executemany(
                "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?) "
                "ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value",
                [(k, v, run_id) for k, v in tags.items()],
            )
            ended = conn.execute(
                "UPDATE runs SET status = ?, end_time = ? "
                "WHERE run_uuid = ? AND status NOT IN (?, ?)",
                (status, end, run_id, *liveness.ENDED_BY_OTHERS),
            )
            if ended.rowcount != 1:  # cannot happen under the write lock; never FINISHED
                raise liveness.stopped_error(run_id, "ended", None)

    # ----- while a run is active ----------------------------------------------------
    def set_tags(
        self, run_id: str, tags: Mapping[str, str], scope: workspaces.Scope | None = None
    ) -> None:
        """Tags set (or replaced) on an active run, as MLflow's `set_tag`: a heartbeat
        without MLflow's client (whose first use would import mlflow in the heartbeat's
        thread, away from the task's fluent run stack)."""
        if RUN_NAME_TAG in tags:
            raise Unwritable("a run-name tag also renames the run")
        checked = mlflow_compat.validated_batch([], {}, tags)
        if checked is None:
            raise Unwritable("MLflow's validators are not where they were")
        with self._transaction() as conn:
            _active_run(conn, run_id, scope or _ANYWHERE)
            conn.executemany(
                "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?) "
                "ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value",
                [(k, v, run_id) for k, v in checked[1].items()],
            )

    def log_metrics(
        self,
        run_id: str,
        metrics: Sequence[tuple[str, float, int, int]],
        scope: workspaces.Scope | None = None,
    ) -> None:
        """Values `(key, value, timestamp, step)` logged while the run is active, as
        MLflow's `log_metric`: live metrics (`self.log_metric`) without MLflow's client."""
        if mlflow_compat.active_model_id() is not None:
            raise Unwritable("metrics of an active logged model are linked to it")
        if mlflow_compat.validated_batch(metrics, {}, {}) is None:
            raise Unwritable("MLflow's validators are not where they were")
        rows = {(k, *_sanitized(float(v)), int(ts), int(step)) for k, v, ts, step in metrics}
        with self._transaction() as conn:
            _active_run(conn, run_id, scope or _ANYWHERE)
            _insert_metrics(conn, run_id, rows)


def move_run(writer: SqliteWriter, run_id: str, experiment_id: str) -> bool:
    """A task's RUNNING run whose experiment a user deleted while it ran goes on in the
    successor experiment `experiment_id` (one transaction); False when it is not such a
    run (its experiment is active: the run itself was deleted, or it ended)."""
    with writer._transaction() as conn:
        return _moved_run(conn, run_id, experiment_id)


def _active_run(conn: sqlite3.Connection, run_id: str, scope: workspaces.Scope) -> int:
    """The run's experiment id; MLflow's errors for a missing (or another workspace's)
    or deleted run."""
    in_scope, scope_args = scope.on_runs()
    row = conn.execute(
        f"SELECT experiment_id, lifecycle_stage FROM runs WHERE run_uuid = ? {in_scope}",
        (run_id, *scope_args),
    ).fetchone()
    if row is None:
        raise mlflow_compat.not_found(f"Run with id={run_id} not found")
    if row[1] != ACTIVE:
        raise mlflow_compat.invalid(
            f"The run {run_id} must be in the 'active' state. Current state is {row[1]}."
        )
    return int(row[0])


def _moved_run(conn: sqlite3.Connection, run_id: str, experiment_id: str) -> bool:
    """Move a RUNNING run whose experiment was deleted into `experiment_id` (active)."""
    row = conn.execute(
        "SELECT e.lifecycle_stage FROM runs r JOIN experiments e "
        "ON e.experiment_id = r.experiment_id WHERE r.run_uuid = ? AND r.status = ?",
        (run_id, RUNNING),
    ).fetchone()
    if row is None or row[0] == ACTIVE:  # finished, ended, or deleted on its own: not ours
        return False
    conn.execute(
        "UPDATE runs SET experiment_id = ?, lifecycle_stage = ?, deleted_time = NULL "
        "WHERE run_uuid = ?",
        (int(experiment_id), ACTIVE, run_id),
    )
    return True


def _still_running(conn: sqlite3.Connection, run_id: str) -> None:
    """Compare-and-set on status, under the write lock: a run another worker ended (KILLED:
    it judged this worker dead) is never turned FINISHED by its resumed worker. (FINISHED
    passes: user code may have ended its own run with `mlflow.end_run()`.)"""
    row = conn.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
    if row[0] in liveness.ENDED_BY_OTHERS:
        reason = conn.execute(
            "SELECT value FROM tags WHERE run_uuid = ? AND key = ?", (run_id, schema.ERROR_TAG)
        ).fetchone()
        raise liveness.stopped_error(run_id, row[0], reason[0] if reason else None)


def _write_inputs(
    conn: sqlite3.Connection, experiment_id: int, run_id: str, inputs: Sequence[DatasetRef]
) -> None:
    """As MLflow's `log_inputs`: the first of each (name, digest); a dataset already
    recorded in the experiment is linked, not copied."""
    firsts: dict[tuple[str, str], DatasetRef] = {}
    for ref in inputs:
        firsts.setdefault((ref.name, ref.digest[:36]), ref)
    for (name, digest), ref in firsts.items():
        row = conn.execute(
            "SELECT dataset_uuid FROM datasets WHERE experiment_id = ? AND name = ? AND digest = ?",
            (experiment_id, name, digest),
        ).fetchone()
        if row is not None:
            dataset_uuid = row[0]
        else:
            dataset_uuid = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, "
                "dataset_source_type, dataset_source, dataset_schema, dataset_profile) "
                "VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                (dataset_uuid, experiment_id, name, digest, ref.source_type, ref.source),
            )
        linked = conn.execute(
            "SELECT 1 FROM inputs WHERE source_type = 'DATASET' AND source_id = ? "
            "AND destination_type = 'RUN' AND destination_id = ?",
            (dataset_uuid, run_id),
        ).fetchone()
        if linked is not None:
            continue
        input_uuid = uuid.uuid4().hex
        conn.execute(
            "INSERT INTO inputs (input_uuid, source_type, source_id, destination_type, "
            "destination_id, step) VALUES (?, 'DATASET', ?, 'RUN', ?, 0)",
            (input_uuid, dataset_uuid, run_id),
        )
        conn.execute(
            "INSERT INTO input_tags (input_uuid, name, value) VALUES (?, ?, ?)",
            (input_uuid, schema.INPUT_CONTEXT_TAG, ref.context),
        )


def _sanitized(value: float) -> tuple[float, int]:
    """(stored value, is_nan) as MLflow stores a metric value."""
    if math.isnan(value):
        return 0.0, 1
    if math.isinf(value):
        return (_MAX_FLOAT if value > 0 else -_MAX_FLOAT), 0
    return value, 0


def _write_metrics(
    conn: sqlite3.Connection, run_id: str, metrics: Sequence[tuple[str, float, int, int]]
) -> None:
    """Metric rows (one already there is kept, as MLflow keeps it) and `latest_metrics`:
    per key the row with the highest (step, timestamp, value). A value the run already has
    at a later step or time (user code's `mlflow.log_metric`, autologging) is topped: the
    saved value goes at its step and strictly later, so it is the value the run shows."""
    rows = set()
    for key, v, ts, step in metrics:
        old = conn.execute(
            "SELECT step, timestamp FROM latest_metrics WHERE run_uuid = ? AND key = ?",
            (run_id, key),
        ).fetchone()
        if old is not None:
            step, ts = max(int(step), int(old[0])), max(int(ts), int(old[1] or 0) + 1)
        rows.add((key, *_sanitized(float(v)), int(ts), int(step)))
    _insert_metrics(conn, run_id, rows)


def _insert_metrics(
    conn: sqlite3.Connection, run_id: str, rows: set[tuple[str, float, int, int, int]]
) -> None:
    """Rows `(key, value, is_nan, timestamp, step)` as MLflow inserts them: one already
    there is kept; `latest_metrics` per key the highest (step, timestamp, value)."""
    conn.executemany(
        "INSERT OR IGNORE INTO metrics (key, value, is_nan, timestamp, step, run_uuid) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(*row, run_id) for row in rows],
    )
    newest: dict[str, tuple[int, int, float, int]] = {}
    for key, value, is_nan, ts, step in rows:
        candidate = (step, ts, value, is_nan)
        if key not in newest or candidate[:3] > newest[key][:3]:
            newest[key] = candidate
    for key, (step, ts, value, is_nan) in sorted(newest.items()):
        old = conn.execute(
            "SELECT step, timestamp, value FROM latest_metrics WHERE run_uuid = ? AND key = ?",
            (run_id, key),
        ).fetchone()
        if old is None:
            conn.execute(
                "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, value, ts, step, is_nan, run_id),
            )
        elif (step, ts, value) > tuple(old):
            conn.execute(
                "UPDATE latest_metrics SET value = ?, timestamp = ?, step = ?, is_nan = ? "
                "WHERE run_uuid = ? AND key = ?",
                (value, ts, step, is_nan, run_id, key),
            )
