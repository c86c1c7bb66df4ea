"""`luigiflow gc`: permanently remove deleted runs and stale failed attempts, with their files.

Never touches a FINISHED run that is not deleted. Removal is what `mlflow gc` does for
one run (delete its artifacts, then hard-delete its row); we call those two operations
per run because `mlflow gc --run-ids` would also purge every deleted experiment and
logged model in the store, which is not ours to decide.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from luigiflow import _liveness, _lookup, _tracking
from luigiflow._errors import LuigiflowError, RunNotFoundError
from luigiflow._task import FAMILY_TAG

if TYPE_CHECKING:
    from mlflow.entities import Run


@dataclass
class Garbage:
    """One run gc removes (or would remove, on a dry run)."""

    run_id: str
    experiment: str
    family: str
    status: str
    reason: str
    bytes: int


def _artifact_bytes(run: Run) -> int:
    from luigiflow import _artifacts

    uri = run.info.artifact_uri
    if _artifacts.is_local_uri(uri):
        root = _artifacts.local_path_of(uri)
        if not root.exists():
            return 0
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    client = _tracking.get_client()

    def walk(path: str | None) -> int:
        total = 0
        for item in client.list_artifacts(run.info.run_id, path):
            total += walk(item.path) if item.is_dir else int(item.file_size or 0)
        return total

    try:
        return walk(None)
    except Exception:
        return 0


def find_garbage(older_than_days: float | None = None, task: str | None = None) -> list[Garbage]:
    """Deleted runs, and FAILED/KILLED/abandoned runs, older than the limit."""
    from mlflow.entities import ViewType

    client = _tracking.get_client()
    limit_ms = (time.time() - (older_than_days or 0) * 86400) * 1000
    experiments = [e for e in _lookup._all_experiments() if e.lifecycle_stage == "active"]
    if task is not None:
        experiments = [e for e in experiments if e.name == task] or experiments
    found: list[Garbage] = []
    for exp in experiments:
        token = None
        while True:
            with _tracking.translate_errors(f"listing runs of experiment {exp.name!r}"):
                page = client.search_runs(
                    [exp.experiment_id],
                    run_view_type=ViewType.ALL,
                    max_results=5000,
                    page_token=token,
                )
            for run in page:
                family = run.data.tags.get(FAMILY_TAG, "")
                if task is not None and task not in (exp.name, family):
                    continue
                reason = _reason(run, limit_ms)
                if reason:
                    found.append(
                        Garbage(
                            run.info.run_id,
                            exp.name,
                            family,
                            run.info.status,
                            reason,
                            _artifact_bytes(run),
                        )
                    )
            token = page.token
            if not token:
                break
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
    if _liveness.is_abandoned(run) and (info.start_time or 0) <= limit_ms:
        return "abandoned (no heartbeat)"
    return None  # FINISHED and active, or still alive: never touched


def remove(garbage: list[Garbage], backend_store_uri: str | None = None) -> None:
    """Delete each run's artifacts and then the run itself, permanently."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracking._tracking_service.utils import _get_store

    uri = backend_store_uri or _tracking.tracking_uri()
    store: Any = _get_store(uri)
    if not hasattr(store, "_hard_delete_run"):
        raise LuigiflowError(
            f"the store {uri} cannot delete runs permanently from here; run gc with "
            "--backend-store-uri set to the tracking server's database URI"
        )
    client = _tracking.get_client()
    for item in garbage:
        run = client.get_run(item.run_id)
        if run.info.status == "FINISHED" and run.info.lifecycle_stage != "deleted":
            continue  # changed since it was listed: never remove a live result
        if run.info.status == "RUNNING":
            _liveness.retire(run)
        repo = get_artifact_repository(run.info.artifact_uri)
        try:
            repo.delete_artifacts()
        except Exception as exc:  # a missing folder is already clean
            if "No such file" not in str(exc) and "does not exist" not in str(exc):
                raise
        store._hard_delete_run(item.run_id)
