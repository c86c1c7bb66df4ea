"""Checkpoints: a long task saves its state into its run as it goes, and the next
attempt of the same identity resumes from the newest one.

A checkpoint is a pickle in the run's artifacts (`luigiflow/checkpoints/`), uploaded at
once on a remote store (the process may be killed a moment later), with its step and
checksum in one tag. It holds the user's state and the random states of Python, NumPy
and PyTorch (those imported), restored on resume: a loop that draws from them resumes
bit-identically.

The next attempt looks at the earlier runs of its identity that did not finish (FAILED,
KILLED, or RUNNING with their worker gone), newest first, and loads the newest
checkpoint whose bytes match the recorded checksum; a task with a StepsParameter
without one may warm-start from a FINISHED run of the same training line
(`warm_start`). Either way the run takes the metric history of the run it continues
(every point up to the checkpoint's step, with its own time) and the parameters it
lacks, so the run that finishes charts the whole curve.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

from luigiflow._core import hashing
from luigiflow._engine import session as _session
from luigiflow._engine import warm_start
from luigiflow._engine.protocol import TrackedTask
from luigiflow._errors import ArtifactError
from luigiflow._store import artifacts, current, liveness, schema, signatures
from luigiflow._store.artifacts import RunWriter
from luigiflow._store.port import MetricPoint, RunStore
from luigiflow._store.records import FAILED, KILLED, RunRecord

# Earlier attempts of one identity looked at for a checkpoint.
WINDOW = 20
# Records of checkpoints whose file holds {"state", "rng"}; older ones hold the state only.
RNG_FORMAT = 2


@dataclass(frozen=True)
class Checkpoint:
    """The state a task saved with `checkpoint()`, the step, and the run it came from."""

    state: Any
    step: int
    run_id: str


def save(task: TrackedTask, writer: RunWriter, state: Any, step: int, keep: bool = False) -> None:
    """Store `state` as the run's newest checkpoint (the previous file is replaced unless
    it was kept)."""
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
        pickle.dump({"state": state, "rng": _rng_states()}, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(dest)  # a kill mid-write never leaves a half checkpoint under its name
    record: dict[str, Any] = {
        "step": step,
        "file": relpath,
        "sha256": hashing.file_digest(dest),
        "format": RNG_FORMAT,
        "at_ms": int(time.time() * 1000),
        "elapsed_s": round(_elapsed_s(writer), 3),
    }
    record = signatures.sign_checkpoint(writer.run_id, writer.experiment_id, record)
    store = current.get_store(writer.uri)
    if not writer.local:
        store.log_artifact(writer.run_id, str(dest), schema.CHECKPOINT_DIR)
    tags = {schema.CHECKPOINT_TAG: json.dumps(record)}
    kept = json.loads(writer.tags.get(schema.KEPT_CHECKPOINTS_TAG, "{}"))
    if keep:
        kept[str(step)] = record
        tags[schema.KEPT_CHECKPOINTS_TAG] = json.dumps(kept, sort_keys=True)
        writer.note_tag(schema.KEPT_CHECKPOINTS_TAG, tags[schema.KEPT_CHECKPOINTS_TAG])
    store.log_batch(writer.run_id, tags=tags)
    keep_files = {dest.name} | {pathlib.PurePosixPath(r["file"]).name for r in kept.values()}
    for older in folder.glob("step-*.pkl"):
        if older.name not in keep_files:
            older.unlink(missing_ok=True)


def _elapsed_s(writer: RunWriter) -> float:
    """Seconds of work behind the run's state: since this run started, plus what the
    run it continues had spent up to its checkpoint."""
    started = float(writer.tags.get(schema.HEARTBEAT_TAG) or time.time())
    return carried_s(writer.tags) + max(0.0, time.time() - started)


def carried_s(tags: dict[str, str]) -> float:
    """The seconds of work a run took over from the run it resumed or warm-started from."""
    origin = schema.origin_of(tags)
    if origin is None:
        return 0.0
    value = origin[1].get("elapsed_s")
    return float(value) if isinstance(value, int | float) else 0.0


def _rng_states() -> dict[str, Any]:
    """The global random states user code draws from; NumPy's and PyTorch's only when
    the task imported them (importing PyTorch here would cost seconds)."""
    states: dict[str, Any] = {"python": random.getstate()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        states["numpy"] = numpy.random.get_state()
    torch = sys.modules.get("torch")
    if torch is not None:
        states["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    if "numpy" in states:
        import numpy

        numpy.random.set_state(states["numpy"])
    if "torch" in states:
        import torch

        torch.set_rng_state(states["torch"])
        if "torch_cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["torch_cuda"])


def _unfinished(run: RunRecord, own_run_id: str) -> bool:
    if run.info.run_id == own_run_id:
        return False
    return run.info.status in (FAILED, KILLED) or liveness.worker_is_gone(run)


def _load(run: RunRecord, record: dict[str, Any]) -> Any | None:
    """The checkpoint's file unpickled, or None when it is untrusted, gone or damaged."""
    if not signatures.checkpoint_trusted(run, record):
        return None  # with a team key: never unpickle a checkpoint it did not sign
    path = artifacts.local_artifact_path(run.info.run_id, run.info.artifact_uri, record["file"])
    if not pathlib.Path(path).exists():
        return None  # removed: an older attempt may still have a good one
    data = path.read_bytes()  # hashed and unpickled from the same bytes
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        return None  # damaged: an older attempt may still have a good one
    return pickle.loads(data)


