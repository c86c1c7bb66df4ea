"""Executing one task as one MLflow run.

The life of one run:
  1. look once more for a FINISHED run of this identity (another worker may have
     finished it since scheduling) and stop if there is one;
  2. create the run with identity, lineage and provenance tags in one call and make
     it the active MLflow run, so `mlflow.log_*`, autologging and system metrics land on it;
  3. seed `random`/NumPy/PyTorch from the identity and call `run_task()`;
  4. check every declared artifact was saved, then write params, metrics and
     artifact records in one `log_batch` and only then mark the run FINISHED.
Any exception marks the run FAILED with its traceback stored as an artifact.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from luigiflow import _events, _liveness, _lookup, _provenance, _recheck, _tracking
from luigiflow._errors import ArtifactError
from luigiflow._identity import IDENTITY_TAG, canonical_json, encode_value
from luigiflow._recording import ARTIFACT_TAG_PREFIX, RunState
from luigiflow._task import (
    ERROR_TAG,
    FAMILY_TAG,
    MAX_PARAM_LENGTH,
    MAX_TAG_LENGTH,
    PARAMS_TAG,
    TASK_TAG,
    UPSTREAM_TAG_PREFIX,
    MlflowTask,
)

if TYPE_CHECKING:
    from mlflow.entities import Run


def execute(task: MlflowTask) -> None:
    """Run `task` as one MLflow run, or reuse a run another worker just finished."""
    exp_id = _tracking.experiment_id(task.get_experiment_name(), create=True)
    assert exp_id is not None
    # Another worker may have finished this identity since Luigi scheduled it.
    existing = _recheck.existing_run(exp_id, task.identity, _lookup.negative_answer_ms(task))
    if existing is not None:
        task.__dict__["_lf_run"] = existing
        _lookup.note_complete(task, existing.info.run_id)
        _events.record("reused", task.task_id, existing.info.run_id)
        return
    upstream_runs = task._upstream_runs()
    started = time.time()
    params_json = canonical_json(task.encoded_params())
    tags = start_tags(task, upstream_runs, params_json)
    run_name = f"{task.get_task_family()}-{task.identity[:8]}"
    active = _tracking.start_run(exp_id, run_name, tags)
    run_id = active.info.run_id
    state = RunState(run_id, active.info.artifact_uri)
    task.__dict__["_lf_state"] = state
    _write_provenance_files(task, state, params_json)
    _events.record("started", task.task_id, run_id)
    heartbeat = _liveness.Heartbeat(run_id)
    try:
        if task.seed_random:
            _provenance.seed_everything(task.seed)
        task.run_task()
        heartbeat.stop()
        _finish(task, state, started)
    except BaseException as exc:
        heartbeat.stop()
        _fail(task, state, exc)
        raise
    finally:
        task.__dict__.pop("_lf_state", None)
        state.cleanup()
    # Downstream tasks look this run up afresh before consuming it (see _lookup).
    task.__dict__.pop("_lf_run", None)
    _lookup.note_complete(task, run_id)
    _events.record("executed", task.task_id, run_id)


def start_tags(
    task: MlflowTask, upstream_runs: Mapping[str, Run], params_json: str
) -> dict[str, str]:
    """Every tag a run is created with: identity, lineage, task facts, provenance."""
    tags: dict[str, Any] = {
        IDENTITY_TAG: task.identity,
        FAMILY_TAG: task.get_task_family(),
        TASK_TAG: _task_facts(task),
        _liveness.HEARTBEAT_TAG: f"{time.time():.3f}",
        _liveness.WORKER_TAG: _liveness.worker_token(),
    }
    if len(params_json) <= MAX_TAG_LENGTH:
        tags[PARAMS_TAG] = params_json
    else:
        tags[PARAMS_TAG] = "@artifact:luigiflow/params.json"
    for name, run in upstream_runs.items():
        tags[UPSTREAM_TAG_PREFIX + name] = run.info.run_id
    tags.update(_provenance.provenance_tags(type(task)))
    return {k: str(v) for k, v in tags.items()}


def _task_facts(task: MlflowTask) -> str:
    facts = {
        "id": task.task_id[:1000],
        "module": importable_module(type(task)),
        "version": encode_value(task.version),
        "seed": task.seed,
        "code_fingerprint": _provenance.code_fingerprint(type(task)),
        "code_source": _provenance.source_file(type(task)),
    }
    return json.dumps(facts, sort_keys=True)


def importable_module(cls: type) -> str:
    """The module a class can be imported from later (`python -m pkg.mod` runs it as
    `__main__`; its real name is on the module's spec)."""
    module = cls.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            return str(spec.name)
    return module


def _write_provenance_files(task: MlflowTask, state: RunState, params_json: str) -> None:
    """Installed packages, params too long for a tag, the diff when the tree is dirty."""
    state.write_extra("luigiflow/environment.txt", _provenance.installed_packages())
    if len(params_json) > MAX_TAG_LENGTH:  # the params tag points here
        state.write_extra("luigiflow/params.json", params_json)
    path = _provenance.source_file(type(task))
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if _provenance.git_state(folder).get("dirty") == "True":
        diff, _cut = _provenance.git_diff(folder)
        state.write_extra("luigiflow/git.diff", diff)


def _finish(task: MlflowTask, state: RunState, started: float) -> None:
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    missing = [n for n in task.artifacts if n not in state.saved]
    if missing:
        raise ArtifactError(
            f"{task.get_task_family()} (run {state.run_id}) did not save declared "
            f"artifact(s) {', '.join(map(repr, missing))}; call self.save() with them"
        )
    state.upload()
    now_ms = int(time.time() * 1000)
    metrics = [Metric(k, v, now_ms, 0) for k, v in state.metrics.items()]
    params = [Param(k, v) for k, v in display_params(task).items()]
    tags = [RunTag(ARTIFACT_TAG_PREFIX + n, json.dumps(rec)) for n, rec in state.saved.items()]
    tags.append(RunTag("luigiflow.duration_s", f"{time.time() - started:.3f}"))
    client = _tracking.get_client()
    with _tracking.translate_errors(f"recording results of {task!r}"):
        client.log_batch(state.run_id, metrics=metrics, params=params, tags=tags)
        mlflow.end_run("FINISHED")


def _fail(task: MlflowTask, state: RunState, exc: BaseException) -> None:
    import mlflow
    from mlflow.entities import Param, RunTag

    status = "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit) else "FAILED"
    text = "".join(traceback.format_exception(exc))
    # Best effort: the store may be the very thing that failed.
    try:
        client = _tracking.get_client()
        client.log_text(state.run_id, text, "luigiflow/traceback.txt")
        client.log_batch(
            state.run_id,
            params=[Param(k, v) for k, v in display_params(task).items()],
            tags=[RunTag(ERROR_TAG, f"{type(exc).__name__}: {exc}"[:MAX_TAG_LENGTH])],
        )
    except Exception:
        pass
    with contextlib.suppress(Exception):
        mlflow.end_run(status)
    _events.record_failure(task.task_id, exc)


def display_params(task: MlflowTask) -> dict[str, str]:
    """Parameter values as MLflow params: Luigi's own text form, cut to MLflow's limit."""
    shown = {}
    for name, param in task.get_params():
        value = getattr(task, name)
        try:
            text = param.serialize(value)
        except Exception:
            text = repr(value)
        if not isinstance(text, str):
            text = json.dumps(text, default=str)
        if len(text) > MAX_PARAM_LENGTH:
            text = text[: MAX_PARAM_LENGTH - 20] + "...[truncated]"
        shown[name] = text
    return shown
