"""The embedded store's SQLite file: created once under a lock, judged before use,
opened read-only where it cannot be written.

MLflow creates and migrates a SQLite store the first time a client touches it. Two
processes doing that at once race in the migration (`table _alembic_tmp_... already
exists`, `duplicate column name`) and can leave the file broken for good, so luigiflow
holds an exclusive lock on `<db>.lock` while it judges, creates or migrates the file.
The judgement happens under that same lock because SQLite itself creates an empty
file before it writes the first page: only the lock holder may call an empty file new.

A store that cannot be written (a read-only mount, a snapshot) is opened with
SQLite's `immutable` flag: reads work, and any write says "read-only store".
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

from luigiflow import _settings
from luigiflow._core import platform
from luigiflow._errors import TrackingError
from luigiflow._store import sqlite_schema

_HEADER = b"SQLite format 3\x00"


def sqlite_path(uri: str) -> pathlib.Path | None:
    """The database file of a `sqlite:///path` URI (None for other stores, `:memory:`)."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = urllib.parse.unquote(uri[len("sqlite:///") :].split("?", 1)[0])
    if not raw or raw == ":memory:" or raw.startswith("file:"):
        return None
    return pathlib.Path(raw)


def is_read_only(path: pathlib.Path) -> bool:
    """The store's folder (or the file itself) cannot be written by this process."""
    folder = path.parent
    if path.exists() and not os.access(path, os.W_OK):
        return True
    return folder.exists() and not os.access(folder, os.W_OK)


def file_uri(path: str | pathlib.Path, query: str) -> str:
    """SQLite's URI filename for `path` (`%`, `?` and `#` in folder names escaped)."""
    return f"file:{urllib.parse.quote(str(path))}?{query}"


def read_only_uri(path: pathlib.Path) -> str:
    """A SQLAlchemy URI that reads `path` without ever creating or locking a file.

    `immutable=1` is needed on a read-only mount: a store left in WAL mode could not
    otherwise be opened (SQLite would have to create its `-shm` file).
    """
    return "sqlite:///" + file_uri(path, "mode=ro&immutable=1&uri=true")


# Descriptors of store files this process read, never closed: closing *any* descriptor of a
# file drops every POSIX lock the process holds on it, SQLite's included. A build judges
# the store after its reads opened connections; a close there let another process delete
# the WAL this process was still committing into (sqlite.org/howtocorrupt.html, 2.2).
_held: dict[tuple[int, int], int] = {}


