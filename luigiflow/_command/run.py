"""One execution of a CommandTask inside its active run.

1. lay out the working folder: a fresh scratch folder with the declared files and
   upstream artifacts copied in (or, in place, the project folder with upstream
   outputs checked out to match the runs consumed and old outputs removed);
2. write the parameters file, run the command with output streamed and captured;
3. store stdout/stderr, the command and the interpreter it ran with, even on failure;
4. fail naming every declared output that is missing, else store them as artifacts
   (copies, never links to files the script may rewrite) and log the metrics files.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile
from typing import Any

from luigiflow import _settings
from luigiflow._core import datafiles, hashing, process, provenance, templating, workspace_files
from luigiflow._engine.protocol import is_tracked
from luigiflow._errors import ArtifactError, CommandFailedError, ConfigError
from luigiflow._store import current, schema

# A CommandTask: `task.py` imports this module, so the class is not imported back here.
CommandTaskLike = Any

HIDDEN_IDENTITY = "pending-until-luigiflow-finishes"


def execute(task: CommandTaskLike) -> None:
    """Run the command of `task` and record what it did on the task's active run."""
    writer = task._state("run_task")
    family = task.get_task_family()
    root = task.project_root()
    steps = task.rendered_steps()
    scratch = None
    if task.in_place:
        base = root
    else:
        folder = _settings.cache_dir() / "scratch"
        folder.mkdir(parents=True, exist_ok=True)
        scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"{_safe(family)}-", dir=folder))
        base = scratch
    try:
        _lay_out(task, root, base)
        if task.params_file:
            datafiles.write_tree(base / task.params_file, templating.nest(task.param_values()))
        cwd = base / task.workdir
        cwd.mkdir(parents=True, exist_ok=True)
        result = _run(task, steps, cwd, writer)
        if result.exit_code != 0:
            tail = result.stderr_tail
            last = tail.splitlines()[-1].strip() if tail else "(no stderr)"
            raise CommandFailedError(
                f"{family} (run {writer.run_id}): `{result.failed_step}` exited with code "
                f"{result.exit_code}: {last}\nlast lines of stderr:\n{tail}"
            )
        missing = [p for p in task.artifacts.values() if not (base / p).exists()]
        if missing:
            raise ArtifactError(
                f"{family} (run {writer.run_id}): the command did not write declared "
                f"output(s) {', '.join(map(repr, missing))} (in {base}); fix the script "
                "or the declared outputs"
            )
        metrics: dict[str, float] = {}
        for rel in task.metrics_files():
            try:
                metrics.update(datafiles.read_metrics(base / rel))
            except datafiles.DataFileError as exc:
                raise ArtifactError(f"{family} (run {writer.run_id}): metrics file: {exc}") from exc
        values: dict[str, Any] = {
            # From a scratch folder about to be removed, a hard link is safe and free; a
            # workspace file may be rewritten in place by the next run: store a copy.
            name: workspace_files.copy_saver(base / rel) if task.in_place else base / rel
            for name, rel in task.artifacts.items()
        }
        task.save(values, metrics=metrics)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _lay_out(task: CommandTaskLike, root: pathlib.Path, base: pathlib.Path) -> None:
    family = task.get_task_family()
    if task.in_place:
        _check_params_files(task, root)
    for rel, source in task.inputs.items():
        artifact = upstream_artifact(task, source)
        target = base / rel
        if task.in_place and target.exists() and _same(target, artifact):
            continue  # the workspace already holds what the upstream run produced
        workspace_files.copy_into(artifact, target)
    if task.in_place:
        for rel in task.artifacts.values():
            if rel not in task.persist:
                workspace_files.remove(base / rel)  # a stale output must never pass for a new one
        return
    for rel in task.script_files():  # declared files and the scripts the command names
        if rel in task.inputs:
            continue
        original = root / rel
        if not original.exists():
            raise ConfigError(
                f"{family}: declared file {rel!r} does not exist under {root}; create it or "
                "fix the files it declares"
            )
        workspace_files.copy_into(original, base / rel)
    for rel in task.artifacts.values():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)


def _check_params_files(task: CommandTaskLike, root: pathlib.Path) -> None:
    """In place, the script reads its parameters from the files itself: they must hold
    the values this run is recorded with (a reproduce or an override may differ)."""
    trees: dict[str, dict[str, Any]] = {}
    wrong = []
    values = task.param_values()
    for name, rel in task.params_from.items():
        if rel not in trees:
            try:
                trees[rel] = datafiles.read_tree(root / rel)
            except datafiles.DataFileError as exc:
                raise ConfigError(f"{task.get_task_family()}: {exc}") from exc
        try:
            current = templating.lookup(trees[rel], name)
        except templating.TemplateError:
            current = "<missing>"
        if current != values.get(name):
            wrong.append(f"{name} is {values.get(name)!r} here but {current!r} in {rel}")
    if wrong:
        raise ConfigError(
            f"{task.get_task_family()}: the script reads its parameters from files that do "
            f"not hold this run's values: {'; '.join(wrong)}; edit the file(s) to match"
        )


