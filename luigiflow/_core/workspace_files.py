"""Putting files where a script expects them, never as aliases of files someone else owns.

A script may write into its inputs or overwrite its outputs in place on its next run;
a hard link or symlink would carry that change into a stored artifact. So files are
reflinked on Linux (copy-on-write clones, free on Btrfs/XFS) or, where the system or
filesystem cannot (macOS's APFS included), copied.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil

from luigiflow._core import platform


def _clone_or_copy(src: str, dst: str) -> str:
    try:
        if platform.clone_file(pathlib.Path(src), pathlib.Path(dst)):
            shutil.copystat(src, dst)
            return dst
    except OSError:
        pass
    shutil.copy2(src, dst)
    return dst


def remove(path: pathlib.Path) -> None:
    """Remove a file, link or folder if it is there."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def copy_into(source: pathlib.Path, dest: pathlib.Path) -> None:
    """Make `dest` an independent copy of the file or folder `source` (replacing it)."""
    remove(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, copy_function=_clone_or_copy, symlinks=False)
    else:
        _clone_or_copy(str(source), str(dest))


def copy_saver(source: pathlib.Path) -> tuple[pathlib.Path, object]:
    """An artifact value `(path, save_fn)` that stores a copy, not a link, of `source`."""

    def save(value: pathlib.Path, dest: str) -> None:
        copy_into(value, pathlib.Path(dest))

    return source, save


def inside(path: pathlib.Path, folder: pathlib.Path) -> bool:
    """Whether `path` is `folder` or lies under it (both resolved)."""
    with contextlib.suppress(ValueError):
        path.resolve().relative_to(folder.resolve())
        return True
    return False


def same_file_content(a: pathlib.Path, b: pathlib.Path) -> bool:
    """Whether two files or folders hold the same bytes (cheap checks first)."""
    from luigiflow._core.hashing import file_digest

    if not a.exists() or not b.exists() or a.is_dir() != b.is_dir():
        return False
    if a.is_file() and os.path.getsize(a) != os.path.getsize(b):
        return False
    return file_digest(a) == file_digest(b)
