"""Checkpoints: a long task saves its state into its run as it goes, and the next
attempt of the same identity resumes from the newest one.

A checkpoint is a pickle in the run's artifacts (`luigiflow/checkpoints/`), uploaded at
once on a remote store (the process may be killed a moment later), with its step and
checksum in one tag. The next attempt looks at the earlier runs of its identity that
did not finish (FAILED, KILLED, or RUNNING with their worker gone), newest first, and
loads the newest checkpoint whose bytes match the recorded checksum.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
from dataclasses import dataclass
from typing import Any

from luigiflow._core import hashing
from luigiflow._engine import session as _session
from luigiflow._engine.protocol import TrackedTask
from luigiflow._errors import ArtifactError
from luigiflow._store import artifacts, current, liveness, schema, signatures
from luigiflow._store.artifacts import RunWriter
from luigiflow._store.records import FAILED, KILLED, RunRecord

# Earlier attempts of one identity looked at for a checkpoint.
WINDOW = 20


@dataclass(frozen=True)
class Checkpoint:
    """The state a task saved with `checkpoint()`, the step, and the run it came from."""

    state: Any
    step: int
    run_id: str


def save(task: TrackedTask, writer: RunWriter, state: Any, step: int) -> None:
    """Store `state` as the run's newest checkpoint (the previous file is replaced)."""
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ArtifactError(
            f"{task.get_task_family()}: checkpoint step must be a non-negative int, got {step!r}"
        )
    relpath = f"{schema.CHECKPOINT_DIR}/step-{step:09d}.pkl"
    folder = writer.root / schema.CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    dest = writer.root / relpath
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(dest)  # a kill mid-write never leaves a half checkpoint under its name
    record = {"step": step, "file": relpath, "sha256": hashing.file_digest(dest)}
    record = signatures.sign_checkpoint(writer.run_id, writer.experiment_id, record)
    store = current.get_store(writer.uri)
    if not writer.local:
        store.log_artifact(writer.run_id, str(dest), schema.CHECKPOINT_DIR)
    store.set_tag(writer.run_id, schema.CHECKPOINT_TAG, json.dumps(record))
    for older in folder.glob("step-*.pkl"):
        if older != dest:
            older.unlink(missing_ok=True)


def _unfinished(run: RunRecord, own_run_id: str) -> bool:
    if run.info.run_id == own_run_id:
        return False
    return run.info.status in (FAILED, KILLED) or liveness.worker_is_gone(run)


def last(task: TrackedTask, writer: RunWriter) -> Checkpoint | None:
    """The newest verified checkpoint of an earlier unfinished attempt, or None.

    The run being written records where it resumed from (tag `luigiflow.resumed_from`).
    """
    session = _session.of(task)
    store = session.store
    exp_id = store.experiment_id(task.get_experiment_name())
    if exp_id is None:
        return None
    for run in store.runs_with_identity(exp_id, task.identity, WINDOW):
        raw = run.data.tags.get(schema.CHECKPOINT_TAG)
        if raw is None or not _unfinished(run, writer.run_id):
            continue
        record = json.loads(raw)
        if not signatures.checkpoint_trusted(run, record):
            continue  # with a team key: never unpickle a checkpoint it did not sign
        path = artifacts.local_artifact_path(run.info.run_id, run.info.artifact_uri, record["file"])
        if not pathlib.Path(path).exists():
            continue  # removed: an older attempt may still have a good one
        data = path.read_bytes()  # hashed and unpickled from the same bytes
        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            continue  # damaged: an older attempt may still have a good one
        state = pickle.loads(data)
        store.set_tag(
            writer.run_id,
            schema.RESUMED_TAG,
            json.dumps({"run_id": run.info.run_id, "step": record["step"]}),
        )
        return Checkpoint(state, int(record["step"]), run.info.run_id)
    return None
