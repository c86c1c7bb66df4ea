"""Placing a user's file into a run: a clone where the filesystem offers reflink, a copy
otherwise (ext4 and tmpfs have no reflink), a move only for luigiflow's own staging
files, and never a hard link."""

from __future__ import annotations

import os
import pathlib

from luigiflow._core import artifact_files


def _filesystem(path: pathlib.Path) -> str:
    """The type of the filesystem holding `path`, from /proc/mounts (longest mount point)."""
    best, kind = "", ""
    with open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            _dev, mount, fstype, *_ = line.split()
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    return kind


def test_copy_fallback_where_there_is_no_reflink(tmp_path):
    source = tmp_path / "user.bin"
    source.write_bytes(os.urandom(1 << 20))
    dest = tmp_path / "run" / "artifact.bin"
    how = artifact_files.place(source, dest, owned=False)
    assert how in (artifact_files.REFLINK, artifact_files.COPY)
    if _filesystem(tmp_path) in ("ext4", "ext3", "ext2", "tmpfs"):
        assert how == artifact_files.COPY  # FICLONE refused: the plain copy took over
    assert dest.read_bytes() == source.read_bytes()
    assert not os.path.samefile(source, dest) and source.stat().st_nlink == 1
    source.write_bytes(b"edited")
    assert dest.stat().st_size == 1 << 20


def test_copy_on_tmpfs_which_never_reflinks(tmp_path):
    folder = pathlib.Path("/dev/shm") / f"luigiflow-test-{os.getpid()}"
    folder.mkdir()
    try:
        source = folder / "user.bin"
        source.write_bytes(b"abc")
        assert artifact_files.place(source, folder / "out.bin", owned=False) == artifact_files.COPY
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def test_folders_are_copied_file_by_file(tmp_path):
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "w.bin").write_bytes(b"w")
    dest = tmp_path / "run" / "model"
    how = artifact_files.place(source, dest, owned=False)
    assert how in (artifact_files.REFLINK, artifact_files.COPY)
    assert (dest / "sub" / "w.bin").read_bytes() == b"w"
    assert not os.path.samefile(source / "sub" / "w.bin", dest / "sub" / "w.bin")


def test_owned_staging_file_is_moved_and_in_place_is_left(tmp_path):
    staged = tmp_path / "staging.bin"
    staged.write_bytes(b"x" * 100)
    inode = staged.stat().st_ino
    dest = tmp_path / "run" / "a.bin"
    assert artifact_files.place(staged, dest, owned=True) == artifact_files.MOVE
    assert dest.stat().st_ino == inode and not staged.exists()
    assert artifact_files.place(dest, dest, owned=True) == artifact_files.IN_PLACE
    assert dest.read_bytes() == b"x" * 100
