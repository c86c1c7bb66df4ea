"""What a run is created with: its tags (identity, lineage, task facts, provenance),
its parameters as MLflow shows them, its name, and the provenance files written first.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import luigi

from luigiflow._core import provenance, redaction
from luigiflow._core.hashing import content_hash
from luigiflow._core.identity import encode_value
from luigiflow._core.parameters import FileParameter, param_text
from luigiflow._engine import run_names, warm_start
from luigiflow._engine.protocol import TrackedTask
from luigiflow._store import liveness, schema
from luigiflow._store.artifacts import RunWriter
from luigiflow._store.records import RunRecord
from luigiflow._version import __version__


def start_tags(
    task: TrackedTask, upstream_runs: Mapping[str, RunRecord], params_json: str
) -> dict[str, str]:
    """Every tag a run is created with: identity, lineage, task facts, provenance."""
    tags: dict[str, Any] = {
        schema.IDENTITY_TAG: task.identity,
        schema.FAMILY_TAG: task.get_task_family(),
        schema.TASK_TAG: _task_facts(task),
        schema.HEARTBEAT_TAG: liveness.now_beat(),
        schema.WORKER_TAG: liveness.worker_token(),
        schema.STORE_FORMAT_TAG: schema.STORE_FORMAT,
        schema.VERSION_TAG: __version__,
    }
    if len(params_json) <= schema.MAX_TAG_LENGTH:
        tags[schema.PARAMS_TAG] = params_json
    else:
        tags[schema.PARAMS_TAG] = schema.PARAMS_IN_FILE
    for name, run in upstream_runs.items():
        tags[schema.upstream_tag(name)] = run.info.run_id
    data = data_files(task)
    if data:
        tags[schema.DATA_TAG] = json.dumps(
            {
                name: {"path": redaction.REDACTED, "sha256": redaction.REDACTED}
                if redaction.looks_secret(name)
                else {"path": path, "sha256": digest}
                for name, (path, digest) in data.items()
            },
            sort_keys=True,
        )
    tags.update(warm_start.start_tags(task))
    tags.update(_provenance_tags(type(task)))
    return {k: str(v) for k, v in tags.items()}


def _provenance_tags(cls: type) -> dict[str, str]:
    """Code version and environment; git state and environment are one JSON tag each:
    every tag is a row that each completion scan loads."""
    tags: dict[str, str] = {}
    path = provenance.notebook_path() if provenance.interactive(cls) else None
    path = path or provenance.source_file(cls)
    folder = _code_folder(cls)
    if path:
        tags[schema.SOURCE_NAME_TAG] = path
    if folder:
        git = provenance.git_state(folder)
        if git:
            tags[schema.GIT_TAG] = json.dumps(git, sort_keys=True)
            if git.get("commit"):
                tags[schema.SOURCE_COMMIT_TAG] = git["commit"]
    tags[schema.ENV_TAG] = json.dumps(provenance.environment(), sort_keys=True)
    return tags


def data_files(task: TrackedTask) -> dict[str, tuple[str, str]]:
    """FileParameter name -> (path as given, content sha256): the data version read.

    Recorded on the run as tag `luigiflow.data`, except a secret-looking parameter's
    (a key file's hash could be checked against guesses): its path and hash are
    recorded `<redacted>`; its content hash still enters the identity."""
    found = {}
    for name, param in task.get_params():
        if isinstance(param, FileParameter):
            path = os.fspath(getattr(task, name))
            found[name] = (path, content_hash(path))
    return found


def _task_facts(task: TrackedTask) -> str:
    facts: dict[str, Any] = {
        "id": _recorded_task_id(task)[:1000],
        "module": provenance.importable_module(type(task)),
        "version": encode_value(task.version),
        "seed": task.seed,
        "code_fingerprint": provenance.code_fingerprint(type(task)),
        "code_source": provenance.source_file(type(task)),
        schema.CODE_PARTS_FACT: provenance.code_parts(type(task)),
    }
    origin = provenance.main_origin(type(task))
    if origin is not None and not getattr(task, "identity_module", None):
        facts["main_origin"] = origin  # in its identity; `reproduce` gives it back
    if provenance.interactive(type(task)):
        facts["notebook"] = provenance.notebook_path()
        facts["notebook_source"] = schema.NOTEBOOK_FILE
        definitions = provenance.notebook_definitions()
        if definitions:
            # In the signed facts: `reproduce` executes that file only when it still
            # has this digest.
            facts["notebook_sha256"] = hashlib.sha256(definitions.encode("utf-8")).hexdigest()
    text = json.dumps(facts, sort_keys=True)
    if len(text) > schema.MAX_TAG_LENGTH:  # the list of pieces goes to a file
        facts[schema.CODE_PARTS_FACT] = schema.CODE_PARTS_IN_FILE
        text = json.dumps(facts, sort_keys=True)
    return text


def _code_folder(cls: type) -> str | None:
    """Where the task's code lives for git: its file's folder; a notebook's own folder."""
    if provenance.interactive(cls):
        notebook = provenance.notebook_path()
        return os.path.dirname(os.path.abspath(notebook)) if notebook else os.getcwd()
    path = provenance.source_file(cls)
    return os.path.dirname(os.path.abspath(path)) if path else None


def _recorded_task_id(task: TrackedTask) -> str:
    """Luigi's task id, rebuilt with secret-looking values redacted (it quotes values)."""
    params = task.get_params()
    if not any(redaction.looks_secret(name) for name, _ in params):
        return task.task_id
    shown = {
        name: redaction.REDACTED
        if redaction.looks_secret(name)
        else param_text(param, getattr(task, name))
        for name, param in params
        if param.significant
    }
    return luigi.task.task_id_str(task.get_task_family(), shown)


def secrets_of(task: TrackedTask) -> list[str]:
    """Every secret value that must not appear in text written for `task`'s run."""
    values = redaction.secret_values()
    for name, param in task.get_params():
        if redaction.looks_secret(name):
            value = getattr(task, name)
            values += [str(value), param_text(param, value)]
    return values


def write_provenance_files(task: TrackedTask, writer: RunWriter, params_json: str) -> None:
    """Installed packages, params too long for a tag, the diff when the tree is dirty,
    and a notebook's definitions (what `reproduce` rebuilds a notebook task from)."""
    writer.write_extra(schema.ENVIRONMENT_FILE, provenance.installed_packages())
    if len(params_json) > schema.MAX_TAG_LENGTH:  # the params tag points here
        writer.write_extra(schema.PARAMS_FILE, params_json)
    if provenance.interactive(type(task)):
        definitions = provenance.notebook_definitions()
        if definitions:
            writer.write_extra(schema.NOTEBOOK_FILE, definitions)
    if json.loads(_task_facts(task))[schema.CODE_PARTS_FACT] == schema.CODE_PARTS_IN_FILE:
        parts = provenance.code_parts(type(task))
        writer.write_extra(schema.CODE_FILE, json.dumps(parts, sort_keys=True))
    folder = _code_folder(type(task))
    if folder is None:
        return
    if provenance.git_state(folder).get("dirty") == "True":
        diff, _cut = provenance.git_diff(folder)
        writer.write_extra(schema.DIFF_FILE, redaction.scrub(diff, secrets_of(task)))


def display_params(task: TrackedTask) -> dict[str, str]:
    """Parameter values as MLflow params: Luigi's own text form, cut to MLflow's limit."""
    shown = {}
    limit = schema.MAX_PARAM_LENGTH
    for name, param in task.get_params():
        if redaction.looks_secret(name):
            shown[name] = redaction.REDACTED
            continue
        text = param_text(param, getattr(task, name))
        if len(text) > limit:
            text = text[: limit - 20] + "...[truncated]"
        shown[name] = text
    return shown


def run_name(task: TrackedTask) -> str:
    """The task and the parameters off their defaults: `Train(alpha=0.5)`, not
    `Train-20e5ef2a` (a new run's name also weighs the family's other runs: run_names)."""
    return run_names.run_name(task, {})
