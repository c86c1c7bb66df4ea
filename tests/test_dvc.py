"""`luigiflow run --dvc dvc.yaml`: a DVC pipeline's stages run unchanged, each an MLflow run."""

from __future__ import annotations

import json
import os
import pathlib
import pickle

import pytest

from tests.conftest import REPO, runs_of
from tests.conftest import luigiflow_cli as cli
from tests.scripts_project import (
    DVCLIVE_STANDIN,
    append_line,
    copy_example,
    finished_counts,
    get_started_project,
    git_snapshot,
    summary,
    will_run,
)


@pytest.mark.slow
def test_dvc_pipeline_reruns_the_minimal_set_and_takes_set_overrides(client, tmp_path):
    project = copy_example(tmp_path)
    dvc = str(project / "dvc.yaml")

    first = cli("run", "--dvc", dvc, cwd=tmp_path)
    assert summary(first.stdout) == (4, 0, 0)
    assert finished_counts(client) == {"prepare": 1, "featurize": 1, "train": 1, "evaluate": 1}
    # Outputs are left in the workspace, where the next stage and the user expect them...
    assert (project / "data" / "prepared" / "train.csv").is_file()
    assert (project / "model.pkl").is_file()
    written = json.loads((project / "eval" / "metrics.json").read_text())
    # ...and also stored as the run's artifacts, as copies (never the same file).
    train = runs_of(client, "train", "FINISHED")[0]
    stored = client.download_artifacts(train.info.run_id, "model.pkl")
    assert pathlib.Path(stored).read_bytes() == (project / "model.pkl").read_bytes()
    assert not (project / "model.pkl").samefile(stored)
    evaluate = runs_of(client, "evaluate", "FINISHED")[0]
    assert evaluate.data.metrics["roc_auc.test"] == pytest.approx(written["roc_auc"]["test"])
    assert "eval/metrics.json" in {
        a.path for a in client.list_artifacts(evaluate.info.run_id, "eval")
    }
    assert train.data.params["train.n_est"] == "20"

    second = cli("run", "--dvc", dvc, cwd=tmp_path)
    assert summary(second.stdout) == (0, 4, 0)

    # Editing one script re-runs it and its downstream.
    append_line(project / "src" / "evaluate.py", "# a comment is an edit too")
    assert will_run(cli("plan", "--dvc", dvc, "--format", "json", cwd=tmp_path).stdout) == {
        "evaluate"
    }
    third = cli("run", "--dvc", dvc, cwd=tmp_path)
    assert summary(third.stdout) == (1, 3, 0)

    # Changing one parameter in params.yaml re-runs the minimal set.
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("n_est: 20", "n_est: 7"))
    assert will_run(cli("plan", "--dvc", dvc, "--format", "json", cwd=tmp_path).stdout) == {
        "train",
        "evaluate",
    }
    fourth = cli("run", "--dvc", dvc, cwd=tmp_path)
    assert summary(fourth.stdout) == (2, 2, 0)
    with open(project / "model.pkl", "rb") as fd:
        assert pickle.load(fd).n_estimators == 7
    assert finished_counts(client) == {"prepare": 1, "featurize": 1, "train": 2, "evaluate": 3}

    # Back to the old value: every stage is reused and the workspace is restored to match.
    params.write_text(params.read_text().replace("n_est: 7", "n_est: 20"))
    fifth = cli("run", "--dvc", dvc, cwd=tmp_path)
    assert summary(fifth.stdout) == (0, 4, 0)
    with open(project / "model.pkl", "rb") as fd:
        assert pickle.load(fd).n_estimators == 20

    # DVC's `exp run --set-param` spelling and luigiflow's --set, on the built project
    # (one cold build less than a test of its own): the stages reading the key (and their
    # downstream) run with the value; the file keeps its own bytes.
    before = params.read_bytes()
    out = cli("run", "--dvc", dvc, "--set", "train.n_est=5", cwd=tmp_path)
    assert summary(out.stdout) == (2, 2, 0)
    assert params.read_bytes() == before
    with open(project / "model.pkl", "rb") as fd:
        assert pickle.load(fd).n_estimators == 5  # the workspace holds what the build made
    again = cli(
        "run", "--dvc", dvc, "evaluate", "--set-param", "params.yaml:train.n_est=5", cwd=tmp_path
    )
    assert summary(again.stdout) == (0, 4, 0)

    # `runs` shows every evaluate run's metrics, and tells the rows apart by the values
    # that reached the stage (20 twice: before and after the script edit).
    rows = json.loads(cli("runs", "evaluate", "--format", "json", cwd=tmp_path).stdout)
    assert all("roc_auc.test" in row["metrics"] for row in rows)
    assert sorted(row["params"]["train.n_est"] for row in rows) == ["20", "20", "5", "7"]

    wrong = cli("run", "--dvc", dvc, "-S", "train.n_estt=1", cwd=tmp_path, check=False)
    assert wrong.returncode == 1
    line = wrong.stderr.strip().splitlines()[-1]
    assert line.startswith("ConfigError:") and "train.n_estt" in line and "params.yaml" in line


