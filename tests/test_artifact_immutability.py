"""A saved artifact never changes afterwards: user files are copied (never linked), every
artifact of any size carries a BLAKE3 checksum, a task can write a large artifact
straight into place, only pathlib.Path means "this file", and artifact declarations that
collide are rejected when the class is defined."""

from __future__ import annotations

import json
import os
import pathlib
import warnings

import luigi
import pytest

import luigiflow as lf
from luigiflow._errors import StrArtifactWarning

ARTIFACT_TAG = "luigiflow.artifact."


def _record(task: lf.MlflowTask, name: str) -> dict:
    return json.loads(task.find_run().data.tags[ARTIFACT_TAG + name])


class HandsOverFile(lf.MlflowTask):
    artifacts = {"blob": "blob.bin"}
    path = luigi.Parameter()

    def run_task(self):
        self.save({"blob": pathlib.Path(self.path)})


def _fresh(task: lf.MlflowTask) -> lf.MlflowTask:
    """The same task as a new instance, as a later process would see it."""
    luigi.task_register.Register.clear_instance_cache()
    return type(task)(**task.param_kwargs)


def test_editing_the_saved_user_file_does_not_change_the_artifact(store, tmp_path):
    source = tmp_path / "user.bin"
    original = os.urandom(1 << 20)
    source.write_bytes(original)
    task = HandsOverFile(path=str(source))
    lf.build([task])
    stored = pathlib.Path(task.output()["blob"].path)
    assert not os.path.samefile(stored, source)  # never aliased to the user's file
    with open(source, "r+b") as f:  # the user rewrites their file in place, same size
        f.write(b"\xff" * 4096)
    assert stored.read_bytes() == original
    assert pathlib.Path(_fresh(task).load_output()).read_bytes() == original


def test_same_size_rewrite_of_a_large_artifact_is_caught(store, tmp_path):
    source = tmp_path / "large.bin"
    source.write_bytes(b"\0" * (65 * 2**20))  # above the old 64 MiB size-only limit
    task = HandsOverFile(path=str(source))
    lf.build([task])
    stored = pathlib.Path(task.output()["blob"].path)
    with open(stored, "r+b") as f:
        f.seek(2**20)
        f.write(b"\x01")
    with pytest.raises(lf.ArtifactError, match=r"artifact 'blob' \(blob.bin\) of run .*corrupted"):
        _fresh(task).load_output()


def test_every_artifact_records_its_blake3_checksum(store, tmp_path):
    import blake3

    source = tmp_path / "any.bin"
    source.write_bytes(os.urandom(3 * 2**20))
    task = HandsOverFile(path=str(source))
    lf.build([task])
    record = _record(task, "blob")
    assert record == {
        "file": "blob.bin",
        "bytes": 3 * 2**20,
        "blake3": blake3.blake3(source.read_bytes()).hexdigest(),
    }


written: dict[str, tuple[int, int]] = {}


class WritesInPlace(lf.MlflowTask):
    """Writes a large artifact straight into the path luigiflow hands out."""

    artifacts = {"big": "big.bin", "small": "small.json"}

    def run_task(self):
        path = self.artifact_path_for("big")
        with open(path, "wb") as f:
            f.write(b"\x07" * (4 * 2**20))
        st = os.stat(path)
        written["big"] = (st.st_dev, st.st_ino)
        self.save({"big": path, "small": {"n": 1}})


def test_artifact_written_in_place_is_stored_without_a_copy(store):
    task = WritesInPlace()
    lf.build([task])
    stored = os.stat(task.output()["big"].path)
    assert (stored.st_dev, stored.st_ino) == written["big"]  # the very file: zero copy
    assert _record(task, "big")["bytes"] == 4 * 2**20
    assert pathlib.Path(_fresh(task).load_output("big")).read_bytes() == b"\x07" * (4 * 2**20)


def test_path_handed_out_is_only_for_declared_artifacts(store):
    class AsksWrongName(lf.MlflowTask):
        artifacts = {"big": "big.bin"}

        def run_task(self):
            self.artifact_path_for("bigg")

    with pytest.raises(lf.BuildError, match=r"declares no artifact 'bigg'"):
        lf.build([AsksWrongName()])


