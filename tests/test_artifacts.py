"""Every serializer round-trips; save_fn tuples and existing paths work; corruption is caught."""

from __future__ import annotations

import json
import os
import pathlib

import luigi
import numpy as np
import pandas as pd
import pytest

import luigiflow as lf
from luigiflow._core import serializers

FRAME = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "é", 'q"uote'], "c": [0.5, 1.5, np.nan]})

VALUES = {
    "pickled": ({"nested": [1, (2, 3)], "set": {4}}, "v.pkl"),
    "joblibbed": (np.arange(6).reshape(2, 3), "v.joblib"),
    "jsoned": ({"k": [1, 2.5, None, "ü"]}, "v.json"),
    "texted": ("line one\nliné two\n", "v.txt"),
    "csved": (FRAME, "v.csv"),
    "parqueted": (FRAME, "v.parquet"),
    "npyed": (np.linspace(0, 1, 7), "v.npy"),
    # A Series comes back a Series (a model's coef_, predictions), named or not.
    "series_parqueted": (pd.Series([0.25, -1.5, 3.0], name="coef"), "v.parquet"),
    "unnamed_series_parqueted": (pd.Series([1, 2, 3], index=[10, 20, 30]), "v.parquet"),
}


def _equal(a, b) -> bool:
    if isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b)
        return True
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
        return True
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    return a == b


@pytest.mark.parametrize("name", sorted(VALUES))
def test_serializer_round_trip(store, name):
    value, filename = VALUES[name]

    class RoundTrip(lf.MlflowTask):
        artifacts = {"value": filename}
        which = luigi.Parameter()

        def run_task(self):
            self.save({"value": VALUES[self.which][0]})

    task = RoundTrip(which=name)
    lf.build([task])
    assert _equal(value, task.load_output())


def test_save_fn_tuple_and_unknown_extension_returns_path(store):
    def write_upper(obj, path):
        pathlib.Path(path).write_text(obj.upper())

    class Custom(lf.MlflowTask):
        artifacts = {"shout": "shout.weird"}

        def run_task(self):
            self.save({"shout": ("hello", write_upper)})

    lf.build([Custom()])
    path = Custom().load_output()
    assert pathlib.Path(path).read_text() == "HELLO"


def write_upper(obj, path):
    pathlib.Path(path).write_text(obj.upper())


def read_lower(path):
    return pathlib.Path(path).read_text().lower()


class Shout(lf.MlflowTask):
    artifacts = {"shout": "shout.weird"}

    def run_task(self):
        self.save({"shout": ("hello", write_upper, read_lower)})


class Hear(lf.MlflowTask):
    artifacts = {"heard": "heard.json"}

    def requires(self):
        return {"shout": Shout()}

    def run_task(self):
        self.save({"heard": self.load("shout")})


def test_a_custom_artifact_with_a_load_function_is_read_back_with_it(store):
    lf.build([Hear()])
    assert Shout().load_output() == "hello"  # read_lower, not the path
    assert Shout().output()["shout"].load() == "hello"
    assert Hear().load_output() == "hello"  # downstream self.load(...) used it too
    assert pathlib.Path(Shout().artifact_path("shout")).read_text() == "HELLO"


def test_with_a_team_key_a_custom_artifact_is_checked_before_its_load_function_reads_it(
    store, monkeypatch
):
    monkeypatch.setenv("LUIGIFLOW_SIGNING_KEY", "team-key-one-9f3a")
    lf.build([Shout()])
    assert Shout().load_output() == "hello"  # verified once in this process
    path = Shout().artifact_path("shout")
    before = path.stat()
    path.write_text("EVILO")  # same size, same mtime: only the bytes differ
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(lf.ArtifactError, match=r"'shout'.*(corrupted|changed after it was signed)"):
        Shout().load_output()  # refused: read_lower never saw the bytes


def test_a_record_naming_a_standard_library_function_as_loader_is_never_called(tmp_path):
    # A forged record naming os:system would run the artifact's path as a command.
    path = tmp_path / "shout.weird"
    path.write_text("X")
    for reference in ("os:system", "subprocess:run", "builtins:exec"):
        with pytest.raises(lf.ArtifactError, match=r"standard-library"):
            serializers.load_with(reference, str(path), "artifact 'shout' of run R")
    assert serializers.load_with(f"{__name__}:read_lower", str(path), "here") == "x"