@pytest.mark.slow
def test_dvc_vars_templating_foreach_wdir_and_cmd_lists(client, tmp_path):
    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    (project / "params.yaml").write_text("greeting: hello\nsizes:\n  small: 2\n  large: 5\n")
    (project / "extra.yaml").write_text("suffix: txt\n")
    (project / "dvc.yaml").write_text(
        """
vars:
  - extra.yaml
  - name: world
stages:
  greet:
    cmd: echo "${greeting} ${name}" > out/greeting.${suffix}
    params:
      - greeting
    outs:
      - out/greeting.${suffix}
  repeat:
    foreach: ${sizes}
    do:
      wdir: sub
      cmd:
        - mkdir -p rep
        - python -c "print('x' * ${item})" > rep/${key}.txt
      deps:
        - ../out/greeting.${suffix}
      outs:
        - rep/${key}.txt
"""
    )
    (project / "out").mkdir()
    out = cli("run", "--dvc", str(project / "dvc.yaml"), cwd=tmp_path)
    assert summary(out.stdout) == (3, 0, 0)
    assert (project / "out" / "greeting.txt").read_text().strip() == "hello world"
    assert (project / "sub" / "rep" / "large.txt").read_text().strip() == "xxxxx"
    assert (project / "sub" / "rep" / "small.txt").read_text().strip() == "xx"
    assert len(runs_of(client, "repeat@large", "FINISHED")) == 1
    greet = runs_of(client, "greet", "FINISHED")[0]
    assert greet.data.params["greeting"] == "hello"
    large = runs_of(client, "repeat@large", "FINISHED")[0]
    assert large.data.tags["luigiflow.upstream.greet"] == greet.info.run_id

    # A changed parameter of a named params file re-runs that stage and its downstream.
    (project / "params.yaml").write_text("greeting: hi\nsizes:\n  small: 2\n  large: 5\n")
    again = cli("run", "--dvc", str(project / "dvc.yaml"), cwd=tmp_path)
    assert summary(again.stdout) == (3, 0, 0)
    assert (project / "out" / "greeting.txt").read_text().strip() == "hi world"


@pytest.mark.slow
def test_dvc_named_params_file_and_stage_metrics(client, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "config.json").write_text('{"model": {"depth": 3}, "unused": 1}')
    (project / "score.py").write_text(
        "import json, sys\n"
        "depth = json.load(open('config.json'))['model']['depth']\n"
        "json.dump({'score': depth / 10, 'nested': {'a': 1}}, open('metrics.json', 'w'))\n"
        "print('scored', depth)\n"
    )
    (project / "dvc.yaml").write_text(
        """
stages:
  score:
    cmd: python score.py
    deps: [score.py]
    params:
      - config.json:
          - model.depth
    metrics:
      - metrics.json:
          cache: false
"""
    )
    cli("run", "--dvc", str(project / "dvc.yaml"), cwd=tmp_path)
    run = runs_of(client, "score", "FINISHED")[0]
    assert run.data.metrics == {"score": 0.3, "nested.a": 1.0}
    assert run.data.params["model.depth"] == "3"
    # A key the stage does not name changes nothing.
    (project / "config.json").write_text('{"model": {"depth": 3}, "unused": 2}')
    assert summary(cli("run", "--dvc", str(project / "dvc.yaml"), cwd=tmp_path).stdout) == (0, 1, 0)


