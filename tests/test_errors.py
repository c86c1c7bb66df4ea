"""Bad input gives a LuigiflowError subclass naming what is wrong, before any run exists."""

from __future__ import annotations

import luigi
import pytest

import luigiflow as lf
from tests.conftest import runs_of
from tests.dags import Leaf, Middle


def test_artifacts_not_a_dict():
    with pytest.raises(lf.TaskDefinitionError, match=r"BadArtifacts\.artifacts must be a dict"):

        class BadArtifacts(lf.MlflowTask):
            artifacts = ["model.pkl"]


def test_artifact_file_names_checked_all_at_once():
    with pytest.raises(lf.TaskDefinitionError) as info:

        class BadNames(lf.MlflowTask):
            artifacts = {"a": "", "b": "../escape.pkl", "c": 3}

    message = str(info.value)
    assert "BadNames" in message
    assert "'a'" in message and "'b'" in message and "'c'" in message


def test_requires_returning_a_list_is_rejected_before_any_run(client):
    class ListRequires(lf.MlflowTask):
        artifacts = {"o": "o.json"}

        def requires(self):
            return [Middle()]

        def run_task(self):
            self.save({"o": 1})

    with pytest.raises(lf.TaskDefinitionError, match=r"ListRequires\.requires\(\) returned list"):
        lf.build([ListRequires()])
    assert runs_of(client, "Middle") == []


def test_unknown_parameter_names_task():
    with pytest.raises(lf.ParameterError, match=r"Leaf.*unknown"):
        Leaf(sise=3)


def test_wrong_parameter_types_reported_together():
    with pytest.raises(lf.ParameterError) as info:
        Leaf(size="three", factor=2.5)
    message = str(info.value)
    assert "Leaf" in message and "'size'" in message and "'factor'" in message


def test_bad_choice_is_a_parameter_error():
    class Choosy(lf.MlflowTask):
        artifacts = {"o": "o.json"}
        kind = luigi.ChoiceParameter(choices=["a", "b"])

        def run_task(self):
            pass

    with pytest.raises(lf.ParameterError, match="Choosy"):
        Choosy(kind="c")


def test_missing_required_parameter():
    class NeedsIt(lf.MlflowTask):
        artifacts = {"o": "o.json"}
        needed = luigi.IntParameter()

        def run_task(self):
            pass

    with pytest.raises(lf.ParameterError, match=r"NeedsIt.*needed"):
        NeedsIt()


def test_missing_file_parameter(tmp_path):
    class ReadsFile(lf.MlflowTask):
        artifacts = {"o": "o.json"}
        data = lf.FileParameter()

        def run_task(self):
            pass

    with pytest.raises(lf.ParameterError, match=r"ReadsFile.*'data'.*does not exist"):
        ReadsFile(data=str(tmp_path / "nope.csv"))


def test_every_error_derives_from_root():
    for cls in (
        lf.TaskDefinitionError,
        lf.ParameterError,
        lf.ArtifactError,
        lf.BuildError,
        lf.RunNotFoundError,
        lf.TrackingError,
    ):
        assert issubclass(cls, lf.LuigiflowError)