def test_a_load_function_that_cannot_be_imported_by_name_is_refused(store):
    class Nested(lf.MlflowTask):
        artifacts = {"shout": "shout.weird"}

        def run_task(self):
            self.save({"shout": ("hi", write_upper, lambda path: path)})

    with pytest.raises(lf.BuildError) as info:
        lf.build([Nested()])
    message = str(info.value.failures[Nested()])
    assert "'shout'" in message and "top level of a module" in message


def test_unknown_extension_without_save_fn_fails_clearly(store):
    class NoSerializer(lf.MlflowTask):
        artifacts = {"blob": "blob.xyz"}

        def run_task(self):
            self.save({"blob": object()})

    with pytest.raises(lf.BuildError) as info:
        lf.build([NoSerializer()])
    message = str(info.value.failures[NoSerializer()])
    assert "'blob'" in message and ".xyz" in message and "save_fn" in message


def test_existing_file_is_copied_never_linked(store, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(1 << 20))

    class HandsOverFile(lf.MlflowTask):
        artifacts = {"blob": "blob.bin"}
        path = luigi.Parameter()

        def run_task(self):
            self.save({"blob": pathlib.Path(self.path)})

    task = HandsOverFile(path=str(source))
    lf.build([task])
    stored = task.output()["blob"].path
    assert not os.path.samefile(stored, source)  # the user's file stays theirs alone
    assert pathlib.Path(task.load_output()).read_bytes() == source.read_bytes()


def test_existing_folder_is_stored(store, tmp_path):
    folder = tmp_path / "model_dir"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("A")
    (folder / "sub" / "b.txt").write_text("B")

    class HandsOverFolder(lf.MlflowTask):
        artifacts = {"model": "model"}

        def run_task(self):
            self.save({"model": folder})

    lf.build([HandsOverFolder()])
    stored = pathlib.Path(HandsOverFolder().load_output())
    assert (stored / "sub" / "b.txt").read_text() == "B"


def test_undeclared_artifact_name_fails(store):
    class Typo(lf.MlflowTask):
        artifacts = {"model": "model.pkl"}

        def run_task(self):
            self.save({"modle": 1})

    with pytest.raises(lf.BuildError, match=r"undeclared artifact.*'modle'"):
        lf.build([Typo()])


def test_corrupted_artifact_is_detected_on_load(store):
    class Fragile(lf.MlflowTask):
        artifacts = {"data": "data.json"}

        def run_task(self):
            self.save({"data": {"value": 1}})

    lf.build([Fragile()])
    path = Fragile().output()["data"].path
    pathlib.Path(path).write_text(json.dumps({"value": 2}))  # same size, other bytes
    luigi.task_register.Register.clear_instance_cache()
    _clear_verified()
    with pytest.raises(
        lf.ArtifactError, match=r"artifact 'data' \(data.json\) of run .* corrupted"
    ):
        Fragile().load_output()
    os.unlink(path)
    luigi.task_register.Register.clear_instance_cache()
    with pytest.raises(lf.ArtifactError, match="missing"):
        Fragile().load_output()


def _clear_verified():
    from luigiflow._store import checksums

    checksums.forget()


def test_metric_must_be_number(store):
    class BadMetric(lf.MlflowTask):
        artifacts = {}

        def run_task(self):
            self.save({}, metrics={"score": "high"})

    with pytest.raises(lf.BuildError, match=r"metric 'score' must be a number"):
        lf.build([BadMetric()])


def test_save_outside_run_task_is_an_error(store):
    class Early(lf.MlflowTask):
        artifacts = {"o": "o.json"}

        def run_task(self):
            pass

    with pytest.raises(lf.LuigiflowError, match=r"save\(\) works only inside run_task"):
        Early().save({"o": 1})


def test_str_is_always_a_value_and_path_is_a_file(tmp_path):
    existing = tmp_path / "in.bin"
    existing.write_bytes(b"\x00\x01")
    dest_txt = tmp_path / "out" / "a.txt"
    serializers.write_value("a", str(existing), "a.txt", dest_txt)
    assert dest_txt.read_text() == str(existing)
    with pytest.raises(lf.ArtifactError, match=r"pathlib.Path\("):
        serializers.write_value("b", str(existing), "b.bin", tmp_path / "out" / "b.bin")
    dest_bin = tmp_path / "out" / "c.bin"
    serializers.write_value("c", existing, "c.bin", dest_bin)
    assert dest_bin.read_bytes() == b"\x00\x01"