@pytest.mark.slow
def test_unknown_dvc_field_is_one_clear_error_naming_it(client, tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: echo hi\n    bogus: 1\n")
    out = cli("run", "--dvc", str(tmp_path / "dvc.yaml"), cwd=tmp_path, check=False)
    assert out.returncode == 1
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("ConfigError:") and "bogus" in line and "'s'" in line
    assert runs_of(client, "s") == []


@pytest.mark.slow
def test_dvc_example_get_started_runs_unchanged_and_leaves_git_untouched(client, tmp_path):
    """DVC's example-get-started as it is at HEAD (artifacts, top-level plots with
    templates, dvclive in evaluate.py): every stage runs with DVC's environment, the run
    keeps the dvc.yaml's metadata, and the git repository is byte-identical afterwards."""
    project = get_started_project(tmp_path)
    before = git_snapshot(project)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(DVCLIVE_STANDIN), str(REPO)])}

    # The store lies outside the project (the `store` fixture's, under tmp_path).
    dvc = str(project / "dvc.yaml")
    first = cli("run", "--dvc", dvc, cwd=tmp_path, env=env)
    assert summary(first.stdout) == (4, 0, 0)
    assert git_snapshot(project) == before
    evaluate = runs_of(client, "evaluate", "FINISHED")[0]
    said = pathlib.Path(
        client.download_artifacts(evaluate.info.run_id, "luigiflow/stdout.txt")
    ).read_text()
    assert f"DVC_ROOT={project} DVC_STAGE=evaluate" in said
    assert evaluate.data.metrics["roc_auc.test"] > 0
    for plot in ("eval/plots/sklearn/roc/test.json", "eval/plots/images/importance.png"):
        assert (project / plot).is_file()

    # Model-registry metadata and plot definitions change nothing that runs: they are
    # kept on the runs of the stage producing those files.
    def stage_file(run) -> dict:
        path = client.download_artifacts(run.info.run_id, "luigiflow/stage.json")
        return json.loads(pathlib.Path(path).read_text())

    train = runs_of(client, "train", "FINISHED")[0]
    assert stage_file(train)["artifacts"]["text-classification"]["type"] == "model"
    assert any("ROC" in plot for plot in stage_file(evaluate)["plots"])
    # ...and drawn from the workspace, as `dvc plots show` (outside the repository).
    shown = cli("plots", "--dvc", dvc, "--output", str(tmp_path / "plots"), cwd=tmp_path)
    assert "not drawn" not in shown.stdout
    page = (tmp_path / "plots" / "index.html").read_text()
    for title in ("ROC", "Confusion-Matrix", "Precision-Recall", "importance.png"):
        assert title in page

    again = cli("run", "--dvc", dvc, cwd=tmp_path, env=env)
    assert summary(again.stdout) == (0, 4, 0)
    assert git_snapshot(project) == before

    # Early cutoff, as DVC: a comment-only edit re-runs train, whose model.pkl comes out
    # byte-identical, so evaluate is not run again.
    append_line(project / "src" / "train.py", "# a comment changes no output")
    plan = json.loads(cli("plan", "--dvc", dvc, "--format", "json", cwd=tmp_path).stdout)
    assert "reused instead if their outputs come out byte-identical" in " ".join(plan[0]["reasons"])
    cut = cli("run", "--dvc", dvc, cwd=tmp_path, env=env)
    assert summary(cut.stdout) == (1, 3, 0)
    assert "evaluate: reused, upstream train re-ran with identical outputs" in cut.stdout
    assert len(runs_of(client, "train", "FINISHED")) == 2
    latest = runs_of(client, "evaluate", "FINISHED")[-1]
    assert latest.data.tags["luigiflow.cutoff_from"] == evaluate.info.run_id


