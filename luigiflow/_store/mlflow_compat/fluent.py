"""MLflow's active run: a run luigiflow creates joins MLflow's fluent run stack (now,
or when something imports mlflow), and leaves it when its task ends, whatever user
code did to it meanwhile.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from luigiflow import _settings
from luigiflow._core import redaction
from luigiflow._store import active_run
from luigiflow._store.mlflow_compat.artifacts import is_local_artifact_uri
from luigiflow._store.mlflow_compat.tracking_store import terminate
from luigiflow._store.records import RunRecord, from_mlflow

if TYPE_CHECKING:
    from mlflow import ActiveRun, MlflowClient

    from luigiflow._store.port import RunStore


_context: tuple[int, dict[str, str]] | None = None


def start_active_run(
    client_of: Callable[[], MlflowClient],
    store: RunStore,
    experiment_id: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, str],
    parent_tag: str,
) -> RunRecord:
    """Create a run with its params through `store` and make it MLflow's active run, as
    `mlflow.start_run` + `mlflow.log_params` do (`client_of` gives MLflow's client).

    Where mlflow is not imported yet, the run is created with the context tags
    `start_run` would add, and joins MLflow's fluent run stack only when something
    imports mlflow (see `active_run`): a plain task never pays for MLflow's import.

    `mlflow.start_run` re-resolves MLflow's context tags (user, source, git) and probes
    for Databricks on every call: about 1 ms a run, for values that never change within
    a process. They are resolved once here and the run joins the fluent run stack, so
    `mlflow.log_*` and autologging in user code land on it. Where that stack is not
    what this MLflow keeps, or system metrics are on (start_run starts their monitor),
    `mlflow.start_run` itself is used.
    """
    if (
        not active_run.mlflow_imported()
        and not _settings.system_metrics_on()
        and active_run.context_tags_known()
    ):
        all_tags = {**active_run.context_tags(redaction.secret_values()), **tags}
        record = store.create_run(experiment_id, run_name, all_tags, params=params)
        uri = store.uri
        active_run.join_when_imported(
            record, lambda run, now: _join_fluent_stack(uri, run, client_of if now else None)
        )
        return record
    client = client_of()
    active = _start_active_run(client, store, experiment_id, run_name, tags, params, parent_tag)
    _guard(active.info.run_id)
    return from_mlflow(active)


def _join_fluent_stack(
    uri: str, record: RunRecord, client_of: Callable[[], MlflowClient] | None
) -> None:
    """Put a run luigiflow created on MLflow's fluent stack, pointing MLflow's fluent API
    at the run's store (mlflow was just imported by user code, autologging, a flavour).

    Without `client_of` (called from the import hook, which may run inside luigiflow's
    own `get_client`, under its lock) MLflow's client is not asked for: the artifact
    repository is not primed, and MLflow's client looks the run up on its first upload."""
    import mlflow
    from mlflow.tracking import fluent

    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    stack = _fluent_stack()
    active_run_class = getattr(fluent, "ActiveRun", None)
    if stack is None or active_run_class is None:
        os.environ["MLFLOW_RUN_ID"] = record.info.run_id  # another MLflow: its own way in
        return
    run = _to_mlflow_run(record)
    if client_of is not None and not is_local_artifact_uri(run.info.artifact_uri):
        _prime_artifact_repo(client_of(), run.info.run_id, run.info.artifact_uri)
    stack.append(active_run_class(run))
    _guard(record.info.run_id)


# Runs made active here and not yet ended by luigiflow. MLflow's exit hook ends whatever
# run is still active as FINISHED; ours, registered after it, runs first and ends a run
# luigiflow left active (an interrupt cut its clean-up short) as KILLED: a FINISHED run
# with luigiflow's identity would count as complete.
_unended: set[str] = set()
_hooked = False


def _guard(run_id: str) -> None:
    global _hooked
    _unended.add(run_id)
    if not _hooked:
        atexit.register(end_unended_killed)
        _hooked = True


def end_unended_killed() -> None:
    """End as KILLED the runs luigiflow made active and never ended (top of the stack
    down): at exit, and after an interrupt (`_ops/stopped`)."""
    if not active_run.mlflow_imported():
        return  # no run of luigiflow's was ever on MLflow's stack
    import mlflow

    while (active := mlflow.active_run()) is not None and active.info.run_id in _unended:
        _unended.discard(active.info.run_id)
        try:
            mlflow.end_run("KILLED")
        except Exception:
            return


def _start_active_run(
    client: MlflowClient,
    store: RunStore,
    experiment_id: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, str],
    parent_tag: str,
) -> ActiveRun:
    global _context
    import mlflow
    from mlflow.tracking import fluent

    # User code in run_task logs through the fluent API: it must reach the same store,
    # even when MLFLOW_TRACKING_URI changed since the process first set it.
    uri = client._tracking_client.tracking_uri
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)

    active_run_class = getattr(fluent, "ActiveRun", None)
    stack = _fluent_stack()
    if stack is None or active_run_class is None or _settings.system_metrics_on():
        started = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            tags=tags,
            nested=mlflow.active_run() is not None,
        )
        store.log_batch(started.info.run_id, params=params)
        for key in active_run.luigiflows_git_tags(started.data.tags):
            if key not in tags:  # luigiflow's repository, not the project's
                client.delete_tag(started.info.run_id, key)
        return started
    if _context is None or _context[0] != os.getpid():
        from mlflow.tracking.context.registry import resolve_tags

        # MLflow's context tags include the git remote URL, which may embed a token.
        secrets = redaction.secret_values()
        resolved = {k: redaction.scrub(str(v), secrets) for k, v in resolve_tags({}).items()}
        for key in active_run.luigiflows_git_tags(resolved):
            del resolved[key]  # luigiflow's repository, not the project's
        _context = (os.getpid(), resolved)
    all_tags = {**_context[1], **tags}
    if stack:  # a run is active (build() called inside one): ours nests under it
        all_tags[parent_tag] = stack[-1].info.run_id
    run = _to_mlflow_run(store.create_run(experiment_id, run_name, all_tags, params=params))
    _prime_artifact_repo(client, run.info.run_id, run.info.artifact_uri)
    active: ActiveRun = active_run_class(run)
    stack.append(active)
    return active