def _header(path: pathlib.Path) -> tuple[bytes, int]:
    """The file's first 100 bytes and size, read through a descriptor kept open."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino)
    fd = _held.get(key)
    if fd is None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        _held[key] = fd
    return platform.read_at(fd, 100, 0), os.fstat(fd).st_size


def judge(path: pathlib.Path) -> None:
    """Refuse a file that is not a whole SQLite database (call with the lock held)."""
    try:
        header, size = _header(path)
    except FileNotFoundError:
        return  # a new store: MLflow creates it
    if size == 0:
        raise TrackingError(
            f"the store {path} is an empty file (0 bytes), not an MLflow store; luigiflow "
            "will not start a fresh store over it: restore it from a backup, or delete it "
            "to start a new, empty store"
        )
    if not header.startswith(_HEADER) or len(header) < 100:
        raise TrackingError(
            f"the store {path} is not an SQLite database (it may be corrupted or another "
            "kind of file): restore it from a backup, or point MLFLOW_TRACKING_URI elsewhere"
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The header's page count is valid when its "version valid for" matches the change
    # counter (every SQLite since 3.7.0 writes both).
    if header[92:96] == header[24:28] and size < pages * page_size:
        raise TrackingError(
            f"the store {path} is truncated ({size} bytes on disk, its header says "
            f"{pages * page_size}): restore it from a backup"
        )


_peeks: dict[tuple[int, str, bool], sqlite3.Connection] = {}


def peek(path: str | pathlib.Path, read_only: bool = False) -> sqlite3.Connection:
    """A read-only connection for a quick look at a store file, kept (never closed, see
    `_held`: closing it would drop the locks of this process's other connections)."""
    key = (os.getpid(), str(path), read_only)
    conn = _peeks.get(key)
    if conn is None:
        # On a read-only mount a store left in WAL mode opens only as immutable.
        query = "mode=ro&immutable=1" if read_only else "mode=ro"
        conn = sqlite3.connect(file_uri(path, query), uri=True, timeout=30, check_same_thread=False)
        _peeks[key] = conn
    return conn


def _revision(path: pathlib.Path, read_only: bool) -> tuple[bool, str | None]:
    """(the file holds MLflow's tables, their alembic revision)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False, None
    conn = peek(path, read_only)
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    if "experiments" not in names:
        return False, None
    if "alembic_version" not in names:
        return True, None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return True, None if row is None else str(row[0])


def backup_path(path: pathlib.Path, revision: str | None) -> pathlib.Path:
    """Where the copy of a store taken before migrating it goes (never over another)."""
    stem = f"{path.name}.before-upgrade-{revision or 'unversioned'}"
    candidate, n = path.with_name(stem + ".bak"), 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{stem}.{n}.bak")
    return candidate


def older_revision(path: pathlib.Path) -> str | None:
    """The store's schema revision when it is older than the installed MLflow's head."""
    from luigiflow._store import mlflow_compat

    try:
        tables, revision = _revision(path, is_read_only(path))
    except sqlite3.Error:
        return None  # judged, with its one-line error, where the store is opened
    if not tables:
        return None
    head, known = mlflow_compat.schema_revisions()
    if revision == head or (revision is not None and revision not in known):
        return None
    return revision or "unversioned"


def refuse_silent_migration(
    path: pathlib.Path, uri: str, read_only: bool, newer_ok: bool = False
) -> None:
    """Before MLflow's client opens an existing store (call with the creation lock held).

    MLflow migrates a store whose tables are older than its own when it opens it, for
    good: the MLflow that made it cannot open it afterwards. A store of another schema
    revision is migrated only when the user asked (`run --upgrade-store`), after a backup
    copy; otherwise one line says what to do. Reads the SQL path can answer never get here.
    """
    # Here, not at the top: the read path imports this module and needs none of it.
    from luigiflow._store import mlflow_compat

    tables, revision = _revision(path, read_only)
    if not tables:
        return  # a new store: MLflow creates it
    head, known = mlflow_compat.schema_revisions()
    if revision == head:
        return
    if revision is not None and revision not in known:
        if newer_ok:  # the SQL writes judge its columns; MLflow's code is not needed yet
            return
        raise TrackingError(
            f"the store {path} has MLflow schema revision {revision}, which the installed "
            f"MLflow {mlflow_compat.mlflow_version()} does not know (a newer MLflow made or "
            "upgraded it): install that MLflow or a newer one to use it"
        )
    backup = backup_path(path, revision)
    if read_only or not _settings.upgrade_store_allowed():
        how = (
            "work on a writable copy"
            if read_only
            else "or rerun the build with --upgrade-store (LUIGIFLOW_UPGRADE_STORE=1) to "
            "back it up and migrate it"
        )
        raise TrackingError(
            f"the store {path} has an older MLflow schema (revision {revision}; MLflow "
            f"{mlflow_compat.mlflow_version()} writes {head}) and luigiflow never migrates a "
            f"store silently: back it up (cp {path} {backup}), then run `mlflow db upgrade "
            f"{uri}`, {how}"
        )
    target = sqlite3.connect(backup)
    try:
        peek(path).backup(target)  # a consistent copy, the WAL's commits included
    finally:
        target.close()  # the copy's own connection: closing it touches no lock of the store
    sys.stderr.write(
        f"luigiflow: migrating the store {path} from MLflow schema {revision} to {head} "
        f"(MLflow {mlflow_compat.mlflow_version()}); the store as it was: {backup}\n"
    )
    mlflow_compat.upgrade_store(uri)


def stores_above(path: pathlib.Path) -> list[pathlib.Path]:
    """Stores named like `path` in the folders above it, up to the git root (or `/`)."""
    found = []
    for folder in path.parent.resolve().parents:
        candidate = folder / path.name
        if candidate.is_file():
            found.append(candidate)
        if (folder / ".git").exists():
            break
    return found


def announce_new_store(path: pathlib.Path) -> None:
    """One line when a build creates a store (running from another folder quietly started
    an empty one): which file, and a project's existing store above it, if any."""
    line = f"luigiflow: creating a new, empty store {path}"
    above = stores_above(path)
    if above:
        line += (
            f"; this project's store may be {above[0]}: run from {above[0].parent} or set "
            f"MLFLOW_TRACKING_URI=sqlite:///{urllib.parse.quote(str(above[0]))} to use it"
        )
    sys.stderr.write(line + "\n")


def broken_store_error(path: pathlib.Path, exc: BaseException) -> TrackingError | None:
    """The one-line error for an SQLite failure that means the file itself is damaged."""
    text = str(exc).lower()
    damaged = ("malformed", "not a database", "file is encrypted", "disk image")
    if any(word in text for word in damaged):
        return TrackingError(
            f"the store {path} is corrupted ({str(exc).splitlines()[0][:200]}): restore it "
            "from a backup"
        )
    return None


def read_only_error(path: pathlib.Path, doing: str) -> TrackingError:
    return TrackingError(
        f"read-only store: {path} cannot be written ({doing}); reading works, but to run "
        "tasks use a writable copy of the store or a writable MLFLOW_TRACKING_URI"
    )


@contextlib.contextmanager
def creation_lock(path: pathlib.Path) -> Iterator[None]:
    """Hold an exclusive lock on `<db>.lock` (blocking) while the store is made ready."""
    with platform.exclusive_lock(path.with_name(path.name + ".lock")):
        yield


# What the reads name, empty: the answer of a store that does not exist yet. Reading it
# must create nothing (`plan` in a new folder), so reads go here until the file exists.
_EMPTY_SCHEMA = """
CREATE TABLE alembic_version (version_num TEXT);
INSERT INTO alembic_version VALUES ('none yet');
CREATE TABLE experiments (experiment_id INTEGER, name TEXT, lifecycle_stage TEXT,
    artifact_location TEXT);
CREATE TABLE runs (run_uuid TEXT, experiment_id INTEGER, status TEXT, start_time INTEGER,
    end_time INTEGER, artifact_uri TEXT, lifecycle_stage TEXT, name TEXT);
CREATE TABLE tags (run_uuid TEXT, key TEXT, value TEXT);
CREATE TABLE params (run_uuid TEXT, key TEXT, value TEXT);
CREATE TABLE latest_metrics (run_uuid TEXT, key TEXT, value REAL, is_nan INTEGER,
    step INTEGER, timestamp INTEGER);
"""


def _empty_store() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.executescript(_EMPTY_SCHEMA)
    return conn


# Connections a forked child inherited from its parent: kept, never closed there either.
_inherited: list[sqlite3.Connection] = []


class LocalConnections:
    """One connection to a store file per thread and process, never closed.

    Closing a descriptor of the file drops every POSIX lock this process holds on it
    (see `judge`), and a forked child must not close (or use) its parent's connection:
    it opens its own. Pickled with a task into a spawned worker, connections stay behind.
    """

    def __init__(self, path: str, read_only: bool) -> None:
        self.path = path
        self.read_only = read_only
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "read_only": self.read_only}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.read_only = state["path"], state["read_only"]
        self._local = threading.local()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        stand_in = getattr(self._local, "stand_in", False)
        if (
            conn is None
            or getattr(self._local, "pid", None) != os.getpid()
            or (stand_in and os.path.exists(self.path))  # the store was created meanwhile
        ):
            if conn is not None and not stand_in:
                _inherited.append(conn)
            self._local.stand_in = self.read_only and not os.path.exists(self.path)
            conn = _empty_store() if self._local.stand_in else self._open()
            self._local.conn, self._local.pid = conn, os.getpid()
            self._local.judged = sqlite_schema.Judged()
        return conn

    def verdict(self) -> sqlite_schema.Verdict:
        """What the SQL paths may do on the schema this thread's connection sees now
        (kept per connection, judged again when the schema or its revision changes)."""
        conn = self.get()
        judged: sqlite_schema.Judged = self._local.judged
        return judged.verdict(conn)

    def _open(self) -> sqlite3.Connection:
        if self.read_only:
            return sqlite3.connect(file_uri(self.path, "mode=ro"), uri=True, timeout=30)
        # Autocommit: transactions are begun explicitly (see sqlite_writes).
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")  # as MLflow's engine (tune_sqlite)
        return conn
