"""Artifact checksum records: the one place that writes and checks them.

Every artifact a run saves gets one small JSON record, stored as the tag
`luigiflow.artifact.<name>`::

    {"file": "model.pkl", "bytes": 1048576, "blake3": "<64 hex digits>"}

The digest's key names its algorithm, so a reader knows how to check it and a
signature over the record (docs/team.md) covers the algorithm too. BLAKE3 is
cryptographic and about three times faster than SHA-256 here, so every artifact is
checksummed whatever its size. Records written by earlier releases carry `sha256`
(artifacts up to 64 MiB) or only `bytes` (larger ones); they are still checked that way.

A verdict is cached per file by device, inode, size, mtime and ctime: an unchanged
file is hashed once per process, and any write to it (ctime cannot be set back by a
user) makes the next read hash it again.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import threading
from typing import Any

ALGORITHM = "blake3"
# Algorithms a record may name, newest first: `sha256` is what releases before the
# store format 2 wrote.
KNOWN_ALGORITHMS = ("blake3", "sha256")

_lock = threading.Lock()
_digests: dict[tuple[Any, ...], str] = {}


def _file_digest(path: pathlib.Path, algorithm: str) -> str:
    st = path.stat()
    key = (algorithm, str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _lock:
        cached = _digests.get(key)
    if cached is not None:
        return cached
    if algorithm == "blake3":
        import blake3

        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        # mmap hashing skips a copy through Python buffers; empty files cannot be mapped.
        digest = (hasher.update_mmap(path) if st.st_size else hasher).hexdigest()
    else:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, algorithm).hexdigest()
    with _lock:
        _digests[key] = digest
    return digest


def _new(algorithm: str, data: bytes) -> str:
    if algorithm == "blake3":
        import blake3

        return str(blake3.blake3(data).hexdigest())
    return hashlib.new(algorithm, data).hexdigest()


def bytes_digest(algorithm: str, data: bytes) -> str:
    """Digest of bytes already in memory (a verified load hashes what it deserializes)."""
    return _new(algorithm, data)


def digest(path: pathlib.Path, algorithm: str = ALGORITHM) -> str:
    """Digest of a file, or of a folder's sorted `relative/path:file digest` lines."""
    if path.is_dir():
        lines = [
            f"{p.relative_to(path).as_posix()}:{_file_digest(p, algorithm)}"
            for p in sorted(path.rglob("*"))
            if p.is_file()
        ]
        return _new(algorithm, "\n".join(lines).encode())
    return _file_digest(path, algorithm)


def size(path: pathlib.Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def make_record(filename: str, path: pathlib.Path) -> dict[str, Any]:
    """The record of an artifact just written at `path`."""
    return {"file": filename, "bytes": size(path), ALGORITHM: digest(path)}


def record_text(record: dict[str, Any]) -> str:
    """The tag value of a record (compact, keys in a fixed order)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def parse_record(text: str) -> dict[str, Any] | None:
    """A record read back from its tag; None when it is not one."""
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def problem(record: dict[str, Any], path: pathlib.Path) -> str | None:
    """What is wrong with the file at `path` against its record, or None when it matches."""
    if not path.exists():
        return "missing"
    on_disk = size(path)
    if on_disk != record.get("bytes"):
        return f"{on_disk} bytes on disk, {record.get('bytes')} recorded"
    for algorithm in KNOWN_ALGORITHMS:
        expected = record.get(algorithm)
        if expected:
            if digest(path, algorithm) != expected:
                return f"its {algorithm} checksum differs from the one recorded"
            return None
    return None  # a record of an earlier release with no checksum (over 64 MiB): size only


def forget() -> None:
    """Drop cached digests (tests that rewrite a file within one mtime tick)."""
    with _lock:
        _digests.clear()


__all__ = [
    "ALGORITHM",
    "KNOWN_ALGORITHMS",
    "digest",
    "forget",
    "make_record",
    "parse_record",
    "problem",
    "record_text",
    "size",
]
