"""`luigiflow upgrade`: keep the FINISHED runs of an older store format reusable.

A run made by an earlier release carries an identity computed by an older formula, so
no build finds it. Where today's identity of the same task can be *proven* to describe
that run, the run is re-keyed: its task is rebuilt from the recorded parameters, its
code fingerprint and data-file hashes must equal today's, and each upstream run it
consumed must itself carry today's identity of the upstream task (upstream runs are
decided first). Every other run is left as it is, tagged with the reason.

Idempotent and interruptible: each run is decided and written on its own, its store
format tag last; running it again re-checks what is left (a refusal whose cause was
fixed, say the code restored, is re-keyed then).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from luigiflow._core import provenance
from luigiflow._engine.run_facts import data_files
from luigiflow._errors import LuigiflowError
from luigiflow._ops import reproduce
from luigiflow._ops.recorded import recorded_params
from luigiflow._store import current, schema
from luigiflow._store.port import RunStore
from luigiflow._store.records import ACTIVE, RunRecord
from luigiflow._task import MlflowTask
from luigiflow._version import __version__


@dataclass
class Upgrade:
    """What `upgrade` did (or, with `dry_run`, would do)."""

    rekeyed: list[tuple[RunRecord, str]] = field(default_factory=list)  # (run, new identity)
    kept: list[tuple[RunRecord, str]] = field(default_factory=list)  # (run, reason)


def upgrade(store: RunStore | None = None, dry_run: bool = False) -> Upgrade:
    """Re-key every provable FINISHED run of an older store format; tag the others."""
    store = store or current.get_store()
    old = {
        run.info.run_id: run
        for exp in store.experiments()
        if exp.lifecycle_stage == ACTIVE
        for run in store.finished_runs(exp.experiment_id)
        if schema.FAMILY_TAG in run.data.tags
        and schema.store_format(run.data.tags) < schema.STORE_FORMAT
    }
    result = Upgrade()
    decided: dict[str, str | None] = {}  # run id -> None (re-keyed) or the reason
    tasks: dict[str, MlflowTask] = {}
    for run_id, run in old.items():
        try:
            tasks[run_id] = reproduce.task_from_run(run)
        except (LuigiflowError, ImportError) as exc:
            decided[run_id] = f"its task cannot be rebuilt here: {exc}"
    new_identity: dict[str, str] = {}
    pending = [r for r in old if r not in decided]
    while pending:  # upstream runs first: each pass decides the runs whose inputs are
        waiting = []
        for run_id in pending:
            verdict = _verdict(store, old[run_id], tasks[run_id], old, decided, new_identity)
            if verdict is _WAIT:
                waiting.append(run_id)
                continue
            decided[run_id] = verdict
            if verdict is None:
                new_identity[run_id] = tasks[run_id].identity
        if len(waiting) == len(pending):  # a cycle cannot happen in a DAG; be safe
            for run_id in waiting:
                decided[run_id] = "its upstream runs could not be decided"
            break
        pending = waiting
    for run_id, reason in decided.items():
        run = old[run_id]
        if reason is None:
            result.rekeyed.append((run, new_identity[run_id]))
            if not dry_run:
                _rekey(store, run, new_identity[run_id])
        else:
            result.kept.append((run, reason))
            if not dry_run:
                store.set_tag(run_id, schema.UPGRADE_TAG, json.dumps({"not_rekeyed": reason}))
    return result


_WAIT = "wait"


def _verdict(
    store: RunStore,
    run: RunRecord,
    task: MlflowTask,
    old: dict[str, RunRecord],
    decided: dict[str, str | None],
    new_identity: dict[str, str],
) -> str | None:
    """None when today's identity of `task` provably describes `run`; else the reason
    (or _WAIT while an upstream run of the old format is undecided)."""
    if schema.SIGNATURE_TAG in run.data.tags:
        # The team-key signature covers the identity: a re-keyed run would no longer
        # verify, and re-signing needs a trust decision this command does not make.
        return "it is signed with a team key; signed runs are not re-keyed"
    recorded = recorded_params(run) or {}
    missing = [n for n, p in task.get_params() if p.significant and n not in recorded]
    if missing:
        return f"parameter(s) {', '.join(missing)} not recorded (added since?)"
    was = schema.task_facts(run.data.tags).get("code_fingerprint")
    now = provenance.code_fingerprint(type(task))
    if not was:
        return "its code fingerprint was not recorded"
    if was != now:
        return f"its code changed since (fingerprint {was[:12]} -> {now[:12]})"
    data = schema.data_of(run.data.tags)
    for name, (path, digest) in data_files(task).items():
        if data.get(name, {}).get("sha256") != digest:
            return f"data file {path} ({name}) changed since"
    consumed = schema.upstream_ids(run.data.tags)
    for name, dep in task.requires_dict().items():
        if not isinstance(dep, MlflowTask):
            continue
        up_id = consumed.get(name)
        if up_id is None:
            return f"upstream {name} was not recorded"
        if up_id in old:
            if up_id not in decided:
                return _WAIT
            if decided[up_id] is not None:
                return f"upstream {name} (run {up_id[:8]}) is not re-keyed"
            up_identity = new_identity[up_id]
        else:
            found = store.get_runs([up_id]).get(up_id)
            if found is None:
                return f"upstream {name} (run {up_id[:8]}) no longer exists"
            up_identity = found.data.tags.get(schema.IDENTITY_TAG, "")
        if up_identity != dep.identity:
            return f"upstream {name} (run {up_id[:8]}) is not today's {dep.get_task_family()}"
    return None


def _rekey(store: RunStore, run: RunRecord, identity: str) -> None:
    run_id = run.info.run_id
    before = run.data.tags.get(schema.IDENTITY_BEFORE_TAG) or run.data.tags.get(
        schema.IDENTITY_TAG, ""
    )
    # The old identity is kept once (a re-run after an interruption must not overwrite
    # it with the new one); the format tag goes last: until it is written the run is
    # still "old" and a next `upgrade` decides it again.
    store.set_tag(run_id, schema.IDENTITY_BEFORE_TAG, before)
    store.set_tag(run_id, schema.IDENTITY_TAG, identity)
    old_format = schema.store_format(run.data.tags)
    record = {"from_format": old_format, "to_format": schema.STORE_FORMAT, "by": __version__}
    store.set_tag(run_id, schema.UPGRADE_TAG, json.dumps(record))
    store.set_tag(run_id, schema.STORE_FORMAT_TAG, str(schema.STORE_FORMAT))
