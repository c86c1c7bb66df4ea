"""Early cutoff: a task about to execute whose upstream re-ran with byte-identical
outputs takes the results of its run made from the earlier upstream run instead of
computing them again (docs/identity.md, "Early cutoff").

A FINISHED run R of the task's experiment is *equivalent* to the task now when

- R's identity is the task's identity computed with, for each upstream, the identity of
  the upstream run R consumed (same module, family, version, parameters, code: only the
  upstream runs differ), and
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
from collections.abc import Iterable, Mapping
from typing import Any

from luigiflow._core.identity import compute_identity
from luigiflow._store import artifacts as _artifacts
from luigiflow._store import checksums, current, schema
from luigiflow._store.records import RunRecord

# How many of the newest FINISHED runs of the experiment are compared: a cutoff is for
# the run made just before the upstream re-ran, not for archaeology.
WINDOW = 20


def equivalent_run(
    task: Any, session: Any, exp_id: str, upstream_runs: Mapping[str, RunRecord]
) -> RunRecord | None:
    """R as above, or None (no upstream run, no candidate, or any doubt)."""
    if not upstream_runs or not getattr(task, "early_cutoff", True):
        return None
    if task.identity in session.completion.not_before:
        return None  # --force, --rerun, --rerun-changed, always_changed: execute it
    if getattr(task, "models", None):
        return None  # model bundles are logged, not copied: never cut off
    store = session.store
    newest = store.finished_runs(exp_id)
    try:
        return _first_equivalent(task, session, itertools.islice(newest, WINDOW), upstream_runs)
    finally:
        close = getattr(newest, "close", None)
        if close is not None:
            close()  # a streamed SQL read stops here


def _first_equivalent(
    task: Any, session: Any, runs: Iterable[RunRecord], upstream_runs: Mapping[str, RunRecord]
) -> RunRecord | None:
    module, family, version, params, upstream, code = task._identity_parts()
    store = session.store
    for run in runs:
        tags = run.data.tags
        consumed = schema.upstream_ids(tags)
        if set(upstream_runs) - set(consumed) or not session.completion.counts(run):
            continue
        before = store.get_runs([consumed[n] for n in upstream_runs])
        if any(consumed[n] not in before for n in upstream_runs):
            continue  # an upstream run R read was deleted
        then = {**upstream, **{n: _identity(before[consumed[n]]) for n in upstream_runs}}
        if compute_identity(module, family, version, params, then, code) != tags.get(
            schema.IDENTITY_TAG
        ):
            continue
        if all(_outputs(before[consumed[n]]) == _outputs(now) for n, now in upstream_runs.items()):
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
