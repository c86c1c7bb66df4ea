"""A run's files: writing artifacts with their checksum records, verifying them when
read, and the local download cache for remote artifact stores.

An artifact never changes once its run is FINISHED. On a local artifact store a value
is serialized straight into the run's artifact folder, and a large file a task writes
at `artifact_path_for(name)` is already there (zero copy); a file the user hands over
as a `pathlib.Path` is cloned (reflink) or copied, never linked, so editing it later
cannot touch the run (see `_core/artifact_files.py`). On a remote store (an `mlflow server`
with proxied artifacts, S3, ...) the files are staged in a temporary folder and
uploaded through MLflow. Downstream tasks read local paths: remote artifacts are
downloaded once into a cache keyed by run id, and a cached copy that no longer matches
its record is fetched again before anything is called corrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
import urllib.parse
from typing import Any

from luigiflow import _settings
from luigiflow._core import serializers
from luigiflow._errors import ArtifactError
from luigiflow._store import checksums, current, schema, signatures
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


# In an artifact's record: the `module:qualname` of the function that reads it back
# (`save({name: (obj, save_fn, load_fn)})`).
LOADER_KEY = "loader"
UPLOAD_PREFIX = "luigiflow-upload-"  # remote runs stage their files in such temp folders


def remove_staging(run_ids: list[str]) -> None:
    """Remove the upload staging folders of these runs (their writers were killed)."""
    root = pathlib.Path(tempfile.gettempdir())
    for run_id in run_ids:
        for folder in root.glob(f"{UPLOAD_PREFIX}{run_id}-*"):
            shutil.rmtree(folder, ignore_errors=True)


class RunWriter:
    """Artifacts and metrics gathered while one run is active."""

    def __init__(
        self,
        run_id: str,
        artifact_uri: str,
        uri: str,
        experiment_id: str = "",
        start_tags: dict[str, str] | None = None,
    ) -> None:
        self.run_id = run_id
        self.uri = uri
        self.experiment_id = experiment_id
        # Every tag the run carries by the time it finishes: what its signature covers.
        self.tags: dict[str, str] = dict(start_tags or {})
        self.local = is_local_uri(artifact_uri)
        # A remote run's staging folder is made on first use: nothing here touches the
        # disk, so a full disk fails inside the run (which is then marked FAILED).
        self._root = local_path_of(artifact_uri) if self.local else None
        self.saved: dict[str, dict[str, Any]] = {}
        self.models: dict[str, dict[str, Any]] = {}  # model outputs: flavour, uri, sha256
        self.metrics: dict[str, float] = {}
        self.finish_tags: dict[str, str] = {}  # written with the results, under the signature
        self.steps: dict[str, int] = {}  # the highest step logged live, per metric
        self.last_metric_ms = 0  # when a metric was last logged live
        self.handed_out: dict[str, pathlib.Path] = {}
        self.uploaded = False  # a remote run's files went to the server

    @property
    def root(self) -> pathlib.Path:
        if self._root is None:
            # Named for the run, so whoever outlives this process (the build's parent)
            # can remove it after a kill: see `remove_staging`.
            self._root = pathlib.Path(tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{self.run_id}-"))
        return self._root

    def path_for(self, name: str, filename: str) -> pathlib.Path:
        """A fresh, writable path for artifact `name` inside the run's staging area."""
        dest = self.root / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        self.handed_out[name] = dest
        return dest

    def _owns(self, path: pathlib.Path) -> bool:
        resolved = path.resolve()
        return any(resolved == p.resolve() for p in self.handed_out.values())

    def write(self, name: str, filename: str, value: Any) -> None:
        dest = self.root / filename
        owned = isinstance(value, pathlib.Path) and self._owns(value)
        loader = serializers.loader_reference(name, value)  # refused before writing
        serializers.write_value(name, value, filename, dest, owned)
        self.saved[name] = checksums.make_record(filename, dest)
        if loader is not None:  # in the artifact's record: signed with it under a team key
            self.saved[name][LOADER_KEY] = loader

    def write_extra(self, relpath: str, text: str) -> None:
        if relpath == schema.ENVIRONMENT_FILE and not self.local:
            # The same package list in every run of a build: on a server, one upload per
            # content (a request per task saved), named by a tag (see schema).
            share = getattr(current.get_store(self.uri), "share_text", None)
            where = share(self.run_id, text, schema.SHARED_ENVIRONMENTS) if share else None
            if where is not None:
                self.finish_tags[schema.ENVIRONMENT_TAG] = where
                return
        dest = self.root / relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")

    def note_tag(self, key: str, value: str) -> None:
        """A tag set on the run while it is active (by luigiflow, outside `finish`)."""
        self.tags[key] = value

    def record_tags(self) -> dict[str, str]:
        """One tag per saved artifact (its checksum record, see `checksums`), one per model
        output (flavour, uri, sha256) and, with a team key, the run's signature over them
        and the tags the run already carries."""
        tags = {schema.artifact_tag(n): checksums.record_text(r) for n, r in self.saved.items()}
        tags.update(self.finish_tags)
        tags.update({schema.model_tag(n): json.dumps(rec) for n, rec in self.models.items()})
        tags.update(signatures.sign(self.run_id, self.experiment_id, {**self.tags, **tags}))
        return tags

    def upload(self) -> None:
        if self.local or self._root is None:
            return
        current.get_store(self.uri).log_artifacts(self.run_id, str(self._root))
        self.uploaded = True

    def cleanup(self) -> None:
        if not self.local and self._root is not None:
            if self.uploaded:
                self._keep_in_cache()
            shutil.rmtree(self._root, ignore_errors=True)

    def _keep_in_cache(self) -> None:
        """The uploaded artifacts become this run's cached copies: a downstream task on
        this machine reads them without downloading (checked against their records on
        every read, as a download is)."""
        assert self._root is not None
        cache = _settings.cache_dir() / "artifacts" / self.run_id
        for record in self.saved.values():
            source, cached = self._root / record["file"], cache / record["file"]
            if not source.exists() or cached.exists():
                continue
            with contextlib.suppress(OSError):  # a cache only: a download does it otherwise
                cached.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(source, cached)  # a rename on one file system


