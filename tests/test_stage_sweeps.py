"""Sweeps and command-line values over a pipeline file's stages: a value given to the
stage built reaches the stage that uses it, each point is its own chain of runs, and the
sweep record, table and best run are those of class-task sweeps."""

from __future__ import annotations

import json
import pathlib
import textwrap

import pandas as pd
import pytest

from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of
from tests.scripts_project import copy_example, finished_counts, summary, will_run

pytestmark = pytest.mark.slow  # runs builds in subprocesses


def test_grid_sweep_over_stage_parameters_records_table_and_best_run(client, tmp_path):
    project = copy_example(tmp_path)
    config = project / "sweep.toml"  # examples/scripts/sweep.toml: 2 n_est x 2 min_split

    first = cli("run", "--config", str(config), cwd=tmp_path)
    # prepare and featurize are shared by every point; train and evaluate run per point.
    assert summary(first.stdout) == (10, 0, 0)
    assert finished_counts(client) == {"prepare": 1, "featurize": 1, "train": 4, "evaluate": 4}

    [sweep] = runs_of(client, "sweeps", "FINISHED")
    assert f"sweep record: run {sweep.info.run_id}" in first.stdout
    assert sweep.data.params["swept"] == "train.n_est,train.min_split"
    table = pd.read_csv(client.download_artifacts(sweep.info.run_id, "results.csv", str(tmp_path)))
    assert len(table) == 4
    assert sorted(zip(table["train.n_est"], table["train.min_split"], strict=True)) == [
        (10, 2),
        (10, 4),
        (20, 2),
        (20, 4),
    ]
    assert list(table["roc_auc.test"]) == sorted(table["roc_auc.test"], reverse=True)
    assert sweep.data.tags["luigiflow.sweep.best_run"] == table["run_id"][0]
    assert sweep.data.metrics["best_roc_auc.test"] == pytest.approx(table["roc_auc.test"][0])

    # Each point's value reached the stage that uses it: the evaluate run of a row
    # consumed a train run made with that row's values.
    trains = {r.info.run_id: r for r in runs_of(client, "train", "FINISHED")}
    evaluates = {r.info.run_id: r for r in runs_of(client, "evaluate", "FINISHED")}
    for row in table.itertuples(index=False):
        evaluate = evaluates[row.run_id]
        train = trains[evaluate.data.tags["luigiflow.upstream.train"]]
        assert train.data.params["train.n_est"] == str(row[0])
        assert train.data.params["train.min_split"] == str(row[1])
        assert evaluate.data.params["train.n_est"] == str(row[0])
    assert len(set(table["roc_auc.test"])) > 1  # the scripts read the swept values

    again = cli("run", "--config", str(config), cwd=tmp_path)
    assert summary(again.stdout) == (0, 10, 0)
    assert len(runs_of(client, "sweeps")) == 1  # the unchanged sweep reuses its record

    listed = json.loads(
        cli(
            "runs", "evaluate", "--sweep", sweep.info.run_id, "--format", "json", cwd=tmp_path
        ).stdout
    )
    assert {r["run_id"] for r in listed} == set(table["run_id"])
    best, worst = table["run_id"][0], table["run_id"][3]
    diffed = cli("diff", best, worst, cwd=tmp_path).stdout
    assert "train.n_est" in diffed or "train.min_split" in diffed
    # reproduce rebuilds a point from its run alone: the same identity, so reused.
    reproduced = cli("reproduce", worst, cwd=tmp_path).stdout
    assert f"reused: run {worst}" in reproduced


def _numbers_project(folder: pathlib.Path) -> pathlib.Path:
    """A Python task stage (numbers) read by a command stage (total) with its own value."""
    (folder / "numbersteps.py").write_text(
        textwrap.dedent(
            """
            import luigi
            import luigiflow as lf

            class Numbers(lf.MlflowTask):
                artifacts = {"numbers": "numbers.json"}
                count = luigi.IntParameter(default=3)

                def run_task(self):
                    self.save({"numbers": list(range(self.count))})
            """
        )
    )
    (folder / "total.py").write_text(
        textwrap.dedent(
            """
            import json, yaml
            params = yaml.safe_load(open("params.yaml"))
            total = sum(json.load(open("numbers.json"))) * params["scale"]
            json.dump({"total": total, "n_params": len(params)}, open("metrics.json", "w"))
            """
        )
    )
    (folder / "pipeline.toml").write_text(
        textwrap.dedent(
            """
            [stages.numbers]
            task = "numbersteps:Numbers"
            params = { count = 5 }

            [stages.total]
            cmd = ["python", "total.py"]
            deps = ["total.py"]
            inputs = { "numbers.json" = "numbers.numbers" }
            params = { scale = 2 }
            metrics = "metrics.json"
            """
        )
    )
    return folder / "pipeline.toml"


