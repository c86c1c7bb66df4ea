"""A run's name, as the MLflow UI lists runs: the task and the parameters that set the
run apart from the other runs of its task, `Clean(lower=False)`, never `Clean-20e5ef2a`.

A parameter is shown when its value differs from the code's default, and also at its
default when another FINISHED run of the same task (among the newest `COMPARED` runs of
its experiment) has another value for it: four runs of `Clean` whose parameters differ
never share the name `Clean()`. The other runs' values come from one read of two tags of
those runs (not whole runs) the first time a process names a run of that experiment;
runs it names later are added to what it read. Cost: about 0.3 s for 10,000 runs on a
loaded machine without the cap; with it, at most `COMPARED` runs are read.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from typing import Any

from luigiflow._core import redaction
from luigiflow._core.parameters import param_text
from luigiflow._engine import luigi_compat
from luigiflow._engine.protocol import TrackedTask
from luigiflow._store import schema
from luigiflow._store.port import RunStore, TagReads

_KEYS = (schema.FAMILY_TAG, schema.PARAMS_TAG)
COMPARED = 1000  # the newest runs of an experiment a new run's name is weighed against
LONGEST_VALUE = 40  # characters of one value in a name
LONGEST_NAME = 250  # MLflow's run name column


def run_name(
    task: TrackedTask, encoded: dict[str, Any], others: Iterable[dict[str, Any]] = ()
) -> str:
    """`Family(param=value, ...)`: values off their default, and values at their default
    that some other run of the family (`others`: their encoded params) does not share.

    `encoded` is the task's own encoded parameters, as recorded in `luigiflow.params`."""
    differing = _differing(encoded, others)
    parts = []
    for name, param in task.get_params():
        if not param.significant:
            continue
        value = getattr(task, name)
        has_default, default = luigi_compat.param_default(param)
        if has_default and value == default and name not in differing:
            continue
        text = redaction.REDACTED if redaction.looks_secret(name) else param_text(param, value)
        if len(text) > LONGEST_VALUE:
            text = text[: LONGEST_VALUE - 1] + "…"
        parts.append(f"{name}={text}")
    return f"{task.get_task_family()}({', '.join(parts)})"[:LONGEST_NAME]


def _differing(encoded: dict[str, Any], others: Iterable[dict[str, Any]]) -> set[str]:
    differing: set[str] = set()
    for other in others:
        for name, value in encoded.items():
            if name not in differing and other.get(name, value) != value:
                differing.add(name)
    return differing


def family_params(store: RunStore, experiment_id: str, family: str) -> list[dict[str, Any]]:
    """The encoded parameters of every FINISHED run of `family` in the experiment (runs
    whose parameters are too long for a tag are left out: `@artifact:` holds them)."""
    found = []
    for tags in itertools.islice(_tags(store, experiment_id), COMPARED):  # newest first
        raw = tags.get(schema.PARAMS_TAG)
        if tags.get(schema.FAMILY_TAG) != family or not raw or raw.startswith("@"):
            continue
        try:
            params = json.loads(raw)
        except ValueError:
            continue
        if isinstance(params, dict):
            found.append(params)
    return found


def _tags(store: RunStore, experiment_id: str) -> Iterator[dict[str, str]]:
    if isinstance(store, TagReads):  # the SQL path reads two tags, not whole runs
        for _info, tags in store.finished_tags(experiment_id, _KEYS):
            yield tags
        return
    for run in store.finished_runs(experiment_id):
        yield run.data.tags


def name_for_run(task: TrackedTask, session: Any, experiment_id: str, params_json: str) -> str:
    """The name of the run about to be created for `task` (see the module): the family's
    runs are read once per process and build session, then kept up to date here."""
    key = (experiment_id, task.get_task_family())
    others = session.family_params.get(key)
    if others is None:
        # An experiment made during this build holds no earlier runs: nothing to read.
        new = task.get_experiment_name() in session.completion.new_in_build
        others = [] if new else family_params(session.store, experiment_id, key[1])
        session.family_params[key] = others
    encoded = json.loads(params_json)
    name = run_name(task, encoded, others)
    others.append(encoded)
    return name
