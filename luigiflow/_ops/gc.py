"""`luigiflow gc`: permanently remove deleted runs and stale failed attempts, with their files.

Only runs luigiflow made (they carry its identity tag) are ever considered: a
colleague's run in the same store, live or dead, is never touched. Of those, only
deleted runs and FAILED, KILLED or abandoned (no heartbeat) attempts go; a FINISHED
run that is not deleted, and a RUNNING one whose worker still beats, never do.

Removal is what `mlflow gc` does for one run (delete its artifacts, then hard-delete
its row); we call those two operations per run because `mlflow gc --run-ids` would
also purge every deleted experiment and logged model in the store, which is not ours
to decide.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from luigiflow._errors import LuigiflowError, RunNotFoundError
from luigiflow._store import artifacts, client, current, liveness, mlflow_compat, schema
from luigiflow._store.records import RunRecord as Run


@dataclass
class Garbage:
    """One run gc removes (or would remove, on a dry run)."""

    run_id: str
    experiment: str
    family: str
    status: str
    reason: str
    bytes: int


def find_garbage(older_than_days: float | None = None, task: str | None = None) -> list[Garbage]:
    """Deleted runs, and FAILED/KILLED/abandoned runs, older than the limit."""
    store = current.get_store()
    limit_ms = (time.time() - (older_than_days or 0) * 86400) * 1000
    experiments = [e for e in store.experiments() if e.lifecycle_stage == "active"]
    if task is not None:
        experiments = [e for e in experiments if e.name == task] or experiments
    found: list[Garbage] = []
    runs: list[Run] = []
    for exp in experiments:
        for run in store.all_runs(exp.experiment_id):
            if schema.IDENTITY_TAG not in run.data.tags:
                continue  # not made by luigiflow: never ours to remove
            family = run.data.tags.get(schema.FAMILY_TAG, "")
            if task is not None and task not in (exp.name, family):
                continue
            reason = _reason(run, limit_ms)
            if reason:
                runs.append(run)
                found.append(Garbage(run.info.run_id, exp.name, family, run.info.status, reason, 0))
    freed = artifacts.freed_bytes(runs)
    for item in found:
        item.bytes = freed.get(item.run_id, 0)
    if task is not None and not found and not any(e.name == task for e in experiments):
        known = {e.name for e in experiments}
        if task not in known:
            raise RunNotFoundError(f"no experiment or task named {task!r} to collect")
    return found


def _reason(run: Run, limit_ms: float) -> str | None:
    info = run.info
    when = info.end_time or info.start_time or 0
    if info.lifecycle_stage == "deleted":
        return "deleted run" if when <= limit_ms else None
    if info.status in ("FAILED", "KILLED") and when <= limit_ms:
        return f"{info.status.lower()} attempt"
    if liveness.is_abandoned(run) and (info.start_time or 0) <= limit_ms:
        return "abandoned (no heartbeat)"
    return None  # FINISHED and active, or still alive: never touched


def remove(garbage: list[Garbage], backend_store_uri: str | None = None) -> None:
    """Delete each run's artifacts and then the run itself, permanently."""
    uri = backend_store_uri or client.tracking_uri()
    if not mlflow_compat.can_hard_delete(uri):
        raise LuigiflowError(
            f"the store {uri} cannot delete runs permanently from here; run gc with "
            "--backend-store-uri set to the tracking server's database URI"
        )
    store = current.get_store()
    for item in garbage:
        run = store.get_run(item.run_id)
        if run.info.status == "FINISHED" and run.info.lifecycle_stage != "deleted":
            continue  # changed since it was listed: never remove a live result
        if run.info.status == "RUNNING":
            liveness.retire(store, run)
        mlflow_compat.delete_artifact_folder(run.info.artifact_uri)
        mlflow_compat.hard_delete_run(uri, item.run_id)
