"""A trained model and its fitted processor travel together as one MLflow model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest

import luigiflow as lf
from tests.conftest import runs_of
from tests.servers import luigiflow_serve

pytestmark = [pytest.mark.xdist_group("example"), pytest.mark.slow]


@pytest.fixture
def packaged(client):
    from examples.tabular import TARGET, Package, Process, Split, Train

    task = Package(logic="standardized", algorithm="logreg", register_as="tabular-model")
    lf.build([task])
    raw = Split().load_output("test").drop(columns=[TARGET])
    processor = Process(logic="standardized").load_output("processor")
    model = Train(logic="standardized", algorithm="logreg").load_output("model")
    expected = model.predict(processor.transform(raw))
    return task, raw, expected


def test_bundle_predicts_like_processor_then_model(packaged, client, tmp_path):
    task, raw, expected = packaged
    run = task.find_run()
    uri = run.data.tags["luigiflow.model_uri"]
    loaded = mlflow.pyfunc.load_model(uri)
    assert np.array_equal(loaded.predict(raw), expected)
    assert [c.name for c in loaded.metadata.get_input_schema().inputs] == list(raw.columns)
    # lineage from the model to the runs it was built from
    model_info = mlflow.models.get_model_info(uri)
    upstream = json.loads(model_info.tags["luigiflow.upstream"]) if model_info.tags else None
    tags = run.data.tags
    assert upstream == {k: tags[f"luigiflow.upstream.{k}"] for k in ("model", "features", "split")}
    with open(mlflow.pyfunc.get_model_dependencies(uri)) as f:
        requirements = f.read()
    assert "scikit-learn==" in requirements and "mlflow==" in requirements
    # registered model round-trip
    registered = mlflow.pyfunc.load_model("models:/tabular-model/1")
    assert np.array_equal(registered.predict(raw), expected)


def test_bundle_loads_in_a_fresh_process_without_the_pipeline(packaged, client, tmp_path):
    task, raw, expected = packaged
    uri = task.find_run().data.tags["luigiflow.model_uri"]
    raw.to_parquet(tmp_path / "raw.parquet")
    code = (
        "import sys, json, mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model({uri!r})\n"
        f"p = m.predict(pd.read_parquet({str(tmp_path / 'raw.parquet')!r}))\n"
        "print(json.dumps([int(x) for x in p]))\n"
        "print('examples' in sys.modules, 'luigiflow' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    predictions, modules = out.stdout.strip().splitlines()[-2:]
    assert json.loads(predictions) == [int(x) for x in expected]
    assert modules == "False False"


def _post(port, body: bytes):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_served_bundle_answers_and_rejects_bad_payloads(packaged, client, tmp_path):
    task, raw, expected = packaged
    with luigiflow_serve(task.find_run().info.run_id, tmp_path) as port:
        rows = raw.head(20)
        split = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        status, body = _post(port, json.dumps(split).encode())
        assert status == 200 and body["predictions"] == [int(x) for x in expected[:20]]
        records = {"dataframe_records": json.loads(rows.to_json(orient="records"))}
        status, body = _post(port, json.dumps(records).encode())
        assert status == 200 and body["predictions"] == [int(x) for x in expected[:20]]

        missing = rows.drop(columns=["mean_radius"])
        status, body = _post(
            port,
            json.dumps(
                {"dataframe_split": json.loads(missing.to_json(orient="split", index=False))}
            ).encode(),
        )
        assert status == 400 and "mean_radius" in body["message"]
        extra = rows.assign(favourite_colour="red")
        status, body = _post(
            port,
            json.dumps(
                {"dataframe_split": json.loads(extra.to_json(orient="split", index=False))}
            ).encode(),
        )
        assert status == 400 and "favourite_colour" in body["message"]
        wrong = rows.assign(mean_texture="rough")
        status, body = _post(
            port,
            json.dumps(
                {"dataframe_split": json.loads(wrong.to_json(orient="split", index=False))}
            ).encode(),
        )
        assert status == 400 and "mean_texture" in body["message"]
        assert "Traceback" not in json.dumps(body)
        status, body = _post(port, b"")
        assert status == 400 and "empty" in body["message"]


def test_serving_a_run_without_model_is_one_line(client, tmp_path):
    from tests.dags import Source

    lf.build([Source()])
    run_id = runs_of(client, "Source")[0].info.run_id
    out = subprocess.run(
        [sys.executable, "-m", "luigiflow.cli", "serve", run_id],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"ArtifactError: run {run_id} has no luigiflow model bundle")
