"""[sweep.optuna]: an adaptive search where each trial is a task, reused across reruns."""

from __future__ import annotations

import pathlib

import pytest

from tests.conftest import REPO, luigiflow_cli, runs_of

pytestmark = pytest.mark.slow  # runs builds in subprocesses


def write(folder: pathlib.Path, trials: int, storage: str = "") -> pathlib.Path:
    path = folder / "search.toml"
    path.write_text(
        '[pipeline]\nmodule = "tests.luigi_users.search_tasks"\ntask = "Tune"\n'
        '[sweep]\nmetric = "score"\ngoal = "max"\n'
        f"[sweep.optuna]\ntrials = {trials}\nseed = 11\nbatch = 2\n{storage}"
        "[sweep.optuna.params]\nlr = {loguniform = [0.0001, 1.0]}\ndepth = {int = [1, 8]}\n"
        'kind = ["a", "b"]\n'
    )
    return path


def test_an_optuna_search_builds_each_trial_as_a_task_and_reruns_reuse_them(client, tmp_path):
    config = write(tmp_path, 6)
    first = luigiflow_cli("run", "--config", str(config), cwd=tmp_path)
    assert "optuna: 6 trial(s) complete" in first.stdout, first.stdout
    tunes = runs_of(client, "Tune", "FINISHED")
    assert 4 <= len(tunes) <= 6  # a repeated proposal is the same task, built once
    again = luigiflow_cli("run", "--config", str(config), cwd=tmp_path)
    assert "the search executed 0 task(s)" in again.stdout, again.stdout
    assert len(runs_of(client, "Tune", "FINISHED")) == len(tunes)
    sweeps = runs_of(client, "sweeps", "FINISHED")
    assert sweeps and sweeps[-1].data.params["kind"] == "optuna"
    assert sweeps[-1].data.metrics["best_score"] == max(r.data.metrics["score"] for r in tunes)
    plan = luigiflow_cli("plan", "--config", str(config), cwd=tmp_path, check=False)
    assert plan.returncode == 1 and "adaptive search" in plan.stderr


def test_a_shared_study_grows_and_reuses_what_another_process_built(client, tmp_path):
    storage = f'storage = "sqlite:///{tmp_path / "study.db"}"\n'
    luigiflow_cli("run", "--config", str(write(tmp_path, 4, storage)), cwd=tmp_path)
    grown = luigiflow_cli("run", "--config", str(write(tmp_path, 6, storage)), cwd=tmp_path)
    assert "optuna: 6 trial(s) complete, 2 asked now" in grown.stdout, grown.stdout


def test_a_bad_search_space_is_reported_before_anything_runs(client, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[pipeline]\nmodule = "tests.luigi_users.search_tasks"\ntask = "Tune"\n'
        "[sweep.optuna]\ntrials = 0\n[sweep.optuna.params]\nwidth = [1, 2]\n"
    )
    out = luigiflow_cli("run", "--config", str(bad), cwd=REPO, check=False)
    assert out.returncode == 1
    expected = ("trials: must be a positive integer", "needs the metric", "no parameter 'width'")
    for problem in expected:
        assert problem in out.stderr, out.stderr
    assert not runs_of(client, "Tune")


def test_a_misspelt_search_metric_names_the_logged_ones(client, tmp_path):
    config = write(tmp_path, 2)
    config.write_text(config.read_text().replace('metric = "score"', 'metric = "scor"'))
    out = luigiflow_cli("run", "--config", str(config), cwd=tmp_path, check=False)
    assert out.returncode == 1
    assert "sweep metric 'scor' was not logged" in out.stderr, out.stderr
    assert "did you mean 'score'" in out.stderr
