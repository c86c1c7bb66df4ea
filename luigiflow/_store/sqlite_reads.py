"""Reads of the embedded SQLite store straight from MLflow's tables, without mlflow.

`import mlflow` costs about 2 s; a no-op build, `plan`, `runs` and `show` only read.
`SqliteStore` answers every read of the store port with plain SQL on MLflow's schema
and leaves writes (and anything it does not know) to `MlflowStore`, which imports
mlflow on first use. It is used for a database that has the tables and columns these
queries name (`sqlite_schema`, judged again whenever the schema changes, e.g. MLflow
migrating the file mid-build; the differential test in tests/store/test_sqlite_reads.py
compares every answer with MLflow's client); a store that lacks one is read through
MLflow's client.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from luigiflow import _settings
from luigiflow._errors import RunNotFoundError
from luigiflow._store import client, schema, sqlite_file, sqlite_schema, sqlite_writes, workspaces
from luigiflow._store.mlflow_store import MlflowStore
from luigiflow._store.port import DatasetRef, ExperimentRecord, chunks
from luigiflow._store.records import ACTIVE, FINISHED, RUNNING, RunData, RunInfo, RunRecord

ID_CHUNK = 500
_RUN_COLUMNS = (
    "run_uuid, experiment_id, status, start_time, end_time, artifact_uri, lifecycle_stage, name"
)
_NEWEST_FIRST = "ORDER BY start_time DESC, run_uuid ASC"


_F = TypeVar("_F", bound=Callable[..., Any])


def readable(uri: str) -> bool:
    """The URI names an existing SQLite store with every table and column the reads use."""
    path = sqlite_file.sqlite_path(uri)
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        return sqlite_schema.judge(sqlite_file.peek(path)).readable
    except sqlite3.Error:
        return False


def _in_sql(method: _F) -> _F:
    """A read answered in SQL while the schema has what it names, else by MLflow's client."""

    @functools.wraps(method)
    def read(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        if self._verdict().readable:
            return method(self, *args, **kwargs)
        return getattr(MlflowStore, method.__name__)(self, *args, **kwargs)

    return read  # type: ignore[return-value]


class SqliteStore(MlflowStore):
    """The store port with reads in SQL on MLflow's tables; a task run's start and end
    in one SQL transaction each (`sqlite_writes`); other writes through MLflow."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        path = sqlite_file.sqlite_path(uri)
        assert path is not None
        self._path = str(path)
        self._connections = sqlite_file.LocalConnections(self._path, read_only=True)
        self._writer = sqlite_writes.SqliteWriter(self._path)
        self._scoped: tuple[Any, workspaces.Scope] | None = None
        self.direct_writes = True  # off: every write through MLflow's client (tests)

    # ----- writes -------------------------------------------------------------------
    def create_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str],
        start_time: int | None = None,
        params: Mapping[str, str] | None = None,
    ) -> RunRecord:
        self._create_if_absent()
        if self.direct_writes:
            doing = f"creating a run in experiment {experiment_id}"
            with (
                contextlib.suppress(sqlite_writes.Unwritable),
                client.translate_errors(doing, self.uri),
            ):
                return self._writer.create_run(
                    experiment_id, run_name, tags, params or {}, start_time, self._scope()
                )
        return super().create_run(experiment_id, run_name, tags, start_time, params)

    def finish_run(
        self,
        run_id: str,
        status: str,
        metrics: Mapping[str, float],
        steps: Mapping[str, int],
        timestamp_ms: int,
        tags: Mapping[str, str],
        inputs: Sequence[DatasetRef],
    ) -> None:
        self._create_if_absent()
        if self.direct_writes:
            rows = [(k, v, timestamp_ms, steps.get(k, 0)) for k, v in metrics.items()]
            doing = f"recording results of run {run_id}"
            with (
                contextlib.suppress(sqlite_writes.Unwritable),
                client.translate_errors(doing, self.uri),
            ):
                self._writer.finish_run(run_id, status, rows, tags, inputs, scope=self._scope())
                return
        super().finish_run(run_id, status, metrics, steps, timestamp_ms, tags, inputs)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._create_if_absent()
        if self.direct_writes:
            with (
                contextlib.suppress(sqlite_writes.Unwritable),
                client.translate_errors(f"tagging run {run_id}", self.uri),
            ):
                self._writer.set_tags(run_id, {key: value}, scope=self._scope())
                return
        super().set_tag(run_id, key, value)

    def _create_experiment(self, name: str) -> str:
        # In SQL on an existing store: MLflow's client (and its import) only where the SQL
        # write does not fit (see SqliteWriter.create_experiment).
        if self.direct_writes and os.path.exists(self._path):
            kind = {schema.EXPERIMENT_KIND_TAG: schema.EXPERIMENT_KIND}
            with (
                contextlib.suppress(sqlite_writes.Unwritable),
                client.translate_errors(f"creating experiment {name!r}", self.uri),
            ):
                return self._writer.create_experiment(name, kind, self._scope())
        return super()._create_experiment(name)

    def _create_if_absent(self) -> None:
        """A write to a store that does not exist yet: MLflow creates and migrates it first,
        under its creation lock (SQLite alone would leave an empty file)."""
        if not os.path.exists(self._path):
            client.get_client(self.uri)

    def adopt_run(self, run_id: str, experiment_id: str) -> bool:
        """Move a RUNNING run whose experiment was deleted while it ran into the successor
        `experiment_id` (embedded store only; MLflow's API cannot move a run)."""
        if not self.direct_writes:
            return False
        doing = f"moving run {run_id} into experiment {experiment_id}"
        with (
            contextlib.suppress(sqlite_writes.Unwritable),
            client.translate_errors(doing, self.uri),
        ):
            return sqlite_writes.move_run(self._writer, run_id, experiment_id)
        return False

    def log_metric(self, run_id: str, key: str, value: float, step: int = 0) -> None:
        if self.direct_writes:
            now = int(time.time() * 1000)
            with (
                contextlib.suppress(sqlite_writes.Unwritable),
                client.translate_errors(f"logging metric {key!r} of run {run_id}", self.uri),
            ):
                self._writer.log_metrics(run_id, [(key, value, now, step)], scope=self._scope())
                return
        super().log_metric(run_id, key, value, step)

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def _verdict(self) -> sqlite_schema.Verdict:
        """The schema's verdict for this thread's connection (judged again on a change)."""
        return self._connections.verdict()

    def _scope(self) -> workspaces.Scope:
        """The MLflow workspace reads and writes are confined to (checked as MLflow's client
        checks it: once, when the store is first used with these settings)."""
        verdict = self._verdict()
        env = (os.environ.get(_settings.WORKSPACES_ON), os.environ.get(_settings.WORKSPACE))
        key = (env, verdict.workspaces)
        if self._scoped is None or self._scoped[0] != key:
            self._scoped = (key, workspaces.scope(self._conn(), verdict.workspaces, self._path))
        return self._scoped[1]

    def _records(
        self,
        where: str,
        args: Sequence[Any],
        limit: int | None = None,
        only_tags: Sequence[str] | None = None,
    ) -> list[RunRecord]:
        """Runs matching `where` (on table `runs`), newest first, with tags/params/metrics
        (with `only_tags`: those tags, no params nor metrics)."""
        conn = self._conn()
        in_scope, scope_args = self._scope().on_runs()
        sql = f"SELECT {_RUN_COLUMNS} FROM runs WHERE {where} {in_scope} {_NEWEST_FIRST}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = conn.execute(sql, [*args, *scope_args]).fetchall()
        if not rows:
            return []
        ids = [r[0] for r in rows]
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        params: dict[str, dict[str, str]] = {i: {} for i in ids}
        metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
        for chunk in chunks(ids, ID_CHUNK):
            marks = ",".join("?" * len(chunk))
            if only_tags is not None:
                for rid, key, value in conn.execute(
                    "SELECT run_uuid, key, value FROM tags WHERE key IN "
                    f"(SELECT value FROM json_each(?)) AND run_uuid IN ({marks})",
                    [json.dumps(list(only_tags)), *chunk],
                ):
                    tags[rid][key] = value
                continue
            for rid, key, value in conn.execute(
                f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", chunk
            ):
                tags[rid][key] = value
            for rid, key, value in conn.execute(
                f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", chunk
            ):
                params[rid][key] = value
            for rid, key, value, is_nan in conn.execute(
                "SELECT run_uuid, key, value, is_nan FROM latest_metrics "
                f"WHERE run_uuid IN ({marks})",
                chunk,
            ):
                metrics[rid][key] = math.nan if is_nan else float(value)
        return [
            RunRecord(
                RunInfo(
                    run_id=r[0],
                    experiment_id=str(r[1]),
                    status=r[2],
                    start_time=r[3] or 0,
                    end_time=r[4],
                    artifact_uri=r[5] or "",
                    lifecycle_stage=r[6],
                    run_name=r[7] or "",
                ),
                RunData(tags[r[0]], params[r[0]], metrics[r[0]]),
            )
            for r in rows
        ]

    def _stream(
        self,
        where: str,
        args: Sequence[Any],
        on_tags: str = "",
        tag_args: Sequence[Any] = (),
        only_tags: Sequence[str] | None = None,
    ) -> Iterator[RunRecord]:
        """Runs matching `where` (on their attributes) and `on_tags` (a condition on their
        tags, which MLflow never changes), newest first, built ID_CHUNK at a time.

        Only the ordered run ids are held (under 100 bytes a run), never every run with
        its tags: a scan that stops early reads little, and memory stays flat however
        many runs an experiment holds. No statement stays open between chunks (an open
        read would hold SQLite's shared lock and block a writer while the caller works);
        each chunk checks `where` again, so a run deleted meanwhile is not returned.
        """
        in_scope, scope_args = self._scope().on_runs()
        ids = [
            row[0]
            for row in self._conn().execute(
                f"SELECT run_uuid FROM runs WHERE {where} {on_tags} {in_scope} {_NEWEST_FIRST}",
                [*args, *tag_args, *scope_args],
            )
        ]
        for chunk in chunks(ids, ID_CHUNK):
            marks = ",".join("?" * len(chunk))
            yield from self._records(
                f"{where} AND run_uuid IN ({marks})", [*args, *chunk], only_tags=only_tags
            )

    # ----- reads --------------------------------------------------------------------
    @_in_sql
    def _experiment_by_name(self, name: str) -> ExperimentRecord | None:
        in_scope, scope_args = self._scope().on_experiments()
        row = (
            self._conn()
            .execute(
                "SELECT experiment_id, name, lifecycle_stage FROM experiments "
                f"WHERE name = ? {in_scope}",
                (name, *scope_args),
            )
            .fetchone()
        )
        return None if row is None else ExperimentRecord(str(row[0]), row[1], row[2])

    @_in_sql
    def experiments(self) -> list[ExperimentRecord]:
        in_scope, scope_args = self._scope().on_experiments()
        rows = self._conn().execute(
            "SELECT experiment_id, name, lifecycle_stage FROM experiments "
            f"WHERE 1 {in_scope} ORDER BY experiment_id",
            scope_args,
        )
        return [ExperimentRecord(str(e), n, s) for e, n, s in rows]

    @_in_sql
    def find_finished(
        self, experiment_id: str, identity: str, not_before_ms: int | None = None
    ) -> RunRecord | None:
        where = (
            "experiment_id = ? AND status = ? AND lifecycle_stage = ? AND run_uuid IN "
            "(SELECT run_uuid FROM tags WHERE key = ? AND value = ?)"
        )
        args: list[Any] = [int(experiment_id), FINISHED, ACTIVE, schema.IDENTITY_TAG, identity]
        if not_before_ms is not None:
            where += " AND start_time >= ?"
            args.append(int(not_before_ms))
        found = self._records(where, args, limit=1)
        return found[0] if found else None

    @_in_sql
    def finished_runs(
        self,
        experiment_id: str,
        ended_since_ms: int | None = None,
        not_worker: str | None = None,
    ) -> Iterator[RunRecord]:
        where = "experiment_id = ? AND status = ? AND lifecycle_stage = ?"
        args: list[Any] = [int(experiment_id), FINISHED, ACTIVE]
        if ended_since_ms is not None:
            where += " AND end_time >= ?"
            args.append(int(ended_since_ms))
        if not_worker is None:
            return self._stream(where, args)
        # MLflow's `!=` on a tag: runs having the tag, with another value.
        on_tags = "AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value != ?)"
        return self._stream(where, args, on_tags, [schema.WORKER_TAG, not_worker])

    def finished_runs_of(
        self, experiment_id: str, identities: Collection[str]
    ) -> Iterator[RunRecord]:
        if not self._verdict().readable:  # MLflow's client has no read by identity
            wanted = set(identities)
            return (
                run
                for run in MlflowStore.finished_runs(self, experiment_id)
                if run.data.tags.get(schema.IDENTITY_TAG) in wanted
            )
        return self._stream(
            "experiment_id = ? AND status = ? AND lifecycle_stage = ?",
            [int(experiment_id), FINISHED, ACTIVE],
            "AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? "
            "AND value IN (SELECT value FROM json_each(?)))",
            [schema.IDENTITY_TAG, json.dumps(sorted(identities))],
        )

    def finished_tags(
        self, experiment_id: str, keys: Collection[str]
    ) -> Iterator[tuple[RunInfo, dict[str, str]]]:
        if not self._verdict().readable:
            return (
                (run.info, {k: v for k, v in run.data.tags.items() if k in keys})
                for run in MlflowStore.finished_runs(self, experiment_id)
            )
        runs = self._stream(
            "experiment_id = ? AND status = ? AND lifecycle_stage = ?",
            [int(experiment_id), FINISHED, ACTIVE],
            only_tags=sorted(keys),
        )
        return ((run.info, run.data.tags) for run in runs)

    def finished_counts(self, experiment_id: str, identities: Collection[str]) -> dict[str, int]:
        if not self._verdict().readable:
            runs = self.finished_runs_of(experiment_id, identities)
            return dict(Counter(run.data.tags[schema.IDENTITY_TAG] for run in runs))
        # Driven from the identity tags (one pass over them); each match checked on `runs`.
        wanted = json.dumps(sorted(identities))
        in_scope, scope_args = self._scope().on_runs("runs.experiment_id")
        rows = self._conn().execute(
            "SELECT tags.value, COUNT(*) FROM tags JOIN runs ON runs.run_uuid = tags.run_uuid "
            "WHERE tags.key = ? AND tags.value IN (SELECT value FROM json_each(?)) "
            f"AND runs.experiment_id = ? AND runs.status = ? AND runs.lifecycle_stage = ? "
            f"{in_scope} GROUP BY tags.value",
            [schema.IDENTITY_TAG, wanted, int(experiment_id), FINISHED, ACTIVE, *scope_args],
        )
        return {value: count for value, count in rows}

    @_in_sql
    def fetch_finished(self, experiment_id: str, run_ids: Sequence[str]) -> list[RunRecord]:
        found: list[RunRecord] = []
        for chunk in chunks([r for r in run_ids if r.isalnum()], ID_CHUNK):
            marks = ",".join("?" * len(chunk))
            where = "experiment_id = ? AND status = ? AND lifecycle_stage = ?"
            found += self._records(
                f"{where} AND run_uuid IN ({marks})", [int(experiment_id), FINISHED, ACTIVE, *chunk]
            )
        return found

    @_in_sql
    def runs_with_identity(self, experiment_id: str, identity: str, limit: int) -> list[RunRecord]:
        return self._records(
            "experiment_id = ? AND lifecycle_stage = ? AND run_uuid IN "
            "(SELECT run_uuid FROM tags WHERE key = ? AND value = ?)",
            [int(experiment_id), ACTIVE, schema.IDENTITY_TAG, identity],
            limit=limit,
        )

    @_in_sql
    def running_runs(self, experiment_id: str, not_worker: str | None = None) -> list[RunRecord]:
        where = "experiment_id = ? AND status = ? AND lifecycle_stage = ?"
        args: list[Any] = [int(experiment_id), RUNNING, ACTIVE]
        if not_worker is not None:
            where += " AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value != ?)"
            args += [schema.WORKER_TAG, not_worker]
        return self._records(where, args, limit=1000)

    @_in_sql
    def all_runs(self, experiment_id: str) -> Iterator[RunRecord]:
        return self._stream("experiment_id = ?", [int(experiment_id)])

    @_in_sql
    def get_run(self, run_id: str) -> RunRecord:
        """One run by id, or by the unique start of its id (tables show 8 characters)."""
        found = self._records("run_uuid = ?", [run_id]) if run_id.isalnum() else []
        if not found and schema.is_short_run_id(run_id):
            found = self._records("run_uuid LIKE ?", [run_id.lower() + "%"])
            if len(found) > 1:
                raise RunNotFoundError(
                    f"run id {run_id!r} is ambiguous in {self.uri}; give more of it "
                    "(luigiflow runs --full shows whole ids)"
                )
        if not found:
            raise RunNotFoundError(
                f"run {run_id!r} does not exist in {self.uri}; "
                "copy a run id from `luigiflow runs` or the MLflow UI"
            )
        return found[0]

    @_in_sql
    def get_runs(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        result: dict[str, RunRecord] = {}
        ids = [r for r in dict.fromkeys(run_ids) if r.isalnum()]
        for chunk in chunks(ids, ID_CHUNK):
            marks = ",".join("?" * len(chunk))
            result.update(
                (r.info.run_id, r) for r in self._records(f"run_uuid IN ({marks})", chunk)
            )
        return result