@pytest.mark.slow
def test_dvc_matrix_frozen_always_changed_and_multiline_cmd(client, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "params.yaml").write_text("models: [rf, lr]\n")
    (project / "seed.txt").write_text("frozen output, made long ago\n")
    (project / "dvc.yaml").write_text(
        """
stages:
  fetch:
    frozen: true
    cmd: exit 1
    outs: [seed.txt]
  stamp:
    always_changed: true
    cmd: |
      mkdir -p out
      echo stamped >> out/stamps.txt
    deps: [seed.txt]
    outs:
      - out/stamps.txt:
          persist: true
  train:
    matrix:
      model: ${models}
      n: [1, 2]
    cmd: mkdir -p out && echo ${item.model} ${item.n} > out/${key}.txt
    deps: [seed.txt]
    outs:
      - out/${key}.txt
"""
    )
    dvc = str(project / "dvc.yaml")
    first = cli("run", "--dvc", dvc, cwd=tmp_path)
    assert summary(first.stdout) == (5, 0, 0)  # fetch is frozen: never run
    assert (project / "out" / "rf-2.txt").read_text().strip() == "rf 2"
    assert {f"train@{m}-{n}" for m in ("rf", "lr") for n in (1, 2)} <= {
        e.name for e in client.search_experiments()
    }
    assert runs_of(client, "fetch") == []
    plan = cli("plan", "--dvc", dvc, cwd=tmp_path).stdout
    assert "always_changed" in plan
    second = cli("run", "--dvc", dvc, cwd=tmp_path)
    assert summary(second.stdout) == (1, 4, 0)  # stamp runs in every build, alone
    # The stage's own run of this build is what the workspace keeps (it was put back to the
    # previous build's output when the build ended within seconds of its plan).
    assert (project / "out" / "stamps.txt").read_text() == "stamped\nstamped\n", second.stdout
    assert "restored" not in second.stdout
    asked = cli("run", "--dvc", dvc, "fetch", cwd=tmp_path, check=False)
    assert asked.returncode == 1 and "frozen" in asked.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_first_build_in_a_git_repository_says_how_to_ignore_the_store(tmp_path):
    import subprocess

    project = tmp_path / "proj"
    project.mkdir()
    (project / "dvc.yaml").write_text(
        "stages:\n  hi:\n    cmd: echo hi > hi.txt\n    outs: [hi.txt]\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    first = cli("run", "--dvc", "dvc.yaml", cwd=project, env=env)
    assert "is not git-ignored" in first.stderr and ">> .gitignore" in first.stderr
    assert (project / "mlflow.db").is_file()  # where it always was: nothing moves
    again = cli("run", "--dvc", "dvc.yaml", cwd=project, env=env)
    assert summary(again.stdout) == (0, 1, 0) and "git-ignored" not in again.stderr


@pytest.mark.slow
def test_a_killed_set_build_leaves_params_restored_by_the_next_command(client, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    project = tmp_path / "proj"
    project.mkdir()
    original = b"# the user's own layout and comments\ntrain:\n  n_est: 20   # trees\n"
    (project / "params.yaml").write_bytes(original)
    # The stage says it started, then waits (bounded) for a file that never comes.
    (project / "dvc.yaml").write_text(
        "stages:\n"
        "  train:\n"
        "    cmd: >-\n"
        "      python -c \"import pathlib, time; pathlib.Path('started').touch();\n"
        "      [time.sleep(0.1) for _ in range(1200) if not pathlib.Path('go').exists()]\"\n"
        "    params: [train.n_est]\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "luigiflow.cli", "run", "--dvc", "dvc.yaml", "-S", "train.n_est=60"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (project / "started").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert b"60" in (project / "params.yaml").read_bytes()  # the stage reads it there
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: nothing restores the file
        proc.wait()

    again = cli("plan", "--dvc", "dvc.yaml", cwd=project)
    assert (project / "params.yaml").read_bytes() == original
    assert [p.name for p in project.iterdir() if "params" in p.name] == ["params.yaml"]
    assert "params.yaml: restored the values it held before a build with --set" in again.stderr


@pytest.mark.slow
def test_a_stage_records_the_projects_git_state_and_dvc_yaml_as_source_not_luigiflows(
    client, tmp_path
):
    """luigiflow itself runs from a git checkout here (PYTHONPATH, as an editable
    install): a stage's run records the project's code, never luigiflow's commit."""
    import subprocess

    project = tmp_path / "proj"
    project.mkdir()
    (project / "dvc.yaml").write_text(
        "stages:\n  hi:\n    cmd: echo hi > hi.txt\n    outs: [hi.txt]\n"
    )
    outside = subprocess.run(["git", "rev-parse"], cwd=project, capture_output=True)
    assert outside.returncode != 0  # the project is in no repository

    cli("run", "--dvc", "dvc.yaml", cwd=project)
    [run] = runs_of(client, "hi", "FINISHED")
    tags = run.data.tags
    assert tags["mlflow.source.name"] == str(project / "dvc.yaml")
    assert "luigiflow.git" not in tags and "mlflow.source.git.commit" not in tags

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "start"]):
        subprocess.run([*git, *args], cwd=project, check=True, capture_output=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.strip()
    (project / "dvc.yaml").write_text(
        "stages:\n  hi:\n    cmd: echo ho > hi.txt\n    outs: [hi.txt]\n"
    )
    cli("run", "--dvc", "dvc.yaml", cwd=project)
    latest = runs_of(client, "hi", "FINISHED")[-1].data.tags
    assert latest["mlflow.source.git.commit"] == head
    assert json.loads(latest["luigiflow.git"])["commit"] == head
    assert json.loads(latest["luigiflow.git"])["dirty"] == "True"  # dvc.yaml edited since
