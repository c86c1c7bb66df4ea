"""The store port for the tracking store in force (one per process and URI)."""

from __future__ import annotations

import os
import threading

from luigiflow._store import client, sqlite_file, sqlite_reads
from luigiflow._store.client import tracking_uri
from luigiflow._store.mlflow_store import MlflowStore

_lock = threading.RLock()  # reentrant: a Ctrl-C handler may ask while the main thread holds it
_stores: dict[tuple[int, str], MlflowStore] = {}


def get_store(uri: str | None = None) -> MlflowStore:
    """The store port for a tracking URI (default: the current one), one per process."""
    uri = uri or tracking_uri()
    key = (os.getpid(), uri)
    store = _stores.get(key)
    if store is None:
        # An existing embedded store of a known schema, or a tracking server, is read
        # without importing mlflow. An embedded store that does not exist yet reads as
        # empty and is created by the first write, never by a read (`plan`).
        made: MlflowStore
        path = sqlite_file.sqlite_path(uri)
        if sqlite_reads.readable(uri) or (path is not None and not path.exists()):
            made = sqlite_reads.SqliteStore(uri)
        else:
            # Imported here: a local store needs no HTTP client.
            from luigiflow._store import rest_reads, rest_writes

            made = rest_writes.ServerStore(uri) if rest_reads.usable(uri) else MlflowStore(uri)
        with _lock:
            store = _stores.setdefault(key, made)
    return store


def prepare_for_writes(uri: str | None = None) -> None:
    """Before a build: an embedded store that does not exist yet is created and migrated
    now (under its creation lock, as the first write would), so that the build's store
    port is the SQL one from its first read and write, not MLflow's client."""
    uri = uri or tracking_uri()
    path = sqlite_file.sqlite_path(uri)
    if path is None or path.exists():
        return
    client.get_client(uri)
    with _lock:
        made = _stores.get((os.getpid(), uri))
        if made is not None and type(made) is MlflowStore:
            del _stores[(os.getpid(), uri)]


def made_by_an_older_mlflow(uri: str) -> bool:
    """The embedded store's schema is older than the installed MLflow's (read without
    importing mlflow)."""
    path = sqlite_file.sqlite_path(uri)
    return path is not None and sqlite_file.older_revision(path) is not None


def migrate_if_asked(uri: str) -> None:
    """Before a build writes to a store an older MLflow made: migrated only when the user
    asked (`run --upgrade-store`), after a backup; otherwise one line says what to do.

    The SQL writes would fit many older schemas, but rows written as today's MLflow
    writes them into an older MLflow's tables are what neither MLflow expects.
    """
    path = sqlite_file.sqlite_path(uri)
    if path is None or not path.exists():
        return
    with sqlite_file.creation_lock(path):
        sqlite_file.refuse_silent_migration(path, uri, read_only=False, newer_ok=True)
