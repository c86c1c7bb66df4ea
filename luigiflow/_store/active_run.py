"""A task's run as MLflow's active run, without importing mlflow until something does.

`import mlflow` (with its SQL store and artifact modules) costs 2-5 s, more than the
rest of a build that executes one task; luigiflow's own writes need none of it. So
when mlflow is not imported yet, a run is created through the store port with the tags
MLflow's `start_run` would add (`context_tags`), and a one-shot import hook puts it on
MLflow's fluent run stack the moment user code, autologging or a model flavour imports
mlflow: `mlflow.log_metric(...)` and `mlflow.sklearn.autolog()` inside `run_task` land
on the task's run as before. MLflow keeps its active runs per thread: the run joins the
stack of the thread that executes the task, when that thread is the one importing
mlflow (luigiflow's own threads, such as the heartbeat, never import it).
"""

from __future__ import annotations

import configparser
import getpass
import importlib.abc
import importlib.machinery
import json
import logging
import os
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from luigiflow._core import redaction
from luigiflow._store.records import RunRecord

_log = logging.getLogger(__name__)

USER_TAG = "mlflow.user"
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
GIT_BRANCH_TAG = "mlflow.source.git.branch"
GIT_REPO_URL_TAG = "mlflow.source.git.repoURL"

_context: tuple[int, dict[str, str]] | None = None


def mlflow_imported() -> bool:
    return "mlflow" in sys.modules


def context_tags_known() -> bool:
    """MLflow's context tags can be told without MLflow: no context provider plugin,
    not in Databricks, not in a notebook (each adds tags only MLflow's code knows)."""
    if any(k.startswith("DATABRICKS_") for k in os.environ):
        return False
    if "ipykernel" in sys.modules:
        return False
    from importlib.metadata import entry_points

    return not entry_points(group="mlflow.run_context_provider")


def context_tags(secrets: Sequence[str]) -> dict[str, str]:
    """The tags MLflow's `start_run` adds from its context providers (default, git,
    `MLFLOW_RUN_CONTEXT`), resolved as MLflow resolves them, once per process; values
    scrubbed of `secrets` (a git remote may carry a token)."""
    global _context
    if _context is None or _context[0] != os.getpid():
        main = sys.argv[0] if sys.argv and sys.argv[0] else None
        tags = {
            USER_TAG: _user(),
            SOURCE_NAME_TAG: main if main is not None else "<console>",
            SOURCE_TYPE_TAG: "LOCAL",
        }
        if main is not None and not _is_luigiflow(main):
            # The `luigiflow` command's own file is no user's code: its repository (an
            # editable install's) is not the project's. Each run names its own source.
            tags.update(_git_tags(main))
        extra = os.environ.get("MLFLOW_RUN_CONTEXT")
        if extra:
            tags.update({str(k): str(v) for k, v in json.loads(extra).items()})
        _context = (os.getpid(), tags)
    return {k: redaction.scrub(v, list(secrets)) for k, v in _context[1].items()}


def luigiflows_git_tags(context: Mapping[str, str]) -> list[str]:
    """The git tags of MLflow's context (resolved from the main script's file) that name
    luigiflow's own repository: under the `luigiflow` command from an editable install
    they would record luigiflow's commit as the code of every run. The run's own tags
    give the project's git state instead (or none)."""
    main = sys.argv[0] if sys.argv and sys.argv[0] else None
    if main is None or not _is_luigiflow(main):
        return []
    return [k for k in (GIT_COMMIT_TAG, GIT_BRANCH_TAG, GIT_REPO_URL_TAG) if k in context]


def _is_luigiflow(main: str) -> bool:
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.abspath(main)
    if path.startswith(package + os.sep):
        return True
    # The `luigiflow` console script pip writes: `from luigiflow.cli import main`.
    return os.path.basename(path) == "luigiflow" and not os.path.isdir(path)


