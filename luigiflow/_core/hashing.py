"""Content digests and sizes of files and folders: one definition of each.

A folder's digest is the digest of its sorted (relative path, file digest) listing, so
it does not depend on file times or on the order the filesystem lists entries in.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import threading
import time
from collections.abc import Callable

from luigiflow import _settings


def file_digest(path: pathlib.Path, algorithm: str = "sha256") -> str:
    """Digest of a file's bytes, or of a folder's (relative path, file digest) listing."""
    if path.is_dir():
        return _folder_digest(path, lambda p: file_digest(p, algorithm), algorithm)
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _folder_digest(
    path: pathlib.Path, digest_of: Callable[[pathlib.Path], str], algorithm: str
) -> str:
    listing = [
        [p.relative_to(path).as_posix(), digest_of(p)]
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]
    return hashlib.new(algorithm, json.dumps(listing).encode()).hexdigest()


def tree_size(path: pathlib.Path) -> int:
    """Bytes of a file, or of every file under a folder (hard links counted once)."""
    if not path.is_dir():
        return path.stat().st_size
    seen: set[tuple[int, int]] = set()
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


# A file whose ctime is this close to now may still change within the same timestamp
# tick (2 s on FAT, 1 s on HFS+ and some NFS servers) without its stat key changing:
# its digest is computed but not cached ("racily clean", as git calls it).
RACY_WINDOW_NS = 2_000_000_000
_hash_lock = threading.Lock()
_memory_hashes: dict[str, str] = {}


def _stat_key(path: pathlib.Path, st: os.stat_result) -> str:
    # ctime too: `cp -p` or `touch -r` onto the same inode keeps size and mtime, but
    # every write or metadata change moves ctime, and no user call can set it back.
    return f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_dev}"


def content_hash(value: str | os.PathLike[str]) -> str:
    """sha256 content digest of a file or folder, cached by path, size, mtime, ctime and
    inode.

    The cache lives in memory and on disk, so an unchanged large data file is read
    once, not on every build. A file changed within `RACY_WINDOW_NS` is hashed each time.
    """
    path = pathlib.Path(os.fspath(value)).resolve()
    if path.is_dir():
        return _folder_digest(path, content_hash, "sha256")
    st = path.stat()  # FileNotFoundError is reported by the caller with the parameter name
    key = _stat_key(path, st)
    with _hash_lock:
        if key in _memory_hashes:
            return _memory_hashes[key]
        disk = _load_disk_cache()
        if key in disk:
            _memory_hashes[key] = disk[key]
            return disk[key]
    digest = file_digest(path)
    if time.time_ns() - max(st.st_ctime_ns, st.st_mtime_ns) <= RACY_WINDOW_NS:
        return digest
    with _hash_lock:
        _memory_hashes[key] = digest
        _store_disk_cache(key, digest)
    return digest


def _disk_cache_path() -> pathlib.Path:
    return _settings.cache_dir() / "file-hashes.json"


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