def last(task: TrackedTask, writer: RunWriter) -> Checkpoint | None:
    """The checkpoint this run continues from: the newest verified one of an earlier
    unfinished attempt, else (StepsParameter) a warm start's; None when there is none.

    The run being written records where it came from (`luigiflow.resumed_from` or
    `luigiflow.warm_started_from`) and takes that run's history up to the step.
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
        loaded = _load(run, record)
        if loaded is not None:
            return _continue(store, writer, run, record, loaded, schema.RESUMED_TAG)
    for source in warm_start.sources(task, store, exp_id):
        run = store.get_run(source.run_id)
        loaded = _load(run, source.record)
        if loaded is not None:
            return _continue(store, writer, run, source.record, loaded, schema.WARM_START_TAG)
    return None


def starting_point(task: TrackedTask, store: RunStore) -> str | None:
    """What `last()` would continue from, for `plan` (tags only: nothing is loaded):
    `will resume from run X after step K` / `will warm-start from run X at step K`.

    Asked of trainings (a StepsParameter) only: a plan of thousands of new tasks must
    not put one more question per task to the store."""
    if task.training() is None:
        return None
    exp_id = store.experiment_id(task.get_experiment_name())
    if exp_id is None:
        return None
    for run in store.runs_with_identity(exp_id, task.identity, WINDOW):
        raw = run.data.tags.get(schema.CHECKPOINT_TAG)
        if raw is not None and _unfinished(run, ""):
            return f"will resume from run {run.info.run_id} after step {json.loads(raw)['step']}"
    for source in warm_start.sources(task, store, exp_id):
        return f"will warm-start from run {source.run_id} at step {source.step}"
    return None


def _continue(
    store: RunStore,
    writer: RunWriter,
    source: RunRecord,
    record: dict[str, Any],
    loaded: Any,
    tag: str,
) -> Checkpoint:
    """Take over `source`'s history, parameters and random states at the checkpoint."""
    step = int(record["step"])
    if record.get("format") == RNG_FORMAT:
        state = loaded["state"]
        _restore_rng(loaded["rng"])
    else:  # written before checkpoints held random states
        state = loaded
    # A FINISHED run's values logged after its checkpoint are its own results (the
    # metrics it saved), not points of the curve this run continues.
    until = record.get("at_ms") if tag == schema.WARM_START_TAG else None
    for key, top in _adopt_history(store, source.info.run_id, writer.run_id, step, until).items():
        writer.steps[key] = max(top, writer.steps.get(key, top))
    own = store.get_run(writer.run_id).data.params
    missing = {k: v for k, v in source.data.params.items() if k not in own}
    if missing:  # what user code or autologging logged (MLflow params are write-once)
        store.log_batch(writer.run_id, params=missing)
    origin = {"run_id": source.info.run_id, "step": step}
    if isinstance(record.get("elapsed_s"), int | float):
        origin["elapsed_s"] = record["elapsed_s"]
    text = json.dumps(origin)
    store.set_tag(writer.run_id, tag, text)
    writer.note_tag(tag, text)
    return Checkpoint(state, step, source.info.run_id)


def _adopt_history(
    store: RunStore, source: str, run_id: str, step: int, until_ms: int | None
) -> dict[str, int]:
    """Copy `source`'s metric points up to `step` (and logged by `until_ms`, when given)
    into `run_id`, with their own steps and times, one point per key and step (the
    first logged). Returns the highest step copied per key."""
    chosen: dict[tuple[str, int], MetricPoint] = {}
    for point in sorted(store.metric_history(source), key=lambda p: p.timestamp_ms):
        if point.step > step or (until_ms is not None and point.timestamp_ms > until_ms):
            continue
        chosen.setdefault((point.key, point.step), point)
    points = list(chosen.values())
    if points:
        store.log_metric_points(run_id, points)
    top: dict[str, int] = {}
    for point in points:
        top[point.key] = max(point.step, top.get(point.key, point.step))
    return top
