"""`--set` values written into a DVC project's params files for one build, and put back.

DVC stage commands read `params.yaml` themselves, so a build with `--set train.n_est=60`
must write the value into the user's file while it runs (as `dvc exp run --set-param`
does). Before a file is overwritten, its bytes go to a backup beside it
(`params.yaml.luigiflow-backup`, in the dvc.yaml's folder), locked by the build for as
long as it runs. The build puts the bytes back on the way out (Ctrl-C and SIGTERM
included); a build killed outright (SIGKILL, a power cut) leaves the backup unlocked, and
the next luigiflow command that reads that dvc.yaml restores the file from it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pathlib
from collections.abc import Iterator, Mapping

from luigiflow._core import platform
from luigiflow._errors import ConfigError

SUFFIX = ".luigiflow-backup"


def backup_path(root: pathlib.Path, rel: str) -> pathlib.Path:
    """Where the original of the params file `rel` (relative to `root`) is kept."""
    return root / (rel.replace("/", "__") + SUFFIX)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def overlay(root: pathlib.Path, texts: Mapping[pathlib.Path, str]) -> Iterator[list[str]]:
    """While the block runs, each params file holds its text in `texts`; afterwards its
    own bytes again. Yields the files changed, relative to `root`."""
    held: list[tuple[pathlib.Path, pathlib.Path, int, bytes]] = []
    try:
        for path, text in texts.items():
            rel = path.relative_to(root).as_posix()
            original, new = path.read_bytes(), text.encode("utf-8")
            backup = backup_path(root, rel)
            held.append((path, backup, _write_locked_backup(backup, rel, original, new), original))
            path.write_bytes(new)
        yield [rel for rel in (p.relative_to(root).as_posix() for p, *_ in held)]
    finally:
        for path, backup, fd, original in reversed(held):
            path.write_bytes(original)
            backup.unlink(missing_ok=True)
            os.close(fd)  # releases the lock


def _write_locked_backup(backup: pathlib.Path, rel: str, original: bytes, new: bytes) -> int:
    """Write the backup, locked before it appears under its name (a concurrent command
    must never take it for a dead build's); returns the descriptor holding the lock."""
    if backup.exists():
        lines = restore_leftovers(backup.parent)  # a killed build's file is put back first
        if backup.exists():
            raise ConfigError(
                "; ".join(lines)
                or f"{rel} holds the --set values of another build running in "
                f"{backup.parent} now ({backup.name} is locked by it); wait for it to end"
            )
        original = (backup.parent / rel).read_bytes()
    record = {
        "file": rel,
        "written_sha256": _digest(new),
        "original": base64.b64encode(original).decode("ascii"),
    }
    partial = backup.with_name(backup.name + ".partial")
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        platform.try_lock(fd)
        os.write(fd, json.dumps(record).encode("utf-8"))
        os.fsync(fd)
        os.replace(partial, backup)
    except BaseException:
        os.close(fd)
        partial.unlink(missing_ok=True)
        raise
    return fd


@contextlib.contextmanager
def _opened(path: pathlib.Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def restore_leftovers(root: pathlib.Path) -> list[str]:
    """Put back the params files of `root` that a killed build left holding its --set
    values; returns one line for each file restored or left alone (backups of a build
    still running are left to it)."""
    lines = []
    for backup in sorted(root.glob("*" + SUFFIX)):
        try:
            with _opened(backup) as fd:
                if not platform.try_lock(fd):
                    continue  # a live build's: it restores its own file
                lines.extend(_restore(root, backup))
        except FileNotFoundError:
            continue  # its build ended meanwhile and removed it
    return lines


def _restore(root: pathlib.Path, backup: pathlib.Path) -> list[str]:
    try:
        record = json.loads(backup.read_text(encoding="utf-8"))
        rel = str(record["file"])
        original = base64.b64decode(record["original"])
        written = str(record["written_sha256"])
    except (ValueError, KeyError, TypeError):
        return [f"{backup.name}: not a luigiflow backup of a params file; remove it"]
    path = root / rel
    current = path.read_bytes() if path.is_file() else None
    if current == original:
        backup.unlink()
        return []
    if current is not None and _digest(current) != written:
        # Edited since the killed build wrote it: the user's edit is not overwritten.
        return [
            f"{rel} changed since a build with --set was killed while it held that "
            f"build's values; its earlier content is in {backup.name}: compare, then "
            "remove the backup"
        ]
    path.write_bytes(original)
    backup.unlink()
    return [f"{rel}: restored the values it held before a build with --set was killed"]
