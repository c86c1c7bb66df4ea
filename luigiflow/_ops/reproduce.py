"""Rebuilding a task exactly as a recorded run describes it, and checking the code."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from typing import Any

import luigi

from luigiflow import _settings
from luigiflow._core import provenance, redaction
from luigiflow._core.identity import decode_value
from luigiflow._errors import (
    LuigiflowError,
    ParameterError,
    RunNotFoundError,
    TaskNotFoundError,
    UntrustedRunError,
)
from luigiflow._ops import lineage
from luigiflow._ops.modules import import_module, task_class
from luigiflow._ops.plan import make_plan
from luigiflow._ops.recorded import code_changes, recorded_params
from luigiflow._store import artifacts, schema, signatures
from luigiflow._store.records import ACTIVE
from luigiflow._store.records import RunRecord as Run
from luigiflow._task import MlflowTask


def task_from_run(run: Run) -> MlflowTask:
    """The task instance whose parameters are exactly those recorded on `run`."""
    check_trusted(run)
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
    origin = facts.get("main_origin")
    if module == "__main__" and facts.get("notebook_source"):
        defined = _define_from_notebook(run, facts["notebook_source"], facts.get("notebook_sha256"))
        _give_origin(defined, origin)
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
    if isinstance(origin, str) and os.path.isabs(origin) and _defined_in(cls, origin):
        # Made by `python script.py`, imported here as a module from the same file: its
        # classes get the identity they had as `__main__` of that script.
        _give_origin(vars(sys.modules[cls.__module__]), origin)
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


def check_trusted(run: Run) -> None:
    """Under a team key, refuse a run whose signature does not verify: reproducing it
    would execute or unpickle what whoever wrote it chose."""
    keys = _settings.signing_keys()
    if not keys:
        return
    state = signatures.status(run, keys)
    if state != signatures.SIGNED:
        raise UntrustedRunError(
            f"run {run.info.run_id} is {state}: with LUIGIFLOW_SIGNING_KEY set, reproduce "
            "rebuilds only runs signed with the team key; rebuild it with luigiflow run "
            "from code you trust instead"
        )


def _define_from_notebook(run: Run, relpath: str, recorded_sha256: str | None) -> dict[str, Any]:
    """Define the notebook's task classes again from the definitions stored on the run.

    They run in a namespace named `__main__`, as in the notebook, so the classes keep
    their identity. This executes code recorded in the store, so the bytes executed are
    the bytes whose digest the run's facts record (signed under a team key): an edited
    file is refused, and under a key so is a run recorded before that digest existed.
    """
    path = artifacts.local_artifact_path(run.info.run_id, run.info.artifact_uri, relpath)
    if not path.exists():
        raise TaskNotFoundError(
            f"run {run.info.run_id} was made in a notebook and its stored definitions "
            f"({relpath}) are missing; run the notebook's cells, then reproduce from there"
        )
    code = path.read_bytes()  # read once: what is checked is what runs
    if recorded_sha256 is None and _settings.signing_keys():
        raise UntrustedRunError(
            f"run {run.info.run_id}: its stored notebook definitions ({relpath}) carry no "
            "signed digest (recorded by an older luigiflow), so they are not executed; run "
            "the notebook's cells, then reproduce from there"
        )
    if recorded_sha256 is not None and hashlib.sha256(code).hexdigest() != recorded_sha256:
        raise UntrustedRunError(
            f"run {run.info.run_id}: its stored notebook definitions ({relpath}) differ from "
            "the digest recorded when the run was made (edited in the store), so they are "
            "not executed; run the notebook's cells, then reproduce from there"
        )
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(code.decode("utf-8"), str(path), "exec"), namespace)
    return namespace


def _defined_in(cls: type, path: str) -> bool:
    source = provenance.source_file(cls)
    return source is not None and os.path.realpath(source) == path


def _give_origin(namespace: Mapping[str, Any], origin: Any) -> None:
    """The recorded `__main__` origin on each task class defined in `namespace` (see
    `provenance.main_origin`)."""
    if not isinstance(origin, str):
        return
    module = namespace.get("__name__")
    for value in list(namespace.values()):
        is_task = isinstance(value, type) and issubclass(value, MlflowTask)
        if is_task and value.__module__ == module:
            setattr(value, provenance.ORIGIN_ATTRIBUTE, origin)


def differences(run: Run, task: MlflowTask) -> list[str]:
    """How the code and inputs here differ from what made `run` (empty: same), along the
    recorded chain: each upstream run whose task's code or identity differs is named."""
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
    found.extend(_step_differences(run, task, f"{task.get_task_family()} "))
    deleted: list[str] = []
    for lines in upstream_differences(run, task, deleted).values():
        found.extend(lines)
    return found + deleted


