"""Where MLflow puts a run's artifacts, and its artifact repositories (progress bars,
deleting a run's folder).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import urllib.parse
from collections.abc import Iterator


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """MLflow's "Downloading artifacts" bars off while luigiflow fills its caches (its
    own progress display says what a build does); a user's setting wins."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if name in os.environ:
        yield
        return
    os.environ[name] = "false"
    try:
        yield
    finally:
        os.environ.pop(name, None)


def run_artifact_uri(artifact_location: str, run_id: str) -> str:
    """Where MLflow puts a new run's artifacts in an experiment's artifact location."""
    parsed = urllib.parse.urlparse(artifact_location)
    if parsed.scheme in ("", "file") and not parsed.query and not parsed.params:
        # MLflow's append_to_uri_path for a path or file: URI, without importing it.
        head = artifact_location if parsed.scheme == "" else parsed.path
        joined = posixpath.join(head, run_id, "artifacts") if head else f"{run_id}/artifacts"
        if parsed.scheme == "":
            return joined
        if parsed.path.startswith("/") and not parsed.fragment:
            return urllib.parse.urlunparse(parsed._replace(path=joined))
    from mlflow.utils.uri import append_to_uri_path

    return str(append_to_uri_path(artifact_location, run_id, "artifacts"))


def is_local_artifact_uri(uri: str) -> bool:
    scheme = urllib.parse.urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def delete_artifact_folder(artifact_uri: str) -> None:
    """Delete every artifact of a run through MLflow's artifact repository."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(artifact_uri)
    try:
        repo.delete_artifacts()
    except Exception as exc:  # a missing folder is already clean
        if "No such file" not in str(exc) and "does not exist" not in str(exc):
            raise
