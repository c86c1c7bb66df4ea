"""The run-tag schema: every `luigiflow.*` tag, file and limit, and their readers.

Like Luigi's `event.py`, this leaf module is the one place that names what luigiflow
writes on a run; everything else refers to these constants. Pure: no mlflow import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from luigiflow._core.definition import RESERVED_FOLDER

# --- what a run of a task carries -------------------------------------------------
IDENTITY_TAG = "luigiflow.identity"
FAMILY_TAG = "luigiflow.task_family"
PARAMS_TAG = "luigiflow.params"  # canonical encoded params, or "@artifact:<file>"
UPSTREAM_TAG_PREFIX = "luigiflow.upstream."  # + upstream name -> run id consumed
# Facts about the task that made a run, one JSON tag: id, module, version, seed and
# the code fingerprint/source. Every tag is a row each completion scan loads, so the
# facts nobody filters on share one.
TASK_TAG = "luigiflow.task"
ERROR_TAG = "luigiflow.error"  # why a run FAILED or was marked KILLED
INTERRUPTED = "interrupted"  # how ERROR_TAG begins on a run stopped by Ctrl-C / SIGTERM
ERROR_AT_TAG = "luigiflow.error_at"  # file:line in the user's code where it failed
# MLflow's own: the run's description, rendered as Markdown on the run page.
NOTE_TAG = "mlflow.note.content"
INPUT_CONTEXT_TAG = "mlflow.data.context"  # MLflow's: what a dataset input was used for
HEARTBEAT_TAG = "luigiflow.heartbeat"
WORKER_TAG = "luigiflow.worker"
ARTIFACT_TAG_PREFIX = "luigiflow.artifact."  # + artifact name -> {"file", "bytes", ...}
DURATION_TAG = "luigiflow.duration_s"
GIT_TAG = "luigiflow.git"
ENV_TAG = "luigiflow.env"
MODEL_URI_TAG = "luigiflow.model_uri"
CHECKPOINT_TAG = "luigiflow.checkpoint"  # the newest checkpoint: {"step", "file", "sha256"}
# {"run_id", "step", "elapsed_s"}: the unfinished attempt this run resumed from, after
# which step, and the seconds of work up to that checkpoint (counted in its duration)
CUTOFF_TAG = "luigiflow.cutoff_from"  # early cutoff: the run whose results were copied
RESUMED_TAG = "luigiflow.resumed_from"
# {"run_id", "step", "elapsed_s"}: the FINISHED run of a shorter (or longer) training of
# the same line this run started from (see WARM_START_TAG's writer, _engine/checkpoints)
WARM_START_TAG = "luigiflow.warm_started_from"
# {"line", "param", "steps"} of a task with a StepsParameter: its identity without the
# steps (the training line runs of any length share), the parameter and its value
TRAINING_TAG = "luigiflow.training"
# {step: {"file", "sha256"}}: checkpoints kept with checkpoint(..., keep=True), which a
# shorter training of the same line can start from
KEPT_CHECKPOINTS_TAG = "luigiflow.checkpoints_kept"
# The store format a run was written in. Runs without it were written by releases
# before format 2 (format 1).
STORE_FORMAT_TAG = "luigiflow.store_format"
STORE_FORMAT = 2
# Set by `luigiflow upgrade` on a run of an older store format: {"from_format",
# "to_format", "by"} when re-keyed to today's identity (the old one kept in
# IDENTITY_BEFORE_TAG), or {"not_rekeyed": reason}.
UPGRADE_TAG = "luigiflow.upgrade"
IDENTITY_BEFORE_TAG = "luigiflow.identity_before"
VERSION_TAG = "luigiflow.version"  # the luigiflow release that made the run (SemVer)
# What each format changed, as `plan` says it when a run of an older format is not reused.
FORMAT_CHANGES = {
    2: "a task's identity includes its importable module, and artifacts carry BLAKE3 checksums",
}
# {param name: {"path", "sha256"}} for every FileParameter: the data version a run read
DATA_TAG = "luigiflow.data"
MODEL_TAG_PREFIX = "luigiflow.model."  # + model output name -> {"flavour", "uri", "sha256"}
# In the task facts: each piece of code the task depends on ("file: name" -> short hash),
# or CODE_PARTS_IN_FILE when the list is too long for the tag.
CODE_PARTS_FACT = "code_parts"
# In the task facts: the task's deep code fingerprint (every piece above, hashed).
CODE_FINGERPRINT_FACT = "code_fingerprint"
SHORT_CODE = 7  # characters of a code fingerprint `runs` shows, like git's short hashes
# HMAC of the facts below with the team key (see _core/signing): "v1:<hex>".
SIGNATURE_TAG = "luigiflow.signature"
SIGNED_TAGS = (
    IDENTITY_TAG,
    FAMILY_TAG,
    PARAMS_TAG,
    TASK_TAG,
    MODEL_URI_TAG,
    STORE_FORMAT_TAG,
    DATA_TAG,
)
SIGNED_PREFIXES = (UPSTREAM_TAG_PREFIX, ARTIFACT_TAG_PREFIX, MODEL_TAG_PREFIX)
# Under a team key, a RUNNING run holds its identity's lease only with this HMAC over
# its run id, experiment, identity and worker (set right after the run is created).
LEASE_SIGNATURE_TAG = "luigiflow.lease_signature"
LEASE_SIGNED_TAGS = (IDENTITY_TAG, WORKER_TAG)
COMMAND_TAG = "luigiflow.command"  # a command task's command, exit code and interpreter
STAGE_TAG = "luigiflow.stage"  # the pipeline file / dvc.yaml and stage a run came from

# --- tags on a logged model bundle ------------------------------------------------
MODEL_RUN_TAG = "luigiflow.run_id"
MODEL_UPSTREAM_TAG = "luigiflow.upstream"

# --- a sweep's record run ---------------------------------------------------------
SWEEP_LEAVES_TAG = "luigiflow.sweep.leaf_runs"
SWEEP_CONFIG_TAG = "luigiflow.sweep.config"
SWEEP_TASK_TAG = "luigiflow.sweep.task"
SWEEP_BEST_TAG = "luigiflow.sweep.best_run"
SWEEP_FAMILY = "Sweep"
# On a point (or trial) run: the sweep record it belongs to, also its MLflow parent
# (PARENT_RUN_TAG). A point reused by a later sweep keeps its first sweep; every sweep
# that used it lists it (SWEEP_LEAVES_TAG, leaf_runs.json).
SWEEP_RUN_TAG = "luigiflow.sweep.run"
# On a trial run an adaptive search's pruner stopped (status KILLED): {"step", "metric",
# "value", "pruner"}, the last value it was told before it stopped the trial.
PRUNED_TAG = "luigiflow.pruned"

# --- files luigiflow writes into a run's artifacts ---------------------------------
FILES_DIR = RESERVED_FOLDER  # declared artifacts may not use it (checked at class definition)
PARAMS_FILE = "luigiflow/params.json"
TRACEBACK_FILE = "luigiflow/traceback.txt"
ENVIRONMENT_FILE = "luigiflow/environment.txt"
# On a tracking server with proxied artifacts the package list is uploaded once per
# content, into the experiment's artifact folder (SHARED_ENVIRONMENTS/<sha256>.txt), and
# this tag names it (a `mlflow-artifacts:` URI) instead of a copy in every run.
ENVIRONMENT_TAG = "luigiflow.environment"
SHARED_ENVIRONMENTS = "luigiflow/environments"
DIFF_FILE = "luigiflow/git.diff"
CHECKPOINT_DIR = "luigiflow/checkpoints"
NOTEBOOK_FILE = "luigiflow/notebook.py"  # the definitions of the notebook that made the run
STDOUT_FILE = "luigiflow/stdout.txt"  # what a command task's command printed
STDERR_FILE = "luigiflow/stderr.txt"
STAGE_FILE = "luigiflow/stage.json"  # a stage's metadata from its file (DVC desc, artifacts)
PARAMS_IN_FILE = "@artifact:" + PARAMS_FILE
CODE_FILE = "luigiflow/code.json"
LINEAGE_FILE = "luigiflow/lineage.json"  # every upstream run, when the description cannot list them
CODE_PARTS_IN_FILE = "@artifact:" + CODE_FILE

# --- MLflow's limits --------------------------------------------------------------
MAX_PARAM_LENGTH = 6000  # on a param value
MAX_TAG_LENGTH = 8000  # on a tag value
# MLflow tags of its own that luigiflow sets
RUN_NAME_TAG = "mlflow.runName"
# MLflow 3's UI opens an experiment of this kind on its runs table ("Model training"),
# not on GenAI traces and evaluations.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PARENT_RUN_TAG = "mlflow.parentRunId"
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_COMMIT_TAG = "mlflow.source.git.commit"


def _json_dict(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def encoded_params(tags: Mapping[str, str]) -> dict[str, Any]:
    """The canonical encoded params of `luigiflow.params` ({} when absent, unreadable, or
    kept in an artifact: "@artifact:<file>" is not JSON)."""
    return _json_dict(tags.get(PARAMS_TAG))


def task_facts(tags: Mapping[str, str]) -> dict[str, Any]:
    """The `luigiflow.task` facts recorded on a run ({} when absent or unreadable)."""
    return _json_dict(tags.get(TASK_TAG))


def code_fingerprint_of(tags: Mapping[str, str]) -> str:
    """The deep code fingerprint recorded on a run ("" when none was)."""
    found = task_facts(tags).get(CODE_FINGERPRINT_FACT)
    return found if isinstance(found, str) else ""


def origin_of(tags: Mapping[str, str]) -> tuple[str, dict[str, Any]] | None:
    """("resumed" or "warm-started", its record) for a run that started from another
    run's checkpoint; None for a run trained from scratch."""
    for kind, key in (("resumed", RESUMED_TAG), ("warm-started", WARM_START_TAG)):
        record = _json_dict(tags.get(key))
        if record.get("run_id"):
            return kind, record
    return None


