"""A run's files: writing artifacts with their size and checksum, verifying them when
read, and the local download cache for remote artifact stores.

On a local artifact store the artifact is written straight into the run's artifact
folder (or hard-linked there when the user hands over an existing file), so a 1 GiB
file costs no copy. On a remote store (an `mlflow server` with proxied artifacts, S3,
...) it is written to a temporary folder and uploaded through MLflow. Downstream tasks
read local paths: remote artifacts are downloaded once into a cache keyed by run id.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import urllib.parse
from typing import Any

from luigiflow import _settings
from luigiflow._core import hashing, serializers
from luigiflow._errors import ArtifactError
from luigiflow._store import current, schema
from luigiflow._store.records import RunRecord


def is_local_uri(uri: str) -> bool:
    scheme = urllib.parse.urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path_of(uri: str) -> pathlib.Path:
    """The filesystem path of a local (`file:` or bare) artifact URI."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return pathlib.Path(urllib.parse.unquote(parsed.path))
    return pathlib.Path(uri)


STAGING_PREFIX = "luigiflow-upload-"


def remove_staging(run_ids: list[str]) -> None:
    """Remove the upload staging folders of these runs (their writers were killed)."""
    root = pathlib.Path(tempfile.gettempdir())
    for run_id in run_ids:
        for folder in root.glob(f"{STAGING_PREFIX}{run_id}-*"):
            shutil.rmtree(folder, ignore_errors=True)


class RunWriter:
    """Artifacts and metrics gathered while one run is active."""

    def __init__(self, run_id: str, artifact_uri: str, uri: str) -> None:
        self.run_id = run_id
        self.uri = uri
        self.local = is_local_uri(artifact_uri)
        if self.local:
            self.root = local_path_of(artifact_uri)
        else:
            # Named for the run, so whoever outlives this process (the build's parent)
            # can remove it after a kill: see `remove_staging`.
            self.root = pathlib.Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{run_id}-"))
        self.saved: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, float] = {}
        self.steps: dict[str, int] = {}  # the highest step logged live, per metric
        self.last_metric_ms = 0  # when a metric was last logged live

    def write(self, name: str, filename: str, value: Any) -> None:
        dest = self.root / filename
        serializers.write_value(name, value, filename, dest)
        size = hashing.tree_size(dest)
        record: dict[str, Any] = {"file": filename, "bytes": size}
        if size <= _settings.checksum_max_bytes():
            record["sha256"] = hashing.file_digest(dest)
        self.saved[name] = record

    def write_extra(self, relpath: str, text: str) -> None:
        dest = self.root / relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")

    def record_tags(self) -> dict[str, str]:
        """One tag per saved artifact: its file, size and checksum."""
        return {schema.artifact_tag(n): json.dumps(rec) for n, rec in self.saved.items()}

    def upload(self) -> None:
        if self.local:
            return
        current.get_store(self.uri).log_artifacts(self.run_id, str(self.root))

    def cleanup(self) -> None:
        if not self.local:
            shutil.rmtree(self.root, ignore_errors=True)


_verified: dict[tuple[str, int, int], bool] = {}


def verify(run: RunRecord, name: str, filename: str, path: pathlib.Path) -> None:
    """Check an artifact against the size and checksum recorded on its run."""
    where = f"artifact {name!r} ({filename}) of run {run.info.run_id}"
    if not path.exists():
        raise ArtifactError(
            f"{where} is missing at {path}; the run's files were removed — delete the run "
            "(mlflow runs delete) so luigiflow recomputes it"
        )
    record = schema.artifact_records(run.data.tags).get(name)
    if record is None:
        return  # recorded by something other than luigiflow: nothing to check against
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if _verified.get(key):
        return
    size = hashing.tree_size(path)
    if size != record.get("bytes"):
        raise ArtifactError(
            f"{where} is corrupted: {size} bytes on disk, {record.get('bytes')} recorded; "
            "delete the run so luigiflow recomputes it"
        )
    expected = record.get("sha256")
    if expected and hashing.file_digest(path) != expected:
        raise ArtifactError(
            f"{where} is corrupted: its sha256 differs from the one recorded; "
            "delete the run so luigiflow recomputes it"
        )
    _verified[key] = True


def local_artifact_path(run_id: str, artifact_uri: str, filename: str) -> pathlib.Path:
    """A local readable path of one artifact, downloading it into the cache if remote."""
    if is_local_uri(artifact_uri):
        return local_path_of(artifact_uri) / filename
    cache = _settings.cache_dir() / "artifacts"
    cached = cache / run_id / filename
    if cached.exists():
        return cached
    cache.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(dir=cache))
    try:
        current.get_store().download_artifacts(run_id, filename, str(staging))
        cached.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / filename, cached)  # atomic: readers never see half a file
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def artifact_bytes(run: RunRecord) -> int:
    """Bytes a run's artifacts take (local stores: on disk, hard links once)."""
    uri = run.info.artifact_uri
    if is_local_uri(uri):
        root = local_path_of(uri)
        return hashing.tree_size(root) if root.exists() else 0
    store = current.get_store()

    def walk(path: str | None) -> int:
        total = 0
        for item in store.list_artifacts(run.info.run_id, path):
            total += walk(item.path) if item.is_dir else int(item.file_size or 0)
        return total

    try:
        return walk(None)
    except Exception:
        return 0
