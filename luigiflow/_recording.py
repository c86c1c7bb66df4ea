"""What one run writes and what a reader checks: artifacts placed in the run with their
size and sha256, and verification of both when a downstream task loads them."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from luigiflow import _artifacts, _tracking
from luigiflow._errors import ArtifactError

if TYPE_CHECKING:
    from mlflow.entities import Run

ARTIFACT_TAG_PREFIX = "luigiflow.artifact."
# Artifacts larger than this record size only, not a checksum: hashing 1 GiB would
# cost more than the zero-copy save it follows.
CHECKSUM_MAX_BYTES = int(os.environ.get("LUIGIFLOW_CHECKSUM_MAX_BYTES", str(64 * 2**20)))


class RunState:
    """Artifacts and metrics gathered while one run is active."""

    def __init__(self, run_id: str, artifact_uri: str) -> None:
        self.run_id = run_id
        self.local = _artifacts.is_local_uri(artifact_uri)
        if self.local:
            self.root = _artifacts.local_path_of(artifact_uri)
        else:
            self.root = pathlib.Path(tempfile.mkdtemp(prefix="luigiflow-upload-"))
        self.saved: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, float] = {}

    def write(self, name: str, filename: str, value: Any) -> None:
        dest = self.root / filename
        _artifacts.write_value(name, value, filename, dest)
        size = size_of(dest)
        record: dict[str, Any] = {"file": filename, "bytes": size}
        if size <= CHECKSUM_MAX_BYTES:
            record["sha256"] = _artifacts.file_digest(dest)
        self.saved[name] = record

    def write_extra(self, relpath: str, text: str) -> None:
        dest = self.root / relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")

    def upload(self) -> None:
        if self.local:
            return
        with _tracking.translate_errors(f"uploading artifacts of run {self.run_id}"):
            _tracking.get_client().log_artifacts(self.run_id, str(self.root))

    def cleanup(self) -> None:
        if not self.local:
            shutil.rmtree(self.root, ignore_errors=True)


def size_of(path: pathlib.Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


verified: dict[tuple[str, int, int], bool] = {}


def verify(run: Run, name: str, filename: str, path: pathlib.Path) -> None:
    """Check an artifact against the size and checksum recorded on its run."""
    where = f"artifact {name!r} ({filename}) of run {run.info.run_id}"
    if not path.exists():
        raise ArtifactError(
            f"{where} is missing at {path}; the run's files were removed — delete the run "
            "(mlflow runs delete) so luigiflow recomputes it"
        )
    raw = run.data.tags.get(ARTIFACT_TAG_PREFIX + name)
    if raw is None:
        return  # recorded by something other than luigiflow: nothing to check against
    record = json.loads(raw)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if verified.get(key):
        return
    size = size_of(path)
    if size != record.get("bytes"):
        raise ArtifactError(
            f"{where} is corrupted: {size} bytes on disk, {record.get('bytes')} recorded; "
            "delete the run so luigiflow recomputes it"
        )
    expected = record.get("sha256")
    if expected and _artifacts.file_digest(path) != expected:
        raise ArtifactError(
            f"{where} is corrupted: its sha256 differs from the one recorded; "
            "delete the run so luigiflow recomputes it"
        )
    verified[key] = True
