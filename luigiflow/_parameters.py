"""Parameter checks and encodings: type validation, FileParameter and its content hash."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pathlib
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

import luigi

from luigiflow._identity import UnencodableValueError, encode_value


def cache_dir() -> pathlib.Path:
    """Where luigiflow keeps local caches (downloaded artifacts, file hashes)."""
    root = os.environ.get("LUIGIFLOW_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "luigiflow"
    )
    return pathlib.Path(root)


class FileParameter(luigi.Parameter):
    """A path whose file (or folder) *content* hash enters the task identity.

    Renaming or touching the file changes nothing; editing its bytes re-runs the task
    and everything downstream; restoring the old bytes reuses the old runs.
    """

    def encode_for_identity(self, value: Any) -> Any:
        return ["file-sha256", file_content_hash(value)]


_hash_lock = threading.Lock()
_memory_hashes: dict[str, str] = {}


def _stat_key(path: pathlib.Path, st: os.stat_result) -> str:
    return f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_dev}"


def _hash_file(path: pathlib.Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_content_hash(value: Any) -> str:
    """sha256 of a file's bytes, or of a folder's (relative path, file hash) listing.

    Results are cached by path, size, mtime, inode and device, in memory and on disk,
    so an unchanged large file is read once, not on every build.
    """
    path = pathlib.Path(os.fspath(value)).resolve()
    if path.is_dir():
        listing = [
            [p.relative_to(path).as_posix(), file_content_hash(p)]
            for p in sorted(path.rglob("*"))
            if p.is_file()
        ]
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    st = path.stat()  # FileNotFoundError is reported by the caller with the parameter name
    key = _stat_key(path, st)
    with _hash_lock:
        if key in _memory_hashes:
            return _memory_hashes[key]
        disk = _load_disk_cache()
        if key in disk:
            _memory_hashes[key] = disk[key]
            return disk[key]
    digest = _hash_file(path)
    with _hash_lock:
        _memory_hashes[key] = digest
        _store_disk_cache(key, digest)
    return digest


def _disk_cache_path() -> pathlib.Path:
    return cache_dir() / "file-hashes.json"


def _load_disk_cache() -> dict[str, str]:
    try:
        with open(_disk_cache_path(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store_disk_cache(key: str, digest: str) -> None:
    # Best effort: a cache we cannot write only costs a re-hash next time.
    try:
        target = _disk_cache_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        data = _load_disk_cache()
        data[key] = digest
        if len(data) > 10_000:  # keep the file small; old entries are cheap to recompute
            data = dict(list(data.items())[-5_000:])
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, target)
    except OSError:
        pass


# Expected Python types per Luigi parameter class, checked most-specific first.
_EXPECTED_TYPES: list[tuple[type, tuple[type, ...], str]] = [
    (luigi.BoolParameter, (bool,), "a bool"),
    (luigi.IntParameter, (int,), "an int"),
    (luigi.FloatParameter, (int, float), "a float"),
    (luigi.DateSecondParameter, (dt.datetime,), "a datetime"),
    (luigi.DateMinuteParameter, (dt.datetime,), "a datetime"),
    (luigi.DateHourParameter, (dt.datetime,), "a datetime"),
    (luigi.DateParameter, (dt.date,), "a date"),
    (luigi.TimeDeltaParameter, (dt.timedelta,), "a timedelta"),
    (luigi.ListParameter, (list, tuple), "a list"),
    (luigi.TupleParameter, (list, tuple), "a tuple"),
    (luigi.DictParameter, (Mapping,), "a dict"),
]


def check_value(param: luigi.Parameter, value: Any) -> str | None:
    """Return a description of what is wrong with `value` for `param`, or None."""
    if value is None and getattr(param, "_is_optional", False):
        return None
    if isinstance(param, luigi.OptionalParameter) and value is None:
        return None
    for cls, types, wanted in _EXPECTED_TYPES:
        if isinstance(param, cls):
            wrong_bool = isinstance(value, bool) and bool not in types
            if wrong_bool or not isinstance(value, types):
                return f"expected {wanted}, got {type(value).__name__} {value!r}"
            return None
    if isinstance(param, FileParameter):
        if not isinstance(value, str | os.PathLike):
            return f"expected a file path, got {type(value).__name__} {value!r}"
        if not os.path.exists(value):
            return f"file {os.fspath(value)!r} does not exist"
        return None
    try:
        encode_value(value)
    except UnencodableValueError as exc:
        return str(exc)
    return None


def encode_param(param: luigi.Parameter, value: Any) -> Any:
    """Encode one parameter value for the identity."""
    if isinstance(param, FileParameter):
        return param.encode_for_identity(value)
    if isinstance(param, luigi.FloatParameter) and isinstance(value, int):
        value = float(value)  # a float parameter given 1 means 1.0: same task
    return encode_value(value)