def test_random_sweep_reaches_a_python_task_stage_and_a_stage_value(client, tmp_path):
    _numbers_project(tmp_path)
    (tmp_path / "sweep.toml").write_text(
        '[pipeline]\nfile = "pipeline.toml"\n'  # stage: the only final one, total
        "[params]\nscale = 10\n"
        '[sweep]\nmetric = "total"\ngoal = "min"\n'
        "[sweep.random]\nseed = 3\ncount = 3\n"
        '[sweep.random.params]\n"numbers.count" = [2, 4, 6, 8]\n'
    )
    out = cli("run", "--config", "sweep.toml", cwd=tmp_path)
    [sweep] = runs_of(client, "sweeps", "FINISHED")
    table = pd.read_csv(client.download_artifacts(sweep.info.run_id, "results.csv", str(tmp_path)))
    assert len(table) == 3 and list(table["total"]) == sorted(table["total"])  # goal min
    numbers = {r.info.run_id: r for r in runs_of(client, "Numbers", "FINISHED")}
    points = {c: 0 for c in table["numbers.count"]}
    assert summary(out.stdout) == (2 * len(points), 0, 0)  # a repeated draw is one point
    for row in runs_of(client, "total", "FINISHED"):
        count = int(row.data.params["numbers.count"])
        upstream = numbers[row.data.tags["luigiflow.upstream.numbers"]]
        assert upstream.data.params["count"] == str(count)
        assert row.data.params["scale"] == "10"
        assert row.data.metrics["total"] == 10 * sum(range(count))
        # only the stage's own value is written to its params file
        assert row.data.metrics["n_params"] == 1


def test_stage_parameters_from_the_command_line(client, tmp_path):
    pipeline = str(_numbers_project(tmp_path))
    cli("run", "--pipeline", pipeline, "total", "--scale", "3", cwd=tmp_path)
    [total] = runs_of(client, "total", "FINISHED")
    assert total.data.params["scale"] == "3" and total.data.metrics["total"] == 30
    # A command stage's scripts are in its identity: plan does not call its code unknown.
    reused = cli("plan", "--pipeline", pipeline, "total", "--scale", "3", cwd=tmp_path).stdout
    assert "reused" in reused and "code unknown" not in reused

    # A value of an upstream stage, given to the stage built, reaches that stage.
    plan = cli(
        "plan",
        "--pipeline",
        pipeline,
        "total",
        "--numbers.count=4",
        "--format",
        "json",
        cwd=tmp_path,
    )
    assert will_run(plan.stdout) == {"Numbers", "total"}
    out = cli("run", "--pipeline", pipeline, "--numbers.count", "4", cwd=tmp_path)  # every stage
    assert summary(out.stdout) == (2, 0, 0)
    counts = sorted(r.data.params["count"] for r in runs_of(client, "Numbers", "FINISHED"))
    assert counts == ["4", "5"]
    again = cli("run", "--pipeline", pipeline, "total", "--scale=3", cwd=tmp_path)
    assert summary(again.stdout) == (0, 2, 0)  # the first build, reused

    bad = cli("run", "--pipeline", pipeline, "total", "--sacle", "3", cwd=tmp_path, check=False)
    assert bad.returncode == 1
    [line] = bad.stderr.strip().splitlines()
    assert line.startswith("ParameterError: stage 'total': unknown parameter --sacle")
    assert "did you mean --scale" in line and "--numbers.count" in line
    helped = cli("run", "--pipeline", pipeline, "total", "--help", cwd=tmp_path).stdout
    assert "--scale" in helped and "--numbers.count" in helped and "used upstream" in helped
    typed = cli("run", "--pipeline", pipeline, "total", "--scale", "x", cwd=tmp_path, check=False)
    assert typed.returncode == 1 and "--scale expects" in typed.stderr, typed.stderr
    assert "got 'x'" in typed.stderr

    project = copy_example(tmp_path)
    dvc = cli(
        "run",
        "--dvc",
        str(project / "dvc.yaml"),
        "train",
        "--train.n_estt",  # a dvc.yaml value is one of its params files' keys
        "5",
        cwd=tmp_path,
        check=False,
    )
    assert dvc.returncode == 1
    assert "params.yaml has no key 'train.n_estt'" in dvc.stderr.strip().splitlines()[-1]


