"""Rebuilding a task exactly as a recorded run describes it, and checking the code."""

from __future__ import annotations

import os
from typing import Any

import luigi

from luigiflow._core import provenance, redaction
from luigiflow._core.identity import decode_value
from luigiflow._errors import ParameterError, RunNotFoundError, TaskNotFoundError
from luigiflow._ops import lineage
from luigiflow._ops.modules import import_module, task_class
from luigiflow._ops.plan import recorded_params
from luigiflow._store import artifacts, schema
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
    from luigiflow._ops.stages import stage_class_for_run

    stage_cls = stage_class_for_run(tags)
    facts = schema.task_facts(tags)
    module = None if stage_cls else facts.get("module")
    if module == "__main__" and facts.get("notebook_source"):
        _define_from_notebook(run, facts["notebook_source"])
    elif module:
        try:
            import_module(module)
        except (ImportError, TaskNotFoundError) as exc:
            raise TaskNotFoundError(
                f"run {run.info.run_id} was made by {family} in module {module!r}, which "
                f"cannot be imported here ({exc}); run from the project folder, or pass "
                "--module with the module or file that defines it now"
            ) from exc
    cls = stage_cls or task_class(
        family,
        module,
        not_found=f"task {family!r} of run {run.info.run_id} is not defined here (recorded "
        f"module: {module or 'unknown'}); pass --module with the module that defines it",
    )
    own = dict(cls.get_params())
    redacted = [n for n, v in params.items() if n in own and v == redaction.REDACTED_ENCODED]
    if redacted:
        raise ParameterError(
            f"run {run.info.run_id} recorded {family} parameter(s) {', '.join(redacted)} as "
            f"{redaction.REDACTED} (their names look secret), so it cannot be rebuilt from the "
            f"store alone; run it again with luigiflow run --module {module or 'M'} {family} "
            + " ".join(f"--{n.replace('_', '-')} VALUE" for n in redacted)
        )
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


def _define_from_notebook(run: Run, relpath: str) -> None:
    """Define the notebook's task classes again from the definitions stored on the run.

    They run in a namespace named `__main__`, as in the notebook, so the classes keep
    their identity. This executes code recorded in the store: reproduce only runs you
    trust (with a team key, signed ones).
    """
    path = artifacts.local_artifact_path(run.info.run_id, run.info.artifact_uri, relpath)
    if not path.exists():
        raise TaskNotFoundError(
            f"run {run.info.run_id} was made in a notebook and its stored definitions "
            f"({relpath}) are missing; run the notebook's cells, then reproduce from there"
        )
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)


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