def check_declared(run: RunRecord, name: str, filename: str) -> None:
    """Refuse an artifact the run never recorded under this name and file: the task's
    `artifacts` changed since the run, and its identity (hence the run) did not."""
    if schema.IDENTITY_TAG not in run.data.tags:
        return  # not a luigiflow run: nothing recorded to compare with
    records = schema.artifact_records(run.data.tags)
    record = records.get(name)
    if record is not None and record.get("file") == filename:
        return
    family = run.data.tags.get(schema.FAMILY_TAG, "the task")
    recorded = ", ".join(f"{k}={r.get('file')}" for k, r in sorted(records.items())) or "none"
    raise ArtifactError(
        f"{family}: artifact {name!r} ({filename}) is not in run {run.info.run_id} "
        f"(it recorded: {recorded}): declared artifacts changed since this run; bump "
        f"`version` of {family} so luigiflow recomputes it"
    )


def verify(run: RunRecord, name: str, filename: str, path: pathlib.Path) -> None:
    """Check an artifact against the size and checksum recorded on its run."""
    problem = _problem(run, name, path)
    if problem is None:
        return
    where = f"artifact {name!r} ({filename}) of run {run.info.run_id}"
    if problem == "missing":
        raise ArtifactError(
            f"{where} is missing at {path}; the run's files were removed — delete the run "
            "(mlflow runs delete) so luigiflow recomputes it"
        )
    raise ArtifactError(
        f"{where} is corrupted: {problem}; delete the run so luigiflow recomputes it"
    )


def _problem(run: RunRecord, name: str, path: pathlib.Path) -> str | None:
    if not path.exists():
        return "missing"
    record = schema.artifact_records(run.data.tags).get(name)
    if record is None:
        return None  # recorded by something other than luigiflow: nothing to check against
    return checksums.problem(record, path)


def verified_path(run: RunRecord, name: str, filename: str) -> pathlib.Path:
    """A local, verified path of one artifact of `run` (downloaded when remote).

    A remote artifact whose cached copy does not match its record is downloaded and
    checked again: only a bad copy on the server is an error.
    """
    check_declared(run, name, filename)
    run_id, uri = run.info.run_id, run.info.artifact_uri
    path = local_artifact_path(run_id, uri, filename)
    if is_local_uri(uri) or _problem(run, name, path) is None:
        verify(run, name, filename, path)
        return path
    _drop(path)
    path = local_artifact_path(run_id, uri, filename)
    problem = _problem(run, name, path)
    if problem is not None:
        _drop(path)
        raise ArtifactError(
            f"artifact {name!r} ({filename}) of run {run_id}: the copy on the tracking "
            f"server is corrupted ({problem}); delete the run so luigiflow recomputes it"
        )
    return path


