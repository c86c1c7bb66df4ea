"""`luigiflow gc`: permanently remove deleted runs and stale failed attempts, with their files.

Only runs luigiflow made (they carry its identity tag) are ever considered: a
colleague's run in the same store, live or dead, is never touched. Of those, only
deleted runs and FAILED, KILLED or abandoned (no heartbeat) attempts go; a FINISHED
run that is not deleted, and a RUNNING one whose worker still beats, never do. Nor does
a run that such a run came from (it resumed or warm-started from it, or consumed it as
an upstream), nor, in turn, what that kept run came from: provenance outlives nothing
it explains. A dry run lists those it keeps and why.

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


@dataclass
class Kept:
    """A run gc would otherwise remove, kept because a run that stays came from it."""

    run_id: str
    experiment: str
    family: str
    status: str
    reason: str  # why it would go, then who keeps it: "killed attempt; run X ... from it"


def find_garbage(older_than_days: float | None = None, task: str | None = None) -> list[Garbage]:
    """Deleted runs, and FAILED/KILLED/abandoned runs, older than the limit."""
    return collect(older_than_days, task)[0]


def collect(
    older_than_days: float | None = None, task: str | None = None
) -> tuple[list[Garbage], list[Kept]]:
    """What `find_garbage` returns, and the runs it keeps for provenance (see the module)."""
    store = current.get_store()
    limit_ms = (time.time() - (older_than_days or 0) * 86400) * 1000
    active = [e for e in store.experiments() if e.lifecycle_stage == "active"]
    experiments = active
    if task is not None:
        experiments = [e for e in active if e.name == task] or active
    chosen = {e.experiment_id for e in experiments}
    # Every experiment is read for who keeps what (lineage crosses experiments); only
    # the candidates are held, and the links of the runs that have any.
    keepers = _Keepers()
    candidates: list[tuple[str, str, Run, str]] = []
    for exp in active:
        for run in store.all_runs(exp.experiment_id):
            if schema.IDENTITY_TAG not in run.data.tags:
                continue  # not made by luigiflow: never ours to remove
            keepers.note(run)
            family = run.data.tags.get(schema.FAMILY_TAG, "")
            if exp.experiment_id not in chosen or (
                task is not None and task not in (exp.name, family)
            ):
                continue
            reason = _reason(run, limit_ms)
            if reason:
                candidates.append((exp.name, family, run, reason))
    kept_by = keepers.closure()
    found: list[Garbage] = []
    kept: list[Kept] = []
    runs: list[Run] = []
    for exp_name, family, run, reason in candidates:
        info = run.info
        if info.run_id in kept_by:
            why = f"{reason}; {kept_by[info.run_id]}"
            kept.append(Kept(info.run_id, exp_name, family, info.status, why))
            continue
        runs.append(run)
        found.append(Garbage(info.run_id, exp_name, family, info.status, reason, 0))
    freed = artifacts.freed_bytes(runs)
    for item in found:
        item.bytes = freed.get(item.run_id, 0)
    if task is not None and not found and not any(e.name == task for e in experiments):
        known = {e.name for e in experiments}
        if task not in known and not kept:
            raise RunNotFoundError(f"no experiment or task named {task!r} to collect")
    return found, kept


class _Keepers:
    """Which runs the runs that stay came from: run id -> why it is kept."""

    def __init__(self) -> None:
        self.sources: dict[str, list[tuple[str, str]]] = {}  # run id -> (source, how)
        self.staying: dict[str, str] = {}  # run id -> its status, for runs that stay

    def note(self, run: Run) -> None:
        tags = run.data.tags
        links = [
            (rid, f"consumed it (upstream {name!r})")
            for name, rid in schema.upstream_ids(tags).items()
        ]
        origin = schema.origin_of(tags)
        if origin is not None:
            links.append((str(origin[1]["run_id"]), f"{origin[0]} from it"))
        if not links:
            return  # it keeps nothing, whether it stays or not
        self.sources[run.info.run_id] = links
        info = run.info
        alive = info.status == "RUNNING" and not liveness.is_abandoned(run)
        if info.lifecycle_stage != "deleted" and (info.status == "FINISHED" or alive):
            self.staying[info.run_id] = info.status

    def closure(self) -> dict[str, str]:
        """Every run a staying run came from, directly or through a kept run."""
        kept: dict[str, str] = {}
        todo = [(rid, f"run {rid} ({status})") for rid, status in self.staying.items()]
        while todo:
            rid, who = todo.pop()
            for source, how in self.sources.get(rid, []):
                if source in kept or source in self.staying:
                    continue
                kept[source] = f"kept: {who} {how}"
                todo.append((source, f"run {source} (kept)"))
        return kept


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
    for item in garbage:
        # Looked at again under the store's write lock, right before removal: a run that
        # finished, or whose worker resumed (a fresh heartbeat), since it was listed stays.
        run, _ = mlflow_compat.retire_under_lock(uri, item.run_id, _retire_if_abandoned)
        if run is None:
            continue  # removed meanwhile
        if run.info.status == "FINISHED" and run.info.lifecycle_stage != "deleted":
            continue  # changed since it was listed: never remove a live result
        if run.info.status == "RUNNING" and not liveness.is_abandoned(run):
            continue  # its worker is alive again: never ours to remove
        mlflow_compat.delete_artifact_folder(run.info.artifact_uri)
        mlflow_compat.hard_delete_run(uri, item.run_id)


def _retire_if_abandoned(run: Run) -> dict[str, str] | None:
    """The tags marking `run` KILLED when it is RUNNING and abandoned, else None."""
    if not liveness.is_abandoned(run):
        return None
    return {schema.ERROR_TAG: liveness.retire_reason(run)}