def upstream_artifact(task: CommandTaskLike, source: str) -> pathlib.Path:
    """The local path of the upstream artifact `source` ("name" or "name.artifact")."""
    name, _, artifact = source.partition(".")
    deps = task.requires_dict()
    dep = deps.get(name)
    if dep is None or not is_tracked(dep):
        raise ConfigError(
            f"{task.get_task_family()}: input {source!r} names no upstream luigiflow task; "
            f"requires() names: {', '.join(deps) or 'none'}"
        )
    chosen = dep._single_artifact_name(artifact or None)  # type: ignore[attr-defined]
    path: pathlib.Path = dep.artifact_path(chosen)  # type: ignore[attr-defined]
    return path


def _same(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        return bool(hashing.content_hash(a) == hashing.content_hash(b))
    except OSError:
        return False


def _run(
    task: CommandTaskLike, steps: list[process.Step], cwd: pathlib.Path, writer: Any
) -> process.CommandResult:
    store = current.get_store(writer.uri)
    run_id = writer.run_id
    extra = {**task.host_environment, **task.environment}
    if task.joins_mlflow_run:
        extra.update(_mlflow_env(task, writer.uri, run_id))
        # The script's own end_run() marks the run FINISHED: until luigiflow has checked
        # the outputs, the run must not carry the identity that would make it complete.
        store.set_tag(run_id, schema.IDENTITY_TAG, HIDDEN_IDENTITY)
    env = process.child_environment(extra)
    logs = pathlib.Path(tempfile.mkdtemp(prefix="luigiflow-logs-"))
    try:
        try:
            result = process.run_steps(steps, cwd, env, logs / schema.FILES_DIR)
        finally:
            if task.joins_mlflow_run:
                store.terminate(run_id, "RUNNING")
                store.set_tag(run_id, schema.IDENTITY_TAG, task.identity)
            store.log_artifacts(run_id, str(logs))
        facts, packages = process.describe_interpreter(steps, cwd, env)
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    if packages:  # the command's own environment, not luigiflow's
        writer.write_extra(schema.ENVIRONMENT_FILE, packages)
    if task.stage_metadata:
        writer.write_extra(schema.STAGE_FILE, json.dumps(task.stage_metadata, indent=1))
    record = {
        "steps": [process.step_text(s) for s in steps],
        "argv": list(steps[0]) if len(steps) == 1 and not isinstance(steps[0], str) else None,
        "cwd": str(cwd),
        "exit_code": result.exit_code,
        **facts,
        "files": task.file_hashes(),  # what `plan` compares to say which file changed
    }
    text = json.dumps(record)
    if len(text) > schema.MAX_TAG_LENGTH:
        record.pop("files")
        text = json.dumps(record)[: schema.MAX_TAG_LENGTH]
    tags = {schema.COMMAND_TAG: text}
    if task.stage_source:
        tags[schema.STAGE_TAG] = json.dumps(task.stage_source)
        git = provenance.git_state(str(task.project_root()))
        if git:  # a stage has no Python source: the project folder's repository is its code
            tags[schema.GIT_TAG] = json.dumps(git, sort_keys=True)
            if git.get("commit"):
                tags[schema.SOURCE_COMMIT_TAG] = git["commit"]
    store.log_batch(run_id, tags=tags)
    return result


def _mlflow_env(task: CommandTaskLike, uri: str, run_id: str) -> dict[str, str]:
    store = current.get_store(uri)
    exp_id = store.experiment_id(task.get_experiment_name()) or ""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(pathlib.Path(uri[len("sqlite:///") :]).resolve())
    return {"MLFLOW_RUN_ID": run_id, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_ID": exp_id}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]


def restore_outputs(task: CommandTaskLike) -> list[str]:
    """Make the workspace outputs of an in-place task match its FINISHED run (as
    `dvc checkout` does); returns the paths restored."""
    root = task.project_root()
    restored = []
    for name, rel in task.artifacts.items():
        stored = task.artifact_path(name)
        target = root / rel
        if not (target.exists() and _same(target, stored)):
            workspace_files.copy_into(stored, target)
            restored.append(rel)
    return restored
