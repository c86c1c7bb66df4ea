"""The example pipeline (the README's main job) end to end on a temporary store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import runs_of

pytestmark = pytest.mark.slow  # starts servers or subprocesses (see scripts/test --fast)


@pytest.mark.xdist_group("example")
def test_example_pipeline_runs_then_reuses_everything(client, tmp_path):
    tmp_path = tmp_path / ("a-long-project-folder-name-" * 3)  # hints longer than 80 columns
    tmp_path.mkdir()
    first = subprocess.run(
        [sys.executable, "-m", "examples.tabular"],
        cwd=tmp_path,
        env=dict(os.environ, COLUMNS="80"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr
    assert "executed 23 task(s)" in first.stdout
    for algorithm in ("logreg", "rf", "gb"):
        assert algorithm in first.stdout
    evaluations = runs_of(client, "tabular-evaluate", "FINISHED")
    assert len(evaluations) == 9
    assert all(0.8 < r.data.metrics["roc_auc"] <= 1.0 for r in evaluations)
    for run in evaluations:  # the table shows each short run id with its metrics
        assert run.info.run_id[:8] in first.stdout
    # Tables fit 80 columns; a printed command is whole on one line, however long its
    # path (the terminal folds it; copying gives the command back).
    commands = ("look at every run: ", "one result and its chain: ", "tracking store: ")
    fitted = [line for line in first.stdout.splitlines() if not line.startswith(commands)]
    assert all(len(line) <= 80 for line in fitted), first.stdout
    assert "\x1b[" not in first.stdout + first.stderr  # no colour codes in a pipe
    hint = first.stdout.split("look at every run: ")[1].splitlines()[0]
    assert hint.endswith(" ui"), hint
    shown = subprocess.run(
        f"{hint} --help", shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0 and "Start the MLflow UI" in shown.stdout, hint  # as printed
    chain = first.stdout.split("one result and its chain: ")[1].splitlines()[0]
    shown = subprocess.run(
        chain, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0 and "roc_auc" in shown.stdout, chain + shown.stderr

    second = subprocess.run(
        [sys.executable, "-m", "examples.tabular"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr
    assert "nothing to do: all 23 task(s) reused" in second.stdout
    assert len(runs_of(client, "tabular-evaluate")) == 9
    assert len(runs_of(client, "tabular-load")) == 1
