"""Serializers chosen by file extension, artifact placement and the local download cache.

On a local artifact store the artifact is written straight into the run's artifact
folder (or hard-linked there when the user hands over an existing file), so a 1 GiB
file costs no copy. On a remote store (an `mlflow server` with proxied artifacts, S3,
...) it is written to a temporary folder and uploaded through MLflow. Downstream tasks
read local paths: remote artifacts are downloaded once into a cache keyed by run id.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import pickle
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable
from typing import Any

import luigi

from luigiflow._errors import ArtifactError
from luigiflow._parameters import cache_dir

SaveFn = Callable[[Any, str], Any]


def _save_pickle(obj: Any, path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def _load_pickle(path: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


def _save_joblib(obj: Any, path: str) -> None:
    import joblib

    joblib.dump(obj, path)


def _load_joblib(path: str) -> Any:
    import joblib

    return joblib.load(path)


def _save_json(obj: Any, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1, default=_json_default)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # NumPy scalars and arrays
        return obj.tolist()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _save_text(obj: Any, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(obj if isinstance(obj, str) else str(obj))


def _load_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _as_frame(obj: Any) -> Any:
    import pandas as pd

    if isinstance(obj, pd.Series):
        return obj.to_frame()
    if not isinstance(obj, pd.DataFrame):
        return pd.DataFrame(obj)
    return obj


def _save_csv(obj: Any, path: str) -> None:
    import pandas as pd

    frame = _as_frame(obj)
    # A default RangeIndex carries no information; any other index is kept as a column.
    plain = isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0
    frame.to_csv(path, index=not plain)


def _load_csv(path: str) -> Any:
    import pandas as pd

    return pd.read_csv(path)


def _save_parquet(obj: Any, path: str) -> None:
    _as_frame(obj).to_parquet(path)


def _load_parquet(path: str) -> Any:
    import pandas as pd

    return pd.read_parquet(path)


def _save_npy(obj: Any, path: str) -> None:
    import numpy as np

    np.save(path, np.asarray(obj), allow_pickle=False)


def _load_npy(path: str) -> Any:
    import numpy as np

    return np.load(path, allow_pickle=False)


SERIALIZERS: dict[str, tuple[SaveFn, Callable[[str], Any]]] = {
    ".pkl": (_save_pickle, _load_pickle),
    ".pickle": (_save_pickle, _load_pickle),
    ".joblib": (_save_joblib, _load_joblib),
    ".json": (_save_json, _load_json),
    ".txt": (_save_text, _load_text),
    ".csv": (_save_csv, _load_csv),
    ".parquet": (_save_parquet, _load_parquet),
    ".npy": (_save_npy, _load_npy),
}

# Extensions whose natural Python value is a str: a str given for them is content.
_TEXT_EXTENSIONS = {".txt", ".json"}


def extension(filename: str) -> str:
    return pathlib.PurePosixPath(filename).suffix.lower()


def validate_filename(filename: Any) -> str | None:
    """What is wrong with an artifact file name, or None."""
    if not isinstance(filename, str) or not filename.strip():
        return f"file name must be a non-empty string, got {filename!r}"
    pure = pathlib.PurePosixPath(filename)
    if pure.is_absolute() or ".." in pure.parts or "\\" in filename:
        return f"file name {filename!r} must be a relative path inside the run"
    return None


def is_local_uri(uri: str) -> bool:
    scheme = urllib.parse.urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path_of(uri: str) -> pathlib.Path:
    """The filesystem path of a local (`file:` or bare) artifact URI."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return pathlib.Path(urllib.parse.unquote(parsed.path))
    return pathlib.Path(uri)


def write_value(name: str, value: Any, filename: str, dest: pathlib.Path) -> None:
    """Write one artifact value to `dest`, choosing how from its form and extension."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(value, tuple) and len(value) == 2 and callable(value[1]):
        obj, save_fn = value
        save_fn(obj, str(dest))
        if not dest.exists():
            raise ArtifactError(
                f"artifact {name!r}: the save function {getattr(save_fn, '__name__', save_fn)} "
                f"did not create {dest.name}; it must write to the path it is given"
            )
        return
    ext = extension(filename)
    is_path = isinstance(value, os.PathLike) or (
        isinstance(value, str) and ext not in _TEXT_EXTENSIONS and os.path.exists(value)
    )
    if is_path:
        place_existing(name, pathlib.Path(os.fspath(value)), dest)
        return
    if ext not in SERIALIZERS:
        known = ", ".join(sorted(SERIALIZERS))
        raise ArtifactError(
            f"artifact {name!r} ({filename}): no serializer for {ext or 'a name without extension'}"
            f" (known: {known}); pass (obj, save_fn) or the path of a file you wrote"
        )
    SERIALIZERS[ext][0](value, str(dest))


def place_existing(name: str, source: pathlib.Path, dest: pathlib.Path) -> None:
    """Put an existing file or folder at `dest` without copying bytes when possible."""
    if not source.exists():
        raise ArtifactError(f"artifact {name!r}: path {source} does not exist")
    if dest.exists():
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    if source.is_dir():
        shutil.copytree(source, dest, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(source), str(dest))


def _link_or_copy(src: str, dst: str) -> None:
    # A hard link makes the artifact free on the same filesystem; elsewhere, copy.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def read_value(path: str, filename: str) -> Any:
    """Deserialize an artifact by extension; unknown extensions give the local path."""
    ext = extension(filename)
    if ext in SERIALIZERS and os.path.isfile(path):
        return SERIALIZERS[ext][1](path)
    return path


def file_digest(path: pathlib.Path) -> str:
    """sha256 of a file, or of a folder's sorted (relative path, digest) listing."""
    if path.is_dir():
        parts = [
            f"{p.relative_to(path).as_posix()}:{file_digest(p)}"
            for p in sorted(path.rglob("*"))
            if p.is_file()
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def local_artifact_path(run_id: str, artifact_uri: str, filename: str) -> pathlib.Path:
    """A local readable path of one artifact, downloading it into the cache if remote."""
    if is_local_uri(artifact_uri):
        return local_path_of(artifact_uri) / filename
    cached = cache_dir() / "artifacts" / run_id / filename
    if cached.exists():
        return cached
    from luigiflow import _tracking

    staging = pathlib.Path(tempfile.mkdtemp(dir=_ensure(cache_dir() / "artifacts")))
    try:
        with _tracking.translate_errors(f"downloading {filename} of run {run_id}"):
            _tracking.get_client().download_artifacts(run_id, filename, str(staging))
        cached.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / filename, cached)  # atomic: readers never see half a file
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def _ensure(path: pathlib.Path) -> pathlib.Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


class ArtifactTarget(luigi.Target):
    """A Luigi target for one artifact of the run that completes a task.

    `path` is resolved lazily, so `task.input()` downloads only what is actually read.
    """

    def __init__(self, task: Any, name: str) -> None:
        self.task = task
        self.name = name
        self.filename = task.artifacts[name]

    @property
    def path(self) -> str:
        return str(self.task.artifact_path(self.name))

    @property
    def fn(self) -> str:
        return self.path

    def exists(self) -> bool:
        run = self.task.find_run()
        return run is not None

    def open(self, mode: str = "r") -> Any:
        if "w" in mode or "a" in mode:
            raise ArtifactError(
                f"artifact {self.name!r} of {self.task!r} is read-only; "
                "write artifacts with self.save()"
            )
        return open(self.path, mode)

    def load(self) -> Any:
        return read_value(self.path, self.filename)

    def __repr__(self) -> str:
        return f"ArtifactTarget({self.task.task_id}, {self.name!r})"
