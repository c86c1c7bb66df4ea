"""What luigiflow tells without importing mlflow agrees with MLflow's own code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow.exceptions import MlflowException
from mlflow.utils.uri import append_to_uri_path

from luigiflow._store import mlflow_compat
from tests.conftest import REPO


@pytest.mark.parametrize(
    "location",
    [
        "/abs/mlruns/3",
        "mlruns/3",
        "file:///abs/mlruns/3",
        "file:///abs/with%20space/3",
        "s3://bucket/root/3",
        "mlflow-artifacts:/3",
        "file:relative/3",
    ],
)
def test_run_artifact_uri_is_mlflows(location):
    run_id = "0123456789abcdef0123456789abcdef"
    expected = append_to_uri_path(location, run_id, "artifacts")
    assert mlflow_compat.run_artifact_uri(location, run_id) == expected


@pytest.mark.parametrize(
    ("metrics", "params", "tags"),
    [
        ([("loss", 0.5, 1, 0), ("a/b c-d.e", 3, 2, 7)], {"alpha": "0.1"}, {"luigiflow.x": "y"}),
        ([], {"p": "v" * 6000}, {"t": "v" * 8000}),
        ([], {}, {"t": "v" * 8001}),  # cut, with MLflow's warning
        ([], {"p": "v" * 6001}, {}),
        ([("bad..", 1.0, 1, 0)], {}, {}),
        ([("ok", True, 1, 0)], {}, {}),
        ([("ok", 1.0, -1, 0)], {}, {}),
        ([], {"../up": "x"}, {}),
        ([], {}, {"colon:key": "x", "ünïcode": "y"}),
        ([], {}, {"/abs": "x"}),
        ([], {}, {"k" * 251: "x"}),
    ],
)
def test_validated_batch_is_mlflows(metrics, params, tags, monkeypatch):
    def mlflows() -> object:
        monkeypatch.setattr(mlflow_compat.validation, "_plain_batch", lambda *_: False)
        try:
            return mlflow_compat.validated_batch(metrics, params, tags)
        except MlflowException as exc:
            return str(exc)
        finally:
            monkeypatch.undo()

    expected = mlflows()
    try:
        got: object = mlflow_compat.validated_batch(metrics, params, tags)
    except MlflowException as exc:
        got = str(exc)
    assert got == expected


CONTEXT = (
    "import json, sys\n"
    "from luigiflow._store import active_run\n"
    "ours = active_run.context_tags([])\n"
    "from mlflow.tracking.context.registry import resolve_tags\n"
    "print(json.dumps([ours, resolve_tags({})]))\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("remote", ["https://user:tok3n@example.com/team/repo.git", None])
def test_context_tags_are_mlflows(tmp_path, remote):
    repo = tmp_path / "project"
    repo.mkdir()
    script = repo / "train.py"
    script.write_text(CONTEXT)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x")
    if remote:
        git("remote", "add", "origin", remote)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_RUN_CONTEXT": '{"team": "vision"}'}
    env.pop("MLFLOW_TRACKING_USERNAME", None)
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ours, mlflows = json.loads(done.stdout)
    assert ours == mlflows
    assert ours["mlflow.source.git.branch"] == "main"
