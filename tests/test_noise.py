"""Only helpful output: commands that work as printed, no false messages."""

from __future__ import annotations

import os

import pytest

from tests.conftest import luigiflow_cli as cli
from tests.servers import free_port

pytestmark = pytest.mark.slow  # starts servers or subprocesses (see scripts/test --fast)


def test_ui_with_a_server_uri_where_nothing_answers(store, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    out = cli("ui", cwd=tmp_path, check=False, env=dict(os.environ, MLFLOW_TRACKING_URI=uri))
    assert out.returncode == 1
    assert "already a server" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("TrackingError:")
    assert uri in lines[0] and "MLFLOW_TRACKING_URI" in lines[0]


QUIET_TASKS = """
import luigiflow as lf


class Fit(lf.MlflowTask):
    models = {"model": "sklearn"}

    def run_task(self):
        from sklearn.linear_model import LinearRegression

        self.save({"model": LinearRegression().fit([[0.0], [1.0]], [1.0, 3.0])})


class Predict(lf.MlflowTask):
    artifacts = {"y": "y.json"}

    def requires(self):
        return {"fit": Fit()}

    def run_task(self):
        self.save({"y": [float(v) for v in self.load("fit", "model").predict([[3.0]])]})
"""


def test_a_new_store_and_model_downloads_print_no_mlflow_lines(tmp_path):
    """A first `luigiflow run` creates the store (MLflow's migrations) and loads a model
    output (MLflow's download): only luigiflow's own lines are printed."""
    pytest.importorskip("sklearn")
    (tmp_path / "quiet_tasks.py").write_text(QUIET_TASKS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PYTHONPATH=str(tmp_path), LUIGIFLOW_CACHE_DIR=str(tmp_path / "cache"))
    out = cli("run", "--module", "quiet_tasks", "Predict", cwd=tmp_path, env=env)
    shown = out.stdout + out.stderr
    assert "Predict" in out.stdout  # luigiflow's summary is there
    for noise in ("Creating initial MLflow database tables", "Downloading artifacts", "alembic"):
        assert noise not in shown, shown[-3000:]
    assert " INFO mlflow" not in shown, shown[-3000:]
