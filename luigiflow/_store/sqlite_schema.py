"""Which MLflow schema the SQL read and write paths can work on, judged by the tables and
columns they use, not by one alembic revision string.

Every MLflow release adds migrations, most of them to tables luigiflow never touches
(traces, jobs, gateways). A store is read in SQL when the tables and columns the reads
name exist, and written in SQL when the columns the writes name exist and every other
column of a table it inserts into can be left out (nullable or with a default). The
verdict is kept per connection and judged again when SQLite's `schema_version` (bumped by
every DDL statement, a migration's included) or the alembic revision changes.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

# What the SQL reads name (sqlite_reads).
READ_COLUMNS: dict[str, frozenset[str]] = {
    "alembic_version": frozenset({"version_num"}),
    "experiments": frozenset({"experiment_id", "name", "lifecycle_stage"}),
    "runs": frozenset(
        {
            "run_uuid",
            "experiment_id",
            "status",
            "start_time",
            "end_time",
            "artifact_uri",
            "lifecycle_stage",
            "name",
        }
    ),
    "tags": frozenset({"run_uuid", "key", "value"}),
    "params": frozenset({"run_uuid", "key", "value"}),
    "latest_metrics": frozenset({"run_uuid", "key", "value", "is_nan", "step", "timestamp"}),
}
# What the SQL writes insert (sqlite_writes); `experiments` is only read there.
INSERTED_COLUMNS: dict[str, frozenset[str]] = {
    "runs": frozenset(
        {
            "run_uuid",
            "name",
            "source_type",
            "source_name",
            "entry_point_name",
            "user_id",
            "status",
            "start_time",
            "end_time",
            "source_version",
            "lifecycle_stage",
            "artifact_uri",
            "experiment_id",
            "deleted_time",
        }
    ),
    "tags": frozenset({"key", "value", "run_uuid"}),
    "params": frozenset({"key", "value", "run_uuid"}),
    "metrics": frozenset({"key", "value", "is_nan", "timestamp", "step", "run_uuid"}),
    "latest_metrics": frozenset({"key", "value", "timestamp", "step", "is_nan", "run_uuid"}),
    "datasets": frozenset(
        {
            "dataset_uuid",
            "experiment_id",
            "name",
            "digest",
            "dataset_source_type",
            "dataset_source",
            "dataset_schema",
            "dataset_profile",
        }
    ),
    "inputs": frozenset(
        {"input_uuid", "source_type", "source_id", "destination_type", "destination_id", "step"}
    ),
    "input_tags": frozenset({"input_uuid", "name", "value"}),
}
WRITE_READS: dict[str, frozenset[str]] = {
    "experiments": frozenset({"experiment_id", "artifact_location", "lifecycle_stage"}),
}


@dataclass(frozen=True)
class Verdict:
    """What the SQL paths may do on a store, and why not where they may not."""

    revision: str | None
    readable: bool
    writable: bool
    workspaces: bool  # experiments carry MLflow's `workspace` column (MLflow 3.10+)
    why_not: str = ""


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, tuple[bool, bool, bool]]:
    """column -> (not null, has a default, in the primary key) of one table."""
    rows = conn.execute(
        'SELECT name, "notnull", dflt_value, pk FROM pragma_table_info(?)', (table,)
    )
    return {name: (bool(nn), default is not None, bool(pk)) for name, nn, default, pk in rows}


def _missing(conn: sqlite3.Connection, wanted: dict[str, frozenset[str]]) -> list[str]:
    missing = []
    for table, names in wanted.items():
        have = _columns(conn, table)
        if not have:
            missing.append(f"table {table}")
        missing += [f"{table}.{name}" for name in sorted(names - have.keys())]
    return missing


def judge(conn: sqlite3.Connection) -> Verdict:
    """The verdict on the schema `conn` sees now."""
    readable_missing = _missing(conn, READ_COLUMNS)
    revision = None
    if not readable_missing:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = None if row is None else str(row[0])
        if revision is None:
            readable_missing.append("an alembic revision")
    try:
        conn.execute("SELECT value FROM json_each('[]')")  # JSON1: reads by identity
    except sqlite3.Error:
        readable_missing.append("SQLite's JSON1 functions")
    workspaces = "workspace" in _columns(conn, "experiments")
    if readable_missing:
        why = "missing " + ", ".join(readable_missing)
        return Verdict(revision, False, False, workspaces, why)
    write_missing = _missing(conn, {**INSERTED_COLUMNS, **WRITE_READS})
    for table, names in INSERTED_COLUMNS.items():
        for name, (not_null, has_default, pk) in _columns(conn, table).items():
            # A newer column the writes do not know must be one MLflow may leave empty.
            if name not in names and not_null and not has_default and not pk:
                write_missing.append(f"a value for {table}.{name}")
    why = "missing " + ", ".join(write_missing) if write_missing else ""
    return Verdict(revision, True, not write_missing, workspaces, why)


def fingerprint(conn: sqlite3.Connection) -> tuple[int, str | None]:
    """What changes when the schema may have: SQLite's schema cookie, the revision."""
    version = int(conn.execute("PRAGMA schema_version").fetchone()[0])
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        row = None
    return version, None if row is None else str(row[0])


class Judged:
    """A verdict kept for one connection, judged again when its fingerprint changes."""

    def __init__(self) -> None:
        self._seen: tuple[int, str | None] | None = None
        self._verdict: Verdict | None = None

    def verdict(self, conn: sqlite3.Connection) -> Verdict:
        seen = fingerprint(conn)
        if self._verdict is None or seen != self._seen:
            self._verdict, self._seen = judge(conn), seen
        return self._verdict
