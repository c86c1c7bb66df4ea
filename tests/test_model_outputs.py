"""A task declares an MLflow model as an output; downstream tasks load it by name."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest

import luigiflow as lf
from luigiflow import _settings
from luigiflow._store.artifacts import local_path_of

sklearn = pytest.importorskip("sklearn")


class Fit(lf.MlflowTask):
    models = {"model": "sklearn"}

    def run_task(self):
        from sklearn.linear_model import LinearRegression

        model = LinearRegression().fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0])
        self.save({"model": model})


class Predict(lf.MlflowTask):
    artifacts = {"y": "y.json"}

    def requires(self):
        return {"fit": Fit()}

    def run_task(self):
        model = self.load("fit", "model")
        self.save({"y": [float(v) for v in model.predict([[3.0]])]})


@pytest.mark.slow  # log_model starts MLflow's requirement inference in a Python process
def test_downstream_task_loads_an_upstream_mlflow_model_by_name(client):
    lf.build([Predict()])
    assert Predict().load_output() == pytest.approx([7.0])
    run = Fit().find_run()
    record = json.loads(run.data.tags["luigiflow.model.model"])
    assert record["flavour"] == "sklearn" and record["uri"] and len(record["sha256"]) == 64
    assert type(Fit().load_output("model")).__name__ == "LinearRegression"
    pyfunc = Fit().load_output("model", flavour="pyfunc")
    assert pyfunc.predict([[4.0]])[0] == pytest.approx(9.0)


class Forgets(lf.MlflowTask):
    models = {"model": "sklearn"}

    def run_task(self):
        pass


def test_a_declared_model_must_be_saved(client):
    result = lf.build([Forgets()], raise_on_failure=False)
    [exc] = result.failed.values()
    assert "'model'" in str(exc) and "Forgets" in str(exc)


def test_unknown_flavour_is_a_definition_error():
    with pytest.raises(lf.TaskDefinitionError, match=r"Odd.*flavour.*nosuchflavour"):

        class Odd(lf.MlflowTask):
            models = {"model": "nosuchflavour"}

            def run_task(self):
                pass


def _stored_model_folder(client, uri: str) -> pathlib.Path:
    """Where the tracking store keeps a logged model's files (a local store here)."""
    model_id = uri.removeprefix("models:/")
    return pathlib.Path(local_path_of(client.get_logged_model(model_id).artifact_location))


@pytest.mark.slow  # log_model starts MLflow's requirement inference in a Python process
def test_a_model_is_verified_against_its_record_when_loaded(client):
    lf.build([Fit()])
    run = Fit().find_run()
    record = json.loads(run.data.tags["luigiflow.model.model"])
    assert Fit().load_output("model") is not None  # now in the download cache

    cached = _settings.cache_dir() / "models" / run.info.run_id / "model"
    (cached / "MLmodel").write_text("edited in the cache\n")
    # a cached copy that no longer matches is fetched again, not called corrupted
    assert type(Fit().load_output("model")).__name__ == "LinearRegression"

    stored = _stored_model_folder(client, record["uri"])
    (stored / "MLmodel").write_text("edited in the store\n")
    assert Fit().load_output("model") is not None  # the verified cached copy still serves
    shutil.rmtree(cached)  # another machine, or a cleared cache: only the store's copy
    with pytest.raises(lf.ArtifactError, match=r"'model' of Fit run .*modified.*--rerun Fit"):
        Fit().load_output("model")


@pytest.mark.slow  # log_model starts MLflow's requirement inference in a Python process
def test_with_a_team_key_a_repointed_model_record_is_not_trusted(client, monkeypatch):
    monkeypatch.setenv("LUIGIFLOW_SIGNING_KEY", "TeamKey9931ppQrs8844")
    lf.build([Predict()])
    run = Fit().find_run()
    record = json.loads(run.data.tags["luigiflow.model.model"])
    client.set_tag(
        run.info.run_id, "luigiflow.model.model", json.dumps({**record, "uri": "models:/m-other"})
    )
    # the signature covers model records: the edited run is not reused, Fit runs again
    result = lf.build([Fit()])
    assert Fit() in result.executed
