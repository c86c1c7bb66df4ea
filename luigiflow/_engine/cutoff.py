"""Early cutoff: a task about to execute whose upstream re-ran with byte-identical
outputs takes the results of its run made from the earlier upstream run instead of
computing them again (docs/identity.md, "Early cutoff").

A FINISHED run R of the task's experiment is *equivalent* to the task now when

- R's identity is the task's identity computed with, for an upstream, the identity of
  an earlier run of that upstream's experiment that recorded the same artifact
  checksums as the upstream run consumed now (same module, family, version,
  parameters, code: only the upstream runs differ), and
- every upstream run R consumed recorded the same artifact checksums as the upstream
  run the task consumes now (an artifact never changes after FINISHED, so a checksum
  match is a byte match).

The task's own run is then still created, with its own identity and the upstream runs
it consumed now (lineage stays exact), but its artifacts and metrics are R's, copied,
and it carries `luigiflow.cutoff_from` = R: nothing of the user's code runs.
"""

from __future__ import annotations

import itertools
import json
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from luigiflow._core.identity import compute_identity
from luigiflow._store import artifacts as _artifacts
from luigiflow._store import checksums, current, schema
from luigiflow._store.records import RunRecord

# How many of the newest FINISHED runs of an upstream experiment are searched for an
# earlier producer of the same bytes: a cutoff is for the run made just before the
# upstream re-ran, not for archaeology.
WINDOW = 20
UPSTREAM_PART = 4  # where the upstream identities are in MlflowTask._identity_parts()

# Per build (session): experiment id -> its newest FINISHED runs, read once. Earlier
# producers are older than the build, so a snapshot taken during it holds them.
_snapshots: weakref.WeakKeyDictionary[Any, dict[str, list[RunRecord]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def equivalent_run(
    task: Any, session: Any, exp_id: str, upstream_runs: Mapping[str, RunRecord]
) -> RunRecord | None:
    """R as above, or None (no upstream run, no earlier producer, or any doubt).

    Costs one read of each upstream experiment per build; two more questions only when
    an upstream's outputs were produced before by another run."""
    if not upstream_runs or not getattr(task, "early_cutoff", True):
        return None
    if task.identity in session.completion.not_before:
        return None  # --force, --rerun, --rerun-changed, always_changed: execute it
    if getattr(task, "models", None):
        return None  # model bundles are logged, not copied: never cut off
    if task.get_experiment_name() in session.completion.new_in_build:
        return None  # no run of the task is older than this build
    # compute_identity's arguments, upstream identities fifth (see MlflowTask)
    parts = list(task._identity_parts())
    upstream = parts[UPSTREAM_PART]
    then = dict(upstream)
    for name, now in upstream_runs.items():
        earlier = _earlier_producer(session, now)
        if earlier is not None:
            then[name] = _identity(earlier)
    if then == upstream:
        return None
    parts[UPSTREAM_PART] = then
    identity = compute_identity(*parts)
    run = session.completion.query(exp_id, identity)
    if run is None:
        return None
    # R's identity names the upstream identities it consumed; its upstream runs' own
    # checksums are what it read: they must be the bytes consumed now.
    consumed = schema.upstream_ids(run.data.tags)
    if set(upstream_runs) - set(consumed):
        return None
    before = session.store.get_runs([consumed[n] for n in upstream_runs])
    for name, now in upstream_runs.items():
        was = before.get(consumed[name])
        if was is None or _outputs(was) != _outputs(now):
            return None
    return run


def _earlier_producer(session: Any, now: RunRecord) -> RunRecord | None:
    """The newest run of `now`'s experiment with another identity and the same outputs."""
    outputs = _outputs(now)
    if not outputs:
        return None
    exp_id = now.info.experiment_id
    with _lock:
        cached = _snapshots.setdefault(session, {}).get(exp_id)
    if cached is None:
        newest = session.store.finished_runs(exp_id)
        try:
            cached = list(itertools.islice(newest, WINDOW))
        finally:
            close = getattr(newest, "close", None)
            if close is not None:
                close()  # a streamed SQL read stops here
        with _lock:
            _snapshots[session][exp_id] = cached
    for run in cached:
        if (
            _identity(run) != _identity(now)
            and session.completion.counts(run)
            and _outputs(run) == outputs
        ):
            return run
    return None


def _identity(run: RunRecord) -> str:
    return str(run.data.tags.get(schema.IDENTITY_TAG, ""))


def _outputs(run: RunRecord) -> dict[str, Any]:
    """Artifact name -> what says its content (size and digests; not upload facts)."""
    kept = ("bytes", *checksums.KNOWN_ALGORITHMS)
    return {
        name: {k: v for k, v in record.items() if k in kept}
        for name, record in schema.artifact_records(run.data.tags).items()
    }


def replay(task: Any, source: RunRecord) -> None:
    """Inside the task's active run: save `source`'s artifacts (copies) and metrics."""
    values = {
        name: _artifacts.verified_path(source, name, filename)
        for name, filename in task.artifacts.items()
    }
    writer = task._state("save")
    current.get_store(writer.uri).set_tag(writer.run_id, schema.CUTOFF_TAG, source.info.run_id)
    writer.note_tag(schema.CUTOFF_TAG, source.info.run_id)  # under the run's signature
    stage = getattr(task, "stage_source", None)
    if stage:  # a stage run names its file, for `reproduce` (a command run sets it itself)
        current.get_store(writer.uri).set_tag(writer.run_id, schema.STAGE_TAG, json.dumps(stage))
    task.save(values, metrics=dict(source.data.metrics))
