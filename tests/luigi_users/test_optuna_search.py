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


def test_a_trial_whose_per_step_metric_lags_is_pruned_and_stays_pruned(client, tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = tmp_path / "prune.toml"

    def write_search(study: str) -> None:
        config.write_text(
            '[pipeline]\nmodule = "tests.luigi_users.search_tasks"\ntask = "Curve"\n'
            '[sweep]\nmetric = "score"\n'
            f'[sweep.optuna]\ntrials = 4\nseed = 3\nstorage = "{storage}"\nstudy = "{study}"\n'
            "pruner = {median = {n_startup_trials = 1}}\n"
            "[sweep.optuna.params]\nquality = {uniform = [0.0, 1.0]}\n"
        )

    write_search("first")
    # Two workers: each trial runs in a worker process, which reports to the study.
    first = luigiflow_cli("run", "--config", str(config), "--workers", "2", cwd=tmp_path)
    pruned_runs = [r for r in runs_of(client, "Curve") if "luigiflow.pruned" in r.data.tags]
    assert pruned_runs, first.stdout  # the seed gives two poor trials after a good one
    for run in pruned_runs:
        assert run.info.status == "KILLED"  # never FINISHED, never FAILED
        assert "pruned by the median pruner at step 0" in run.data.tags["luigiflow.error"]
        assert len(client.get_metric_history(run.info.run_id, "score")) < 4  # stopped early
    assert f"{len(pruned_runs)} pruned" in first.stdout, first.stdout
    [record] = runs_of(client, "sweeps", "FINISHED")
    for run in pruned_runs:  # a pruned trial is a run of the search too: linked, marked
        assert client.get_run(run.info.run_id).data.tags["mlflow.parentRunId"] == record.info.run_id
        assert f"{run.info.run_id}) (pruned)" in record.data.tags["mlflow.note.content"]
    study = optuna.load_study(study_name="first", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == len(pruned_runs)
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4 - len(pruned_runs)

    # A new study over the same store proposes the same trials: the finished ones are
    # reused and the pruned ones are told PRUNED again from their runs, not run again.
    write_search("again")
    again = luigiflow_cli("run", "--config", str(config), cwd=tmp_path)
    assert "the search executed 0 task(s)" in again.stdout, again.stdout
    assert f"{len(pruned_runs)} pruned" in again.stdout
    replayed = optuna.load_study(study_name="again", storage=storage)
    assert [t.state for t in replayed.trials] == states
    assert len(runs_of(client, "Curve")) == 4
    [best] = [r for r in runs_of(client, "sweeps", "FINISHED")][-1:]
    assert best.data.params["size"] == str(4 - len(pruned_runs))  # pruned runs: no results