def _step_differences(run: Run, task: MlflowTask, label: str) -> list[str]:
    """One recorded run against its task's current definition: code and identity
    (`label` starts each line)."""
    tags = run.data.tags
    old_format = schema.store_format(tags)
    if old_format < schema.STORE_FORMAT:
        # An earlier release computed identity (and the fingerprint) another way: a
        # difference says nothing about the code, so none is claimed.
        return [
            f"{label}{schema.formula_change(old_format)}: the recorded run was made by an "
            "earlier luigiflow, so its identity is not comparable with today's"
        ]
    found = []
    recorded_fp = schema.task_facts(tags).get("code_fingerprint")
    current_fp = provenance.code_fingerprint(type(task))
    if recorded_fp and recorded_fp != current_fp:
        parts = code_changes(task, run)
        what = f" ({', '.join(parts)})" if parts else ""
        found.append(f"{label}source changed{what}: {recorded_fp[:12]} -> {current_fp[:12]}")
    if tags.get(schema.IDENTITY_TAG) != task.identity:
        found.append(
            f"{label}identity differs (version, a data file or an upstream definition "
            f"changed): {tags.get(schema.IDENTITY_TAG, '?')[:12]} -> {task.identity[:12]}"
        )
    return found


def upstream_differences(
    run: Run, task: MlflowTask, deleted: list[str] | None = None
) -> dict[str, list[str]]:
    """Per upstream name of `task`: how the recorded chain below it (the runs `run`
    consumed, and theirs) differs from the current definitions in code or identity
    (empty list: same). Recorded runs since deleted, which cannot be compared, are
    added to `deleted`."""
    root = lineage.lineage(run.info.run_id)
    seen: set[str] = set()  # a run shared along the chain is reported once
    gone = [] if deleted is None else deleted
    return {
        name: _chain_differences(root, name, dep, seen, gone)
        for name, dep in _tracked_deps(task).items()
    }


def _tracked_deps(task: MlflowTask) -> dict[str, MlflowTask]:
    return {n: d for n, d in task.requires_dict().items() if isinstance(d, MlflowTask)}


def _chain_differences(
    parent: lineage.LineageNode, name: str, task: MlflowTask, seen: set[str], deleted: list[str]
) -> list[str]:
    family = task.get_task_family()
    recorded_id = schema.upstream_ids(parent.run.data.tags).get(name)
    if recorded_id is None:
        return [f"upstream {family} ({name}) is required now but {parent.family} did not record it"]
    node = parent.upstream.get(name)
    label = f"upstream {family} (run {recorded_id[:8]})"
    if node is None or node.run.info.lifecycle_stage != ACTIVE:
        deleted.append(f"{label}: the recorded run was deleted, so it cannot be compared")
        return []
    if recorded_id in seen:
        return []
    seen.add(recorded_id)
    found = _step_differences(node.run, task, label + ": ")
    for child_name, dep in _tracked_deps(task).items():
        found.extend(_chain_differences(node, child_name, dep, seen, deleted))
    return found


def forced_inputs(run: Run, task: MlflowTask) -> str | None:
    """What a forced re-execution of `task` consumes, in one line (None: no upstream).

    A reproduction re-executes the task on the inputs its run recorded. When an
    upstream's code or identity changed since and another run of it completes it now
    (or none does, so it would run with the current code), re-executing only the task
    on top of that would be a new experiment reported as a reproduction: refused,
    saying which upstream differs and what to do.
    """
    recorded = schema.upstream_ids(run.data.tags)
    changed = upstream_differences(run, task)
    [plan] = make_plan([task], rerun=[task.get_task_family()])
    same, other = [], []
    for name, entry in plan.upstream.items():
        if not isinstance(entry.task, MlflowTask):
            continue
        was = recorded.get(name, "")
        if entry.run_id is not None and entry.run_id == was:
            same.append(f"{name} {was[:8]}")
            continue
        now = f"run {entry.run_id[:8]}" if entry.run_id else "a new run of the current code"
        if changed.get(name):
            commit = schema.git_of(run.data.tags).get("commit")
            restore = (
                f"check out the code that made it (git checkout {commit[:12]})"
                if commit
                else "restore the code that made it"
            )
            if all("identity formula changed" in line for line in changed[name]):
                restore = "the code may well be the same, but that cannot be proven"
            raise LuigiflowError(
                f"cannot reproduce run {run.info.run_id[:8]} with --force: "
                f"{changed[name][0]}; {entry.task.get_task_family()} is now completed by "
                f"{now}, not the recorded run {was[:8]}, so {task.get_task_family()} would "
                f"run on other inputs than recorded: {restore} and reproduce there, or "
                "reproduce without --force to compare with the current code's result"
            )
        other.append(f"{name} {now} (recorded {was[:8] or 'none'}: same code and parameters)")
    if not same and not other:
        return None
    uses = [f"the recorded upstream run(s): {', '.join(same)}"] if same else []
    uses += [f"other upstream run(s): {', '.join(other)}"] if other else []
    return f"--force re-executes {task.get_task_family()} on " + "; on ".join(uses)


def load_run(run_id: str) -> Run:
    return lineage.get_run(run_id)
