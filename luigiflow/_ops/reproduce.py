"""Rebuilding a task exactly as a recorded run describes it, and checking the code."""

from __future__ import annotations

import os
from typing import Any

import luigi

from luigiflow._core import provenance
from luigiflow._core.identity import decode_value
from luigiflow._errors import RunNotFoundError, TaskNotFoundError
from luigiflow._ops import lineage
from luigiflow._ops.modules import import_module, task_class
from luigiflow._ops.plan import recorded_params
from luigiflow._store import schema
from luigiflow._store.records import RunRecord as Run
from luigiflow._task import MlflowTask


def task_from_run(run: Run) -> MlflowTask:
    """The task instance whose parameters are exactly those recorded on `run`."""
    tags = run.data.tags
    family = tags.get(schema.FAMILY_TAG)
    params = recorded_params(run)
    if family is None or params is None:
        raise RunNotFoundError(
            f"run {run.info.run_id} was not recorded by luigiflow (no task family or params)"
        )
    module = schema.task_facts(tags).get("module")
    if module:
        try:
            import_module(module)
        except (ImportError, TaskNotFoundError) as exc:
            raise TaskNotFoundError(
                f"run {run.info.run_id} was made by {family} in module {module!r}, which "
                f"cannot be imported here ({exc}); run from the project folder"
            ) from exc
    cls = task_class(
        family,
        module,
        not_found=f"task {family!r} of run {run.info.run_id} is not defined here (recorded "
        f"module: {module or 'unknown'}); pass --module with the module that defines it",
    )
    own = dict(cls.get_params())
    values: dict[str, Any] = {}
    for name, encoded in params.items():
        if name not in own:
            continue  # a parameter since removed: the identity check below reports it
        value = decode_value(encoded)
        if isinstance(own[name], luigi.EnumParameter) and isinstance(value, str):
            value = own[name]._enum[value]
        values[name] = value
    task = cls(**values)
    if not isinstance(task, MlflowTask):
        raise TaskNotFoundError(f"task {family!r} of run {run.info.run_id} is not a luigiflow task")
    return task


def differences(run: Run, task: MlflowTask) -> list[str]:
    """How the code and inputs here differ from what made `run` (empty: same)."""
    tags = run.data.tags
    found = []
    recorded_git = schema.git_of(tags)
    source = provenance.source_file(type(task))
    current_git = provenance.git_state(os.path.dirname(os.path.abspath(source))) if source else {}
    if recorded_git.get("commit") and recorded_git.get("commit") != current_git.get("commit"):
        found.append(
            f"git commit {recorded_git.get('commit', '?')[:12]} recorded, "
            f"{current_git.get('commit', 'none')[:12]} checked out"
        )
    if recorded_git.get("dirty") == "True":
        found.append("the recorded run was made from a dirty tree (see its luigiflow/git.diff)")
    if current_git.get("dirty") == "True":
        found.append("the working tree has uncommitted changes")
    recorded_fp = schema.task_facts(tags).get("code_fingerprint")
    current_fp = provenance.code_fingerprint(type(task))
    if recorded_fp and recorded_fp != current_fp:
        found.append(f"{task.get_task_family()} source changed: {recorded_fp} -> {current_fp}")
    if tags.get(schema.IDENTITY_TAG) != task.identity:
        found.append(
            "identity differs (version, a data file or an upstream definition changed): "
            f"{tags.get(schema.IDENTITY_TAG, '?')[:12]} -> {task.identity[:12]}"
        )
    return found


def load_run(run_id: str) -> Run:
    return lineage.get_run(run_id)
