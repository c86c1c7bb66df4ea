"""Training-loop users: checkpoints that survive a kill, saved metrics that win over
per-step ones, autologging that never fails a finished task."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import luigiflow as lf
from tests.conftest import REPO, runs_of
from tests.training import Autologged, Epochs

BUILD = (
    "import luigiflow as lf\n"
    "from tests.training import Epochs\n"
    "lf.build([Epochs(epochs=20)], log_level='CRITICAL')\n"
)


def _build_in_a_process(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BUILD],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(client, tmp_path, monkeypatch):
    import os

    ledger = tmp_path / "epochs.txt"
    env = {**os.environ, "LEDGER": str(ledger), "KILL_AT_EPOCH": "12"}
    killed = _build_in_a_process(env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    [dead] = runs_of(client, "Epochs")
    assert dead.info.status == "RUNNING"  # nobody was left to mark it
    assert json.loads(dead.data.tags["luigiflow.checkpoint"])["step"] == 11

    env.pop("KILL_AT_EPOCH")
    resumed = _build_in_a_process(env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trained = [int(line) for line in ledger.read_text().split()]
    assert trained == list(range(20)), trained  # 0..11, killed, then 12..19: no epoch twice
    finished = runs_of(client, "Epochs", "FINISHED")
    assert len(finished) == 1
    origin = json.loads(finished[0].data.tags["luigiflow.resumed_from"])
    assert (origin["run_id"], origin["step"]) == (dead.info.run_id, 11)
    assert Epochs(epochs=20).load_output() == [20.0]


def test_saved_metric_is_what_the_run_shows_after_per_step_values(client, tmp_path, monkeypatch):
    monkeypatch.setenv("LEDGER", str(tmp_path / "epochs.txt"))
    result = lf.build([Epochs(epochs=30)])
    run = client.get_run(result.runs[Epochs(epochs=30)])
    assert run.data.metrics["loss"] == 0.0125  # not the last epoch's 1/30
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 31  # history kept
    assert lf.runs(Epochs)["loss"].tolist() == [0.0125]


def test_autolog_parameter_clash_never_fails_a_finished_task(client):
    result = lf.build([Autologged()])
    run = client.get_run(result.runs[Autologged()])
    assert run.info.status == "FINISHED"
    assert run.data.params["C"] == "0.5"  # the task's own value, logged first
    assert run.data.params["hidden_layer_sizes"] == "[16]"
    assert "luigiflow.error" not in run.data.tags
    assert lf.build([Autologged()]).executed == []  # and it is reused, not failed again
