"""What a FINISHED run recorded, and how a task differs from it now.

The recorded parameters, code pieces, version and package versions of a run, read back
and compared with the task as it is: `plan` explains a re-run with them, `reproduce`
and `upgrade` read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import luigi

from luigiflow._core import fingerprint, provenance, redaction
from luigiflow._core.identity import decode_value, encode_value
from luigiflow._core.parameters import param_text
from luigiflow._store import artifacts as _artifacts
from luigiflow._store import schema, signatures
from luigiflow._store.port import RunStore
from luigiflow._store.records import FINISHED
from luigiflow._store.records import RunRecord as Run
from luigiflow._task import MlflowTask


@dataclass
class ParamChange:
    name: str
    old: Any
    new: Any


@dataclass
class DataChange:
    name: str
    path: str
    old: str | None
    new: str


def _encoded_version(task: MlflowTask) -> Any:
    return encode_value(task.version)


def _show_version(recorded: str) -> Any:
    try:
        return decode_value(json.loads(recorded))
    except (ValueError, IndexError, TypeError):
        return recorded


def code_changed(task: MlflowTask, run: Run) -> bool:
    """The task's code fingerprint differs from the one recorded on `run`."""
    recorded = schema.code_fingerprint_of(run.data.tags)
    return recorded != "" and recorded != provenance.code_fingerprint(type(task))


def _short(digest: str | None) -> str:
    return "(none)" if digest is None else f"{digest[:12]}…"


def recorded_code_parts(run: Run) -> dict[str, str] | None:
    """The pieces of code ("file: name" -> hash) recorded on a run (None: not recorded)."""
    parts = schema.task_facts(run.data.tags).get(schema.CODE_PARTS_FACT)
    if parts == schema.CODE_PARTS_IN_FILE:
        path = _artifacts.local_artifact_path(
            run.info.run_id, run.info.artifact_uri, schema.CODE_FILE
        )
        parts = json.loads(path.read_text(encoding="utf-8"))
    return parts if isinstance(parts, dict) else None


def code_changes(task: MlflowTask, run: Run) -> list[str]:
    """The pieces of code ("file: name") edited since `run` recorded them."""
    recorded = recorded_code_parts(run)
    if recorded is None:
        return []
    return fingerprint.changed_parts(recorded, provenance.code_parts(type(task)))


def changed_reason(changes: list[str]) -> str:
    """What `plan` and `run` say of a reused run whose code changed since (docs/identity.md,
    "When a task is reused")."""
    what = f": {', '.join(changes)}" if changes else ""
    return f"code changed since this run{what} (not re-run; use --rerun-changed to re-run it)"


def changed_since(task: luigi.Task, run: Run) -> str | None:
    """`changed_reason` for `task` reused with `run`, None when its code is the same: read
    from the run's tags at hand, no store query (`run`'s summary says what `plan` says)."""
    if not isinstance(task, MlflowTask) or not code_changed(task, run):
        return None
    return changed_reason(code_changes(task, run))


def _environment_changes(run: Run) -> list[str]:
    """Foundation package versions that differ from those recorded on the run."""
    recorded = _json_env(run)
    now = provenance.package_versions()
    changes = []
    for key in sorted(k for k in set(recorded) | set(now) if k.startswith("version.")):
        if key in recorded and recorded.get(key) != now.get(key):
            changes.append(f"{key[8:]} {recorded[key]} -> {now.get(key, '(not installed)')}")
    return changes


def _json_env(run: Run) -> dict[str, Any]:
    try:
        env = json.loads(run.data.tags.get(schema.ENV_TAG) or "{}")
    except ValueError:
        return {}
    return env if isinstance(env, dict) else {}


def recorded_params(run: Run) -> dict[str, Any] | None:
    """The exact (encoded) parameter values recorded on a luigiflow run."""
    raw = run.data.tags.get(schema.PARAMS_TAG)
    if raw is None:
        return None
    if raw.startswith("@artifact:"):
        path = _artifacts.local_artifact_path(
            run.info.run_id, run.info.artifact_uri, raw.split(":", 1)[1]
        )
        raw = path.read_text(encoding="utf-8")
    data = json.loads(raw)
    return data if isinstance(data, dict) else None


def _param_changes(task: MlflowTask, run: Run) -> list[ParamChange]:
    old = recorded_params(run) or {}
    new = task.encoded_params()
    changes = []
    for name, param in task.get_params():
        if not param.significant or old.get(name) == redaction.REDACTED_ENCODED:
            continue  # a redacted value cannot be compared; the identity still tells
        if old.get(name) != new.get(name):
            shown = run.data.params.get(name)  # as the run showed it (redacted), when not cut
            if shown is None or shown.endswith("[truncated]"):
                shown = _show(name, param, decode_value(old[name])) if name in old else "(not set)"
            changes.append(ParamChange(name, shown, _show(name, param, getattr(task, name))))
    return changes


def _show(name: str, param: luigi.Parameter, value: Any) -> Any:
    """A value as the user would type it (Luigi's own serialization); secrets redacted."""
    return redaction.REDACTED if redaction.looks_secret(name) else param_text(param, value)


# Newest runs of one identity searched for one whose code matches the current code.
OLDER_WINDOW = 100


def run_of_current_code(store: RunStore, task: MlflowTask, upstream: dict[str, str]) -> Run | None:
    """The newest FINISHED run of the task's identity made by the current code on the
    `upstream` runs (name -> run id), among its newest OLDER_WINDOW runs: one query, asked
    only for a task whose newest run's code differs (docs/identity.md, "When a task is
    reused")."""
    now = provenance.code_fingerprint(type(task))
    exp_id = store.experiment_id(task.get_experiment_name(), create=False)
    if now == provenance.UNKNOWN or exp_id is None:
        return None
    for run in store.runs_with_identity(exp_id, task.identity, OLDER_WINDOW):
        consumed = schema.upstream_ids(run.data.tags)
        if (
            run.info.status == FINISHED
            and signatures.trusted(run)
            and schema.code_fingerprint_of(run.data.tags) == now
            and all(consumed.get(name) == run_id for name, run_id in upstream.items())
        ):
            return run
    return None
