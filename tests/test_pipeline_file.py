"""Pipeline files: unmodified scripts as stages, each an MLflow run (luigiflow run --pipeline)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of
from tests.scripts_project import (
    append_line,
    copy_example,
    finished_counts,
    summary,
    will_run,
)

pytestmark = pytest.mark.slow  # runs builds in subprocesses


def test_four_scripts_run_then_reuse_then_rerun_exactly_what_changed(client, tmp_path):
    project = copy_example(tmp_path)
    pipeline = str(project / "pipeline.toml")

    assert will_run(
        cli("plan", "--pipeline", pipeline, "--format", "json", cwd=tmp_path).stdout
    ) == {
        "prepare",
        "featurize",
        "train",
        "evaluate",
    }
    first = cli("run", "--pipeline", pipeline, cwd=tmp_path)
    assert summary(first.stdout) == (4, 0, 0)
    assert finished_counts(client) == {"prepare": 1, "featurize": 1, "train": 1, "evaluate": 1}
    # The scripts ran in scratch folders: nothing was written next to them.
    assert not (project / "model.pkl").exists() and not (project / "data" / "prepared").exists()

    evaluate = runs_of(client, "evaluate", "FINISHED")[0]
    metrics = evaluate.data.metrics
    assert 0.5 < metrics["roc_auc.test"] <= 1.0 and "avg_prec.train" in metrics
    train = runs_of(client, "train", "FINISHED")[0]
    assert train.data.params["train.n_est"] == "20"
    assert evaluate.data.tags["luigiflow.upstream.train"] == train.info.run_id
    stored = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert "model.pkl" in stored
    logs = {a.path for a in client.list_artifacts(evaluate.info.run_id, "luigiflow")}
    assert {"luigiflow/stdout.txt", "luigiflow/stderr.txt"} <= logs
    stdout_text = client.download_artifacts(evaluate.info.run_id, "luigiflow/stdout.txt")
    assert "roc_auc" in pathlib.Path(stdout_text).read_text()
    plots = {a.path for a in client.list_artifacts(evaluate.info.run_id, "eval/plots")}
    assert "eval/plots/roc-test.json" in plots

    # The second build executes nothing.
    second = cli("run", "--pipeline", pipeline, cwd=tmp_path)
    assert summary(second.stdout) == (0, 4, 0)
    assert (
        will_run(cli("plan", "--pipeline", pipeline, "--format", "json", cwd=tmp_path).stdout)
        == set()
    )

    # Editing one script re-runs it; its downstream is planned too, but the new
    # model.pkl comes out byte-identical, so evaluate is cut off (docs/identity.md).
    append_line(project / "src" / "train.py", "# tuned later")
    assert will_run(
        cli("plan", "--pipeline", pipeline, "--format", "json", cwd=tmp_path).stdout
    ) == {
        "train",
        "evaluate",
    }
    third = cli("run", "--pipeline", pipeline, cwd=tmp_path)
    assert summary(third.stdout) == (1, 3, 0)
    assert "evaluate: reused, upstream train re-ran with identical outputs" in third.stdout
    assert finished_counts(client) == {"prepare": 1, "featurize": 1, "train": 2, "evaluate": 2}

    # Changing one parameter re-runs the minimal set: featurize and what follows.
    text = (project / "pipeline.toml").read_text()
    (project / "pipeline.toml").write_text(text.replace("max_features = 4", "max_features = 3"))
    fourth = cli("run", "--pipeline", pipeline, cwd=tmp_path)
    assert summary(fourth.stdout) == (3, 1, 0)
    assert finished_counts(client) == {"prepare": 1, "featurize": 2, "train": 3, "evaluate": 3}

    # Metrics appear in `luigiflow runs`, params as columns.
    table = json.loads(cli("runs", "evaluate", "--format", "json", cwd=tmp_path).stdout)
    assert len(table) == 3 and all("roc_auc.test" in row["metrics"] for row in table)
    features = json.loads(cli("runs", "featurize", "--format", "json", cwd=tmp_path).stdout)
    assert sorted(row["params"]["featurize.max_features"] for row in features) == ["3", "4"]


def test_missing_output_and_failing_script_fail_the_run_naming_them(client, tmp_path):
    project = copy_example(tmp_path)
    pipeline = project / "pipeline.toml"
    declared = pipeline.read_text()
    pipeline.write_text(
        declared.replace('outs = ["model.pkl"]', 'outs = ["model.pkl", "report.txt"]')
    )
    out = cli("run", "--pipeline", str(pipeline), "train", cwd=tmp_path, check=False)
    assert out.returncode == 1
    assert "report.txt" in out.stderr
    assert len(runs_of(client, "train", "FAILED")) == 1
    assert not runs_of(client, "train", "FINISHED")

    # The same project (its upstream stages built): a script that raises.
    pipeline.write_text(declared)
    append_line(
        project / "src" / "train.py",
        'raise ValueError("min_split is too small for this data")',
    )
    out = cli("run", "--pipeline", str(pipeline), cwd=tmp_path, check=False)
    assert out.returncode == 1
    assert "ValueError: min_split is too small for this data" in out.stderr
    assert "train" in out.stderr and "exit" in out.stderr
    failed = runs_of(client, "train", "FAILED")
    assert len(failed) == 2
    error = failed[-1].data.tags["luigiflow.error"]
    assert "min_split is too small" in error
    stderr_file = client.download_artifacts(failed[-1].info.run_id, "luigiflow/stderr.txt")
    assert "Traceback" in pathlib.Path(stderr_file).read_text()
    assert finished_counts(client) == {"prepare": 1, "featurize": 1, "train": 0, "evaluate": 0}


def test_one_stage_builds_only_its_upstream_and_show_diff_reproduce_work_on_stages(
    client, tmp_path
):
    project = copy_example(tmp_path)
    pipeline = project / "pipeline.toml"
    out = cli("run", "--pipeline", str(pipeline), "featurize", cwd=tmp_path)
    assert summary(out.stdout) == (2, 0, 0)
    assert finished_counts(client) == {"prepare": 1, "featurize": 1, "train": 0, "evaluate": 0}
    out = cli("run", "--pipeline", str(pipeline), "train", cwd=tmp_path)
    assert summary(out.stdout) == (1, 2, 0)
    pipeline.write_text(pipeline.read_text().replace("n_est = 20", "n_est = 10"))
    cli("run", "--pipeline", str(pipeline), "train", cwd=tmp_path)
    old, new = (r.info.run_id for r in runs_of(client, "train", "FINISHED"))

    shown = cli("show", new, cwd=tmp_path).stdout
    assert "train" in shown and "featurize" in shown and "prepare" in shown
    assert "model.pkl" in shown
    diffed = cli("diff", old, new, cwd=tmp_path).stdout
    assert "train.n_est: 20 -> 10" in diffed

    again = cli("reproduce", new, "--force", cwd=tmp_path)
    assert "re-executed" in again.stdout
    assert len(runs_of(client, "train", "FINISHED")) == 3
    assert finished_counts(client)["prepare"] == 1


def test_pipeline_errors_are_one_line_naming_the_problem(client, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[stages.a]\ncmd = ["python", "a.py"]\ncolour = "blue"\n'
        '[stages.b]\ncmd = ["python", "b.py"]\nparams = ["nowhere.x"]\n'
    )
    out = cli("run", "--pipeline", str(bad), cwd=tmp_path, check=False)
    assert out.returncode == 1
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("ConfigError:")
    assert "colour" in line and "nowhere.x" in line
    project = copy_example(tmp_path)
    unknown = cli(
        "run", "--pipeline", str(project / "pipeline.toml"), "nope", cwd=tmp_path, check=False
    )
    assert unknown.returncode == 1
    assert "nope" in unknown.stderr and "prepare" in unknown.stderr  # names the known stages


FORKSERVER = """
import multiprocessing, sys
if __name__ == "__main__":
    multiprocessing.set_start_method("forkserver", force=True)
    from luigiflow.cli import main
    main(["run", "--pipeline", sys.argv[1], "--workers", "2"])
"""


def test_stages_travel_to_worker_processes_under_forkserver(client, tmp_path):
    # Stage classes are made from the file at run time; a worker that receives its
    # task pickled (forkserver, spawn) rebuilds it from the file and stage name.
    (tmp_path / "pipeline.toml").write_text(
        '[stages.a]\ncmd = "echo a > a.txt"\nouts = ["a.txt"]\n'
        '[stages.b]\ncmd = "echo b > b.txt"\nouts = ["b.txt"]\n'
        '[stages.both]\ncmd = "cat a.txt b.txt > both.txt"\ndeps = ["a.txt", "b.txt"]\n'
        'outs = ["both.txt"]\n'
    )
    (tmp_path / "go.py").write_text(FORKSERVER)
    out = subprocess.run(
        [sys.executable, "go.py", "pipeline.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert summary(out.stdout) == (3, 0, 0)
    both = runs_of(client, "both", "FINISHED")[0]
    stored = client.download_artifacts(both.info.run_id, "both.txt")
    assert pathlib.Path(stored).read_text() == "a\nb\n"