def origin_text(kind: str, record: Mapping[str, Any]) -> str:
    """`resumed from run X after step K` / `warm-started from run X at step K`."""
    step = record.get("step")
    if kind == "resumed":
        return f"resumed from run {record.get('run_id')} after step {step}"
    return f"warm-started from run {record.get('run_id')} at step {step}"


def training_of(tags: Mapping[str, str]) -> dict[str, Any]:
    """The training line, steps parameter and steps of a run ({} when it has none)."""
    return _json_dict(tags.get(TRAINING_TAG))


def command_of(tags: Mapping[str, str]) -> dict[str, Any]:
    """What a command task ran (steps, exit code, interpreter), {} for other runs."""
    return _json_dict(tags.get(COMMAND_TAG))


def git_of(tags: Mapping[str, str]) -> dict[str, Any]:
    """The git state recorded on a run ({} when none)."""
    return _json_dict(tags.get(GIT_TAG))


def artifact_records(tags: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Artifact name -> its record (file, bytes, checksum) as written on the run."""
    return {
        key[len(ARTIFACT_TAG_PREFIX) :]: _json_dict(value)
        for key, value in tags.items()
        if key.startswith(ARTIFACT_TAG_PREFIX)
    }


def data_of(tags: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """FileParameter name -> {"path", "sha256"} as recorded on a run ({} when none)."""
    return {k: v for k, v in _json_dict(tags.get(DATA_TAG)).items() if isinstance(v, dict)}


def model_records(tags: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Model output name -> its record (flavour, uri, sha256) as written on the run."""
    return {
        key[len(MODEL_TAG_PREFIX) :]: _json_dict(value)
        for key, value in tags.items()
        if key.startswith(MODEL_TAG_PREFIX)
    }


def model_tag(name: str) -> str:
    return MODEL_TAG_PREFIX + name


def upstream_ids(tags: Mapping[str, str]) -> dict[str, str]:
    """Upstream name -> the run id it consumed, as recorded on a run."""
    return {
        key[len(UPSTREAM_TAG_PREFIX) :]: value
        for key, value in tags.items()
        if key.startswith(UPSTREAM_TAG_PREFIX)
    }


def signed_facts(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags a run's signature covers: what makes it count and what a reader trusts
    (identity, task facts, parameters, lineage, every artifact checksum record)."""
    return {
        key: value
        for key, value in tags.items()
        if key in SIGNED_TAGS or key.startswith(SIGNED_PREFIXES)
    }


def upstream_tag(name: str) -> str:
    return UPSTREAM_TAG_PREFIX + name


def artifact_tag(name: str) -> str:
    return ARTIFACT_TAG_PREFIX + name


def finished_with_identity(identity: str) -> str:
    """The MLflow filter for FINISHED runs of one identity.

    The identity is a hex digest, so it is safe inside a filter string; user values
    (which may hold quotes) are never put into filters.
    """
    return f"tags.`{IDENTITY_TAG}` = '{identity}' AND attributes.status = 'FINISHED'"


def with_identity(identity: str) -> str:
    return f"tags.`{IDENTITY_TAG}` = '{identity}'"


def not_from_worker(worker: str) -> str:
    return f"tags.`{WORKER_TAG}` != '{worker}'"


def store_format(tags: Mapping[str, str]) -> int:
    """The store format a run was written in (1: before formats were recorded)."""
    raw = tags.get(STORE_FORMAT_TAG, "1")
    return int(raw) if raw.isdigit() else 1


def format_change(old: int) -> str:
    """Why a run of store format `old` is not reused by this release."""
    changes = "; ".join(FORMAT_CHANGES[f] for f in range(old + 1, STORE_FORMAT + 1))
    return (
        f"made by an earlier luigiflow (store format {old}; this release writes store format "
        f"{STORE_FORMAT}, where {changes}), so its identity differs and it will run again"
    )


def formula_change(old: int) -> str:
    """What `diff`, `reproduce` and `run` say of a run of an older store format: its
    identity was computed another way, which says nothing about its code."""
    changes = "; ".join(FORMAT_CHANGES[f] for f in range(old + 1, STORE_FORMAT + 1))
    return f"identity formula changed (store format {old} → {STORE_FORMAT}: {changes})"


def successor_experiment(name: str, deleted_id: str) -> str:
    """Where a task's runs go once a user deleted experiment `name` (id `deleted_id`).

    MLflow keeps a deleted experiment's name until `mlflow gc` purges it; luigiflow never
    restores it (that would restore the runs the user deleted) and uses `name~<id>`.
    """
    return f"{name}~{deleted_id}"


def is_short_run_id(text: str) -> bool:
    """The start of a run id as tables print it (4 to 31 hex digits), not a whole id."""
    return 4 <= len(text) < 32 and all(c in "0123456789abcdefABCDEF" for c in text)