def _user() -> str:
    """MLflow's user: MLFLOW_TRACKING_USERNAME (or ~/.mlflow/credentials), else the login."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    path = os.path.expanduser("~/.mlflow/credentials")
    if not user and os.path.exists(path):
        config = configparser.ConfigParser()
        config.read(path)
        user = config["mlflow"].get("mlflow_tracking_username") if "mlflow" in config else None
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _git_tags(main: str) -> dict[str, str]:
    """Commit, branch and first remote of the repository holding the main script, as
    MLflow's git context reads them (none for an ignored script or no repository)."""
    path = os.path.abspath(main)
    folder = os.path.dirname(path) if os.path.isfile(path) else path
    if not os.path.isdir(folder):
        return {}
    # Here, not at the top: provenance imports Luigi, which `runs` and `show` never load
    # (this module comes with mlflow_compat on the read path).
    from luigiflow._core import provenance

    state = provenance.git_state(folder)
    commit = state.get("commit")
    if not commit or provenance._git("check-ignore", "-q", folder, cwd=folder) is not None:
        return {}
    tags = {GIT_COMMIT_TAG: commit}
    branch = state.get("branch")
    if branch and branch != "HEAD":  # detached: MLflow finds no active branch
        tags[GIT_BRANCH_TAG] = branch
    remotes = (provenance._git("remote", cwd=folder) or "").split()
    if remotes:
        url = (provenance._git("remote", "get-url", remotes[0], cwd=folder) or "").strip()
        if url:
            tags[GIT_REPO_URL_TAG] = _strip_credentials(url)
    return tags


def _strip_credentials(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if not parsed.scheme or "@" not in parsed.netloc:
        return url
    return urllib.parse.urlunsplit(parsed._replace(netloc=parsed.netloc.rpartition("@")[2]))


# ----- joining MLflow's fluent stack when mlflow gets imported -------------------------


class _Pending:
    """A run waiting for mlflow to be imported by the thread that executes its task."""

    def __init__(self, run: RunRecord, join: Callable[[RunRecord, bool], None]) -> None:
        self.run = run
        self.join = join
        self.thread = threading.get_ident()
        self.joined = False


_pending: dict[int, list[_Pending]] = {}  # thread id -> its task runs, outermost first
_callbacks: list[Callable[[], None]] = []  # called once when mlflow gets imported, any thread
_lock = threading.Lock()


class _JoinOnImport(importlib.abc.MetaPathFinder):
    """Runs `_on_mlflow_imported` right after the `mlflow` package finishes importing."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if name != "mlflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            _on_mlflow_imported()

        loader.exec_module = exec_module
        return spec


_finder = _JoinOnImport()


def join_when_imported(run: RunRecord, join: Callable[[RunRecord, bool], None]) -> None:
    """Call `join(run, True)` now if mlflow is imported already; else `join(run, False)`
    on this thread when mlflow gets imported here while the run is its task run (from
    inside that import, wherever it happens: `join` must not take luigiflow's locks)."""
    if mlflow_imported():
        join(run, True)
        return
    with _lock:
        _pending.setdefault(threading.get_ident(), []).append(_Pending(run, join))
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def call_when_imported(callback: Callable[[], None]) -> None:
    """Call `callback()` now if mlflow is imported already, else right after mlflow
    finishes importing, on whichever thread imports it (before that import returns to
    the code that asked for it: `callback` must not take luigiflow's locks)."""
    if mlflow_imported():
        callback()
        return
    with _lock:
        _callbacks.append(callback)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def forget(run_id: str) -> bool:
    """The run is over: no join any more. False when it never joined MLflow's stack
    (mlflow was not imported while its task ran); True otherwise."""
    with _lock:
        waiting = _pending.get(threading.get_ident(), [])
        found = next((p for p in waiting if p.run.info.run_id == run_id), None)
        if found is None:
            return mlflow_imported()
        waiting.remove(found)
        if not waiting:
            _pending.pop(threading.get_ident(), None)
        if not _pending and not _callbacks and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        return found.joined


def _on_mlflow_imported() -> None:
    with _lock:
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        waiting = list(_pending.get(threading.get_ident(), []))
        callbacks = list(_callbacks)
        _callbacks.clear()
    for callback in callbacks:
        try:
            callback()
        except Exception:  # never break the user's import
            _log.warning("luigiflow could not act on mlflow's import (%s)", callback)
    for pending in waiting:
        try:
            pending.join(pending.run, False)
            pending.joined = True
        except Exception:  # never break the user's import: their fluent calls start a run
            _log.warning("luigiflow could not make run %s MLflow's active run", pending.run.run_id)