def test_stage_sweep_config_mistakes_are_reported_together(client, tmp_path):
    project = copy_example(tmp_path)
    bad = project / "bad.toml"
    bad.write_text(
        '[pipeline]\nfile = "pipeline.toml"\nstage = "evaluate"\ncolour = "red"\n'
        '[params]\n"train.nest" = 5\n'
        "[steps.train]\nseed = 1\n"
        '[sweep.grid]\n"train.n_est" = ["many"]\n'
    )
    out = cli("plan", "--config", str(bad), cwd=tmp_path, check=False)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("ConfigError:") and "4 problem(s)" in line
    assert "colour" in line and "train.nest" in line and "train.n_est" in line
    assert "[steps]" in line and "'many'" in line

    wrong_stage = project / "stage.toml"
    wrong_stage.write_text('[pipeline]\nfile = "pipeline.toml"\nstage = "deploy"\n')
    out = cli("plan", "--config", str(wrong_stage), cwd=tmp_path, check=False)
    assert out.returncode == 1 and "deploy" in out.stderr and "evaluate" in out.stderr

    given_as_config = cli(
        "run", "--config", str(project / "pipeline.toml"), cwd=tmp_path, check=False
    )
    assert given_as_config.returncode == 1
    assert "--pipeline" in given_as_config.stderr.strip().splitlines()[-1]

    swept_inside = project / "pipeline.toml"
    swept_inside.write_text(swept_inside.read_text() + '[sweep.grid]\n"train.n_est" = [1, 2]\n')
    out = cli("plan", "--pipeline", str(swept_inside), cwd=tmp_path, check=False)
    assert out.returncode == 1
    assert '[pipeline] file = "pipeline.toml"' in out.stderr.strip().splitlines()[-1]

    cycle = tmp_path / "cycle.toml"
    cycle.write_text(
        '[stages.a]\ncmd = "cat b.txt > a.txt"\ndeps = ["b.txt"]\nouts = ["a.txt"]\n'
        '[stages.b]\ncmd = "cat a.txt > b.txt"\ndeps = ["a.txt"]\nouts = ["b.txt"]\n'
    )
    out = cli("plan", "--pipeline", str(cycle), cwd=tmp_path, check=False)
    assert out.returncode == 1
    assert "depend on each other: a -> b -> a" in out.stderr.strip().splitlines()[-1]
    assert [e.name for e in client.search_experiments()] == ["Default"]


def test_grid_sweep_over_a_dvc_yaml_runs_each_point_with_its_params(client, tmp_path):
    import os
    import pickle

    from tests.conftest import REPO
    from tests.scripts_project import DVCLIVE_STANDIN, get_started_project, git_snapshot

    project = get_started_project(tmp_path)
    (tmp_path / "sweep.toml").write_text(
        '[pipeline]\ndvc = "get-started/dvc.yaml"\nstage = "evaluate"\n\n'
        '[sweep]\nmetric = "roc_auc.test"\n\n[sweep.grid]\n"train.n_est" = [3, 50]\n'
    )
    before = git_snapshot(project)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(DVCLIVE_STANDIN), str(REPO)])}

    first = cli("run", "--config", "sweep.toml", cwd=tmp_path, env=env)
    # prepare and featurize read no swept key: one run each; train and evaluate per point.
    assert "built 2 points one at a time: executed 6, reused 2, failed 0" in first.stdout
    assert finished_counts(client, ["prepare", "featurize", "train", "evaluate"]) == {
        "prepare": 1,
        "featurize": 1,
        "train": 2,
        "evaluate": 2,
    }
    assert git_snapshot(project) == before  # params.yaml has its own bytes, no backup left

    # The script of each point read that point's value from params.yaml.
    [sweep] = runs_of(client, "sweeps", "FINISHED")
    table = pd.read_csv(client.download_artifacts(sweep.info.run_id, "results.csv", str(tmp_path)))
    trains = {r.info.run_id: r for r in runs_of(client, "train", "FINISHED")}
    evaluates = {r.info.run_id: r for r in runs_of(client, "evaluate", "FINISHED")}
    assert sorted(table["train.n_est"]) == [3, 50]
    for n_est, run_id in zip(table["train.n_est"], table["run_id"], strict=True):
        train = trains[evaluates[run_id].data.tags["luigiflow.upstream.train"]]
        assert train.data.params["train.n_est"] == str(n_est)
        folder = tmp_path / f"model-{n_est}"
        folder.mkdir()
        with open(
            client.download_artifacts(train.info.run_id, "model.pkl", str(folder)), "rb"
        ) as f:
            assert pickle.load(f).n_estimators == n_est

    again = cli("run", "--config", "sweep.toml", cwd=tmp_path, env=env)
    assert "built 2 points one at a time: executed 0, reused 8, failed 0" in again.stdout
    assert len(runs_of(client, "sweeps")) == 1

    rows = json.loads(cli("runs", "evaluate", "--format", "json", cwd=tmp_path).stdout)
    assert sorted(int(r["params"]["train.n_est"]) for r in rows) == [3, 50]