# ----- only pathlib.Path means "this file" -------------------------------------------


class SavesAString(lf.MlflowTask):
    artifacts = {"name": "name.pkl"}
    text = luigi.Parameter()

    def run_task(self):
        self.save({"name": self.text})


@pytest.mark.parametrize("text", ["data", "."])
def test_a_str_naming_an_existing_path_is_a_value(store, tmp_path, text):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "inside.txt").write_text("not an artifact")
    task = SavesAString(text=text)
    lf.build([task])
    assert _fresh(task).load_output() == text
    stored = pathlib.Path(task.output()["name"].path)
    assert stored.is_file()  # a pickled str, not a linked folder (mlruns included)


class SavesAModelPath(lf.MlflowTask):
    artifacts = {"model": "model.pkl"}
    where = luigi.Parameter()

    def run_task(self):
        self.save({"model": self.where})  # 0.1.0 stored the file; now the text, warned


class LoadsTheModel(lf.MlflowTask):
    artifacts = {"seen": "seen.pkl"}
    where = luigi.Parameter()

    def requires(self):
        return {"up": SavesAModelPath(where=self.where)}

    def run_task(self):
        self.save({"seen": self.load("up", "model")})


@pytest.mark.parametrize("where", ["out/model.pkl", "existing"])
def test_a_str_that_looks_like_a_file_is_saved_as_text_with_a_warning(store, tmp_path, where):
    if where == "existing":
        (tmp_path / "existing").write_bytes(b"weights")  # names a file, no extension
    with pytest.warns(StrArtifactWarning) as caught:
        lf.build([LoadsTheModel(where=where)])
    # The downstream saves the loaded text again, and is warned too.
    [warning, _downstream] = [w for w in caught if issubclass(w.category, StrArtifactWarning)]
    text = str(warning.message)
    assert "\n" not in text
    assert f"SavesAModelPath: artifact 'model' is the str {where!r}" in text
    assert f"pathlib.Path({where!r})" in text
    assert warning.filename == __file__  # points at the user's save() call
    assert _fresh(LoadsTheModel(where=where)).load_output() == where


@pytest.mark.parametrize("text", ["hello world", "v1.2", "a plain label"])
def test_a_str_value_that_names_no_file_saves_without_warning(store, text):
    with warnings.catch_warnings():
        warnings.simplefilter("error", StrArtifactWarning)
        lf.build([SavesAString(text=text)])
    assert _fresh(SavesAString(text=text)).load_output() == text


# ----- declarations that collide ------------------------------------------------------


@pytest.mark.parametrize(
    "artifacts",
    [
        {"here": "."},
        {"here": "./"},
        {"prov": "luigiflow/params.json"},
        {"prov": "luigiflow"},
        {"folder": "dir", "inner": "dir/x.txt"},
        {"inner": "a/b/c.txt", "folder": "a/b"},
    ],
)
def test_colliding_artifact_declarations_are_rejected(artifacts):
    with pytest.raises(lf.TaskDefinitionError) as info:
        type("Collides2", (lf.MlflowTask,), {"artifacts": artifacts})
    assert "Collides2" in str(info.value)
    for filename in artifacts.values():
        assert repr(filename) in str(info.value)


def test_changed_artifacts_without_a_version_bump_say_so(store):
    class Changing(lf.MlflowTask):
        artifacts = {"a": "a.json"}

        def run_task(self):
            self.save({"a": 1})

    lf.build([Changing()])
    luigi.task_register.Register.clear_instance_cache()

    class Changing(lf.MlflowTask):
        artifacts = {"a": "a.json", "b": "b.json"}

        def run_task(self):
            self.save({"a": 1, "b": 2})

    with pytest.raises(lf.ArtifactError) as info:
        Changing().load_output("b")
    message = str(info.value)
    assert "declared artifacts changed since this run; bump `version`" in message
    assert "Changing" in message