def load(run: RunRecord, name: str, filename: str) -> Any:
    """An artifact of `run`, deserialized. With a team key, from the exact bytes just
    read and checked against the signed checksum (no cached verdict); unknown formats
    and folders give the verified path."""
    path = verified_path(run, name, filename)
    record = schema.artifact_records(run.data.tags).get(name) or {}
    loader = record.get(LOADER_KEY)
    if isinstance(loader, str):
        where = f"artifact {name!r} ({filename}) of run {run.info.run_id}"
        # verified_path checked it; with a team key, checked again now, with no cached
        # verdict, as the user's function reads the file itself.
        problem = checksums.problem(record, path) if _settings.signing_keys() else None
        if problem is not None:
            raise ArtifactError(
                f"{where} changed after it was signed ({problem}); it was not loaded. "
                "Delete the run so luigiflow recomputes it"
            )
        return serializers.load_with(loader, str(path), where)
    if (
        not _settings.signing_keys()
        or path.is_dir()
        or serializers.extension(filename) not in serializers.FROM_BYTES
    ):
        return serializers.read_value(str(path), filename)
    where = f"artifact {name!r} ({filename}) of run {run.info.run_id}"
    algorithm = next((a for a in checksums.KNOWN_ALGORITHMS if record.get(a)), None)
    if algorithm is None:
        raise ArtifactError(
            f"{where} has no checksum recorded, so it cannot be checked before it is "
            "deserialized; with a team key only runs signed by luigiflow are loaded"
        )
    data = path.read_bytes()
    if (
        len(data) != record.get("bytes")
        or checksums.bytes_digest(algorithm, data) != record[algorithm]
    ):
        raise ArtifactError(
            f"{where} changed after it was signed: its {algorithm} differs from the signed "
            "one; it was not loaded. Delete the run so luigiflow recomputes it"
        )
    return serializers.read_bytes(data, filename)


def _drop(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


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
        store = current.get_store()
        # On a server with proxied artifacts, straight from the run's artifact URI (one
        # request a file, and no mlflow import); else through MLflow's client.
        fetch = getattr(store, "download_artifact", None)
        if fetch is None or not fetch(artifact_uri, filename, str(staging)):
            store.download_artifacts(run_id, filename, str(staging))
        cached.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / filename, cached)  # atomic: readers never see half a file
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def freed_bytes(runs: list[RunRecord]) -> dict[str, int]:
    """Bytes that removing all of `runs` together frees, per run.

    On a local store a file counts only when every hard link to it lies inside these
    runs (a file also linked from elsewhere stays on disk), and once however many of
    them link it. A remote store reports sizes only: each file counts once per run.
    """
    freed: dict[str, int] = {}
    links: dict[tuple[int, int], list[Any]] = {}  # inode -> [owner run, size, nlink, seen]
    for run in runs:
        run_id, uri = run.info.run_id, run.info.artifact_uri
        freed[run_id] = 0
        if not is_local_uri(uri):
            freed[run_id] = _remote_bytes(run_id)
            continue
        root = local_path_of(uri)
        for path in root.rglob("*") if root.exists() else ():
            if path.is_symlink() or not path.is_file():
                continue
            st = path.stat()
            entry = links.setdefault((st.st_dev, st.st_ino), [run_id, st.st_size, st.st_nlink, 0])
            entry[3] += 1
    for owner, size, nlink, seen in links.values():
        if seen >= nlink:
            freed[owner] += size
    return freed


def _remote_bytes(run_id: str) -> int:
    store = current.get_store()

    def walk(path: str | None) -> int:
        total = 0
        for item in store.list_artifacts(run_id, path):
            total += walk(item.path) if item.is_dir else int(item.file_size or 0)
        return total

    try:
        return walk(None)
    except Exception:  # sizes are informative: an unlistable run still goes
        return 0
