"""Every use of MLflow internals (private names), each guarded with a public fallback.

Keeping them in this package means an MLflow upgrade is checked in one place: the
active run (`fluent`), the tracking store behind the client (`tracking_store`), what
MLflow accepts (`validation`) and its artifact repositories (`artifacts`).
"""

from __future__ import annotations

from luigiflow._store.mlflow_compat.artifacts import (
    delete_artifact_folder,
    is_local_artifact_uri,
    no_progress_bars,
    run_artifact_uri,
)
from luigiflow._store.mlflow_compat.fluent import (
    active_model_id,
    active_run_ids,
    end_active_run,
    end_active_run_if,
    end_all_active_runs,
    end_unended_killed,
    pop_active_run,
    start_active_run,
)
from luigiflow._store.mlflow_compat.tracking_store import (
    allow_sqlite_uri_filenames,
    can_hard_delete,
    flush_async_logging,
    hard_delete_run,
    latest_metric_positions,
    mlflow_version,
    open_store,
    quiet_migrations,
    retire_under_lock,
    schema_revisions,
    terminate,
    tune_sqlite,
    upgrade_store,
)
from luigiflow._store.mlflow_compat.validation import (
    invalid,
    is_inactive_experiment_error,
    not_found,
    validated_batch,
)

__all__ = [
    "active_model_id",
    "active_run_ids",
    "allow_sqlite_uri_filenames",
    "can_hard_delete",
    "delete_artifact_folder",
    "end_active_run",
    "end_active_run_if",
    "end_all_active_runs",
    "end_unended_killed",
    "flush_async_logging",
    "hard_delete_run",
    "invalid",
    "is_inactive_experiment_error",
    "is_local_artifact_uri",
    "latest_metric_positions",
    "mlflow_version",
    "no_progress_bars",
    "not_found",
    "open_store",
    "pop_active_run",
    "quiet_migrations",
    "retire_under_lock",
    "run_artifact_uri",
    "schema_revisions",
    "start_active_run",
    "terminate",
    "tune_sqlite",
    "upgrade_store",
    "validated_batch",
]
