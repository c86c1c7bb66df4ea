"""MLflow workspaces (MLflow 3.10+) on the embedded store's SQL paths, as MLflow's client
applies them.

MLflow keeps each experiment's workspace in `experiments.workspace`; experiment names
are unique per workspace. With `MLFLOW_ENABLE_WORKSPACES` on, its client sees only the
experiments of `MLFLOW_WORKSPACE` and the runs in them (`WorkspaceAwareSqlAlchemyStore`
joins every run query to `experiments`); with it off, it sees everything but refuses to
open a store that holds experiments outside the `default` workspace. The SQL reads and
writes add the same conditions, so they never answer with another workspace's runs.
"""

from __future__ import annotations

import pathlib
import sqlite3
from dataclasses import dataclass
from typing import Any

from luigiflow import _settings
from luigiflow._errors import TrackingError

DEFAULT = "default"


@dataclass(frozen=True)
class Scope:
    """The experiments a store's reads and writes are confined to."""

    workspace: str | None  # None: every experiment (workspaces off)
    has_column: bool  # the store has MLflow's `experiments.workspace` (3.10+)

    def on_experiments(self) -> tuple[str, list[Any]]:
        """A condition (`AND ...`) on table `experiments`, and its arguments."""
        if self.workspace is None:
            return "", []
        if not self.has_column:  # a store from before workspaces: all of it is `default`
            return ("", []) if self.workspace == DEFAULT else ("AND 0", [])
        return "AND workspace = ?", [self.workspace]

    def on_runs(self, column: str = "experiment_id") -> tuple[str, list[Any]]:
        """A condition (`AND ...`) on a table whose `column` is an experiment id."""
        condition, args = self.on_experiments()
        if not condition or condition == "AND 0":
            return condition, args
        return (
            f"AND {column} IN (SELECT experiment_id FROM experiments WHERE workspace = ?)",
            args,
        )


def scope(conn: sqlite3.Connection, has_column: bool, path: str | pathlib.Path) -> Scope:
    """The scope in force for the store at `path` (the environment read now)."""
    workspace = _settings.mlflow_workspace()
    if workspace is None and has_column:
        refuse_other_workspaces(conn, path)
    return Scope(workspace, has_column)


def refuse_other_workspaces(conn: sqlite3.Connection, path: str | pathlib.Path) -> None:
    """With workspaces off, MLflow refuses a store holding another workspace's experiments."""
    row = conn.execute(
        "SELECT workspace FROM experiments WHERE workspace IS NOT NULL AND workspace != ? "
        "ORDER BY workspace LIMIT 1",
        (DEFAULT,),
    ).fetchone()
    if row is not None:
        raise TrackingError(
            f"the store {path} holds experiments in MLflow workspace {row[0]!r} (not only "
            f"{DEFAULT!r}), which MLflow opens only with workspaces on: set "
            f"{_settings.WORKSPACES_ON}=true and {_settings.WORKSPACE}=<name>"
        )
