"""Putting a file the task made into the run, so that the stored artifact never
changes afterwards.

- A file luigiflow handed out inside the run's staging area (`artifact_path_for`) is
  already luigiflow's own: it is moved (a rename, zero copy) or is already in place.
- Any other file belongs to the user, who may rewrite it later: it is cloned
  copy-on-write where Linux and the filesystem offer it (reflink: Btrfs, XFS), else
  copied (macOS included: APFS clones are not used). It is never hard-linked: a hard
  link is the same bytes under two names, so rewriting the user's file would rewrite the
  stored artifact.
"""

from __future__ import annotations

import os
import pathlib
import shutil

from luigiflow._core import platform

IN_PLACE = "in place"  # written where it belongs: nothing to do
MOVE = "move"
REFLINK = "reflink"
COPY = "copy"


def copy_file(source: pathlib.Path, dest: pathlib.Path) -> str:
    """Clone or copy one file; returns how (`reflink` or `copy`)."""
    if platform.clone_file(source, dest):
        return REFLINK
    shutil.copyfile(source, dest)  # sendfile/copy_file_range: no pass through Python
    return COPY


def place(source: pathlib.Path, dest: pathlib.Path, owned: bool) -> str:
    """Put `source` (a file or folder) at `dest`; returns how it was placed."""
    if source.resolve() == dest.resolve():
        return IN_PLACE
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if owned:
        os.replace(source, dest)
        return MOVE
    if source.is_dir():
        how: set[str] = set()

        def one(src: str, dst: str) -> str:
            how.add(copy_file(pathlib.Path(src), pathlib.Path(dst)))
            return dst

        shutil.copytree(source, dest, copy_function=one)
        return REFLINK if how == {REFLINK} else COPY
    return copy_file(source, dest)