def _to_mlflow_run(record: RunRecord) -> Any:
    """MLflow's `Run` for a record (what `ActiveRun` wraps)."""
    from mlflow.entities import Param, Run, RunData, RunInfo, RunTag

    info = record.info
    return Run(
        RunInfo(
            run_id=info.run_id,
            experiment_id=info.experiment_id,
            user_id=record.data.tags.get("mlflow.user", "unknown"),
            status=info.status,
            start_time=info.start_time,
            end_time=info.end_time,
            lifecycle_stage=info.lifecycle_stage,
            artifact_uri=info.artifact_uri,
            run_name=info.run_name,
        ),
        RunData(
            params=[Param(k, v) for k, v in record.data.params.items()],
            tags=[RunTag(k, v) for k, v in record.data.tags.items()],
        ),
    )


def _prime_artifact_repo(client: MlflowClient, run_id: str, artifact_uri: str) -> None:
    """Put the new run's artifact repository in MLflow's cache, built as MLflow builds it.

    MLflow's client otherwise asks the server for the run (one `runs/get`) on the first
    artifact upload, for the artifact URI that `create_run` just returned."""
    try:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.tracking._tracking_service import utils
        from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

        cache = utils._artifact_repos_cache
        tracking_uri = client._tracking_client.tracking_uri
        uri = add_databricks_profile_info_to_artifact_uri(artifact_uri, tracking_uri)
        repo = get_artifact_repository(uri, tracking_uri=tracking_uri)
    except (ImportError, AttributeError, TypeError):
        return  # another MLflow: its client looks the run up itself
    if len(cache) > 1024:
        cache.popitem(last=False)
    cache[run_id] = repo


def active_model_id() -> str | None:
    """MLflow's active logged model: metrics logged while it is set are linked to it."""
    env = ("MLFLOW_ACTIVE_MODEL_ID", "_MLFLOW_ACTIVE_MODEL_ID")
    if not active_run.mlflow_imported() and not any(os.environ.get(k) for k in env):
        return None  # only MLflow's code (or these variables) can set one
    try:
        from mlflow.tracking.fluent import get_active_model_id
    except ImportError:
        return "unknown"  # cannot tell: let MLflow's client write the metrics
    found = get_active_model_id()
    return str(found) if found is not None else None


def end_active_run(status: str) -> None:
    """End MLflow's active run (the one `start_active_run` made) with `status`."""
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        _unended.discard(active.info.run_id)
    mlflow.end_run(status)


def end_active_run_if(run_id: str, status: str) -> bool:
    """End MLflow's active run with `status` if it is `run_id`; False when it is not.

    User code may have ended the run itself (`mlflow.end_run()`); ending "the active
    run" then would end someone else's (a run `build()` was called inside) or nothing.
    """
    if not active_run.forget(run_id):
        return False  # never on MLflow's stack: mlflow was not imported by its task
    import mlflow

    active = mlflow.active_run()
    if active is None or active.info.run_id != run_id:
        return False
    if pop_active_run(run_id):
        terminate(mlflow.MlflowClient(), run_id, status)
    else:
        _unended.discard(run_id)
        mlflow.end_run(status)
    return True


def _fluent_stack() -> list[Any] | None:
    """MLflow's stack of active runs (this context's), or None where it keeps no such list."""
    from mlflow.tracking import fluent

    stack_var = getattr(fluent, "_active_run_stack", None)
    stack = stack_var.get() if stack_var is not None and hasattr(stack_var, "get") else None
    return stack if isinstance(stack, list) else None


def pop_active_run(run_id: str) -> bool:
    """Take `run_id` off MLflow's active-run stack as `mlflow.end_run` does, without
    writing anything (the caller ends the run in the store). False, with nothing done,
    where it is not the top of the stack or this MLflow keeps its fluent state otherwise.
    True, with nothing done, for a run that never joined the stack (nothing imported
    mlflow while its task ran).
    """
    if not active_run.forget(run_id):
        return True
    from mlflow.tracking import fluent

    last_var = getattr(fluent, "_last_active_run_id", None)
    run_id_env = getattr(fluent, "MLFLOW_RUN_ID", None)
    monitors = getattr(fluent, "run_id_to_system_metrics_monitor", None)
    stack = _fluent_stack()
    usable = (
        stack is not None
        and bool(stack)
        and stack[-1].info.run_id == run_id
        and hasattr(last_var, "set")
        and hasattr(run_id_env, "unset")
        and isinstance(monitors, dict)
    )
    if not usable:
        return False
    assert stack is not None and isinstance(monitors, dict)
    _unended.discard(run_id)
    run_id_env.unset()  # type: ignore[union-attr]
    stack.pop()
    last_var.set(run_id)  # type: ignore[union-attr]
    monitor = monitors.pop(run_id, None)
    if monitor is not None:
        monitor.finish()
    return True


def active_run_ids() -> list[str]:
    """Ids of the runs on MLflow's fluent stack, innermost last (empty when none)."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return []
    run = mlflow.active_run()
    return [run.info.run_id] if run is not None else []


def end_all_active_runs() -> None:
    """Pop every run left on MLflow's fluent stack (between tests, notebook cells)."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return
    while mlflow.active_run() is not None:
        mlflow.end_run()
