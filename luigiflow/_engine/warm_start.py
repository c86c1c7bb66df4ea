"""Warm start: a training asked for another number of steps than a FINISHED run of the
same training line starts from that run's checkpoint instead of from scratch.

A task with a `StepsParameter` records its training line (its identity without the
steps, tag `luigiflow.training`). A task of N steps may start from:
  - a FINISHED run of the line with more steps that kept a checkpoint at step N - 1
    (`checkpoint(..., keep=True)`): nothing is left to train;
  - else the FINISHED run of the line with the most steps below N, from its newest
    checkpoint (its last step).
Only reads here (plan uses them too); `checkpoints.last` verifies and loads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from luigiflow._engine.protocol import TrackedTask
from luigiflow._store import schema
from luigiflow._store.port import RunStore, TagReads
from luigiflow._store.records import RunInfo

_KEYS = (schema.TRAINING_TAG, schema.CHECKPOINT_TAG, schema.KEPT_CHECKPOINTS_TAG)


@dataclass(frozen=True)
class Source:
    """A FINISHED run of the same training line and the checkpoint to start from."""

    run_id: str
    step: int
    steps: int  # the source run's own number of steps
    record: dict[str, Any]  # the checkpoint's record: file, sha256 (and signature)


def sources(task: TrackedTask, store: RunStore, experiment_id: str | None) -> list[Source]:
    """Every checkpoint a warm start of `task` may use, best first (see the module)."""
    training = task.training()
    if training is None or experiment_id is None:
        return []
    line, _name, wanted = training
    found: list[tuple[tuple[int, int, int], Source]] = []
    for info, tags in _finished_tags(store, experiment_id):
        facts = schema.training_of(tags)
        steps = facts.get("steps")
        if facts.get("line") != line or not isinstance(steps, int) or steps == wanted:
            continue
        if steps < wanted:
            record = _record(tags.get(schema.CHECKPOINT_TAG))
        else:  # a longer training: only a checkpoint kept at exactly our last step
            kept = _record(tags.get(schema.KEPT_CHECKPOINTS_TAG)).get(str(wanted - 1))
            record = {**kept, "step": wanted - 1} if isinstance(kept, dict) else {}
        step = record.get("step")
        if not isinstance(step, int) or step >= wanted or not record.get("file"):
            continue
        # exact (nothing left to train) first, then the furthest step, then the newest
        rank = (int(step == wanted - 1), step, info.start_time)
        found.append((rank, Source(info.run_id, step, steps, record)))
    found.sort(key=lambda item: item[0], reverse=True)
    return [source for _rank, source in found]


def _finished_tags(store: RunStore, experiment_id: str) -> Iterator[tuple[RunInfo, dict[str, str]]]:
    if isinstance(store, TagReads):  # the SQL path reads three tags, not whole runs
        yield from store.finished_tags(experiment_id, _KEYS)
        return
    for run in store.finished_runs(experiment_id):
        yield run.info, dict(run.data.tags)


def _record(raw: str | None) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def start_tags(task: TrackedTask) -> dict[str, str]:
    """The training tag a run of a task with a StepsParameter is created with."""
    training = task.training()
    if training is None:
        return {}
    line, name, steps = training
    return {
        schema.TRAINING_TAG: json.dumps(
            {"line": line, "param": name, "steps": steps}, sort_keys=True
        )
    }
