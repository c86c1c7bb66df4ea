"""`--set` values in a DVC project's params files: a backup beside the file, locked by
the build, puts the file back after the build, after a kill, and never over an edit."""

from __future__ import annotations

import os

import pytest

from luigiflow._errors import ConfigError
from luigiflow._ops.stages import dvc_params

ORIGINAL = b"# mine\ntrain:\n  n_est: 20\n"
SET = "train:\n  n_est: 60\n"


def test_the_file_holds_the_values_during_the_block_and_its_own_bytes_after(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_bytes(ORIGINAL)
    with dvc_params.overlay(tmp_path, {params: SET}) as changed:
        assert changed == ["params.yaml"]
        assert params.read_text() == SET
        assert dvc_params.restore_leftovers(tmp_path) == []  # a live build's: left to it
        assert params.read_text() == SET
        second = dvc_params.overlay(tmp_path, {params: "train:\n  n_est: 7\n"})
        with pytest.raises(ConfigError, match="another build running"):
            second.__enter__()
    assert params.read_bytes() == ORIGINAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def _killed_build(tmp_path, params):
    """What a SIGKILLed build leaves: the file with its values, the backup unlocked."""
    block = dvc_params.overlay(tmp_path, {params: SET})
    block.__enter__()
    backup = dvc_params.backup_path(tmp_path, "params.yaml")
    saved = backup.read_bytes()
    block.__exit__(None, None, None)
    backup.write_bytes(saved)
    params.write_text(SET)
    return backup


def test_a_killed_builds_values_are_restored_by_the_next_command(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_bytes(ORIGINAL)
    backup = _killed_build(tmp_path, params)
    [line] = dvc_params.restore_leftovers(tmp_path)
    assert line.startswith("params.yaml: restored the values it held before a build")
    assert params.read_bytes() == ORIGINAL and not backup.exists()


def test_a_file_edited_after_the_kill_is_left_as_the_user_made_it(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_bytes(ORIGINAL)
    backup = _killed_build(tmp_path, params)
    params.write_text("train:\n  n_est: 99\n")
    [line] = dvc_params.restore_leftovers(tmp_path)
    assert "changed since a build with --set was killed" in line and backup.name in line
    assert params.read_text() == "train:\n  n_est: 99\n" and backup.exists()
    # A new --set build would overwrite the only copy of the earlier content: refused.
    with pytest.raises(ConfigError, match="changed since"):
        dvc_params.overlay(tmp_path, {params: SET}).__enter__()
    assert params.read_text() == "train:\n  n_est: 99\n"
    os.remove(backup)
