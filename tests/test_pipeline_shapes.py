"""Pipelines shaped like real ones: data files, injected tasks, upstream parameters set
from the command line and config, typed queries, forced re-execution."""

from __future__ import annotations

import json

import luigi
import pytest

import luigiflow as lf
from tests.adversarial.cli_inprocess import read_command
from tests.conftest import runs_of
from tests.project_shapes import PIPELINE, cli, entries, executed, make_project, plan_json

# ----- data versions -----------------------------------------------------------------


@pytest.mark.slow
def test_data_change_is_named_by_plan_and_diff_with_both_hashes(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "pipeline", "Train")
    [first] = runs_of(client, "Prepare")
    recorded = json.loads(first.data.tags["luigiflow.data"])["data"]
    assert recorded["path"] == "data/data.xml" and len(recorded["sha256"]) == 64
    # MLflow's own dataset inputs show it in the UI
    [dataset] = client.get_run(first.info.run_id).inputs.dataset_inputs
    assert dataset.dataset.name == "data/data.xml"
    assert dataset.dataset.digest == recorded["sha256"][:36] or recorded["sha256"].startswith(
        dataset.dataset.digest
    )

    (project / "data" / "data.xml").write_text("one two three four five\n")
    plan = entries(plan_json(project, "Train"))
    old = recorded["sha256"]
    reasons = " ".join(plan["Prepare"]["reasons"])
    assert plan["Prepare"]["status"] == "will run"
    assert f"data changed: data/data.xml (hash {old[:12]}… -> " in reasons
    assert plan["Prepare"]["data_changes"][0]["path"] == "data/data.xml"
    new = plan["Prepare"]["data_changes"][0]["new"]
    assert new != old and f"-> {new[:12]}…)" in reasons

    cli(project, "run", "--module", "pipeline", "Train")
    [a, b] = runs_of(client, "Train", "FINISHED")
    out = cli(project, "diff", a.info.run_id, b.info.run_id).stdout
    assert "data/data.xml" in out and old[:12] in out and new[:12] in out
    assert "no parameter differs" not in out


# ----- dependency injection --------------------------------------------------------

INJECTED = (
    PIPELINE
    + """

class TrainSum(lf.MlflowTask):
    artifacts = {"model": "model.json"}

    def requires(self):
        return {"features": Featurize()}

    def run_task(self):
        self.save({"model": sum(self.load("features"))})


class TrainMax(lf.MlflowTask):
    artifacts = {"model": "model.json"}

    def requires(self):
        return {"features": Featurize()}

    def run_task(self):
        self.save({"model": max(self.load("features"))})


class Evaluate(lf.MlflowTask):
    artifacts = {"score": "score.json"}
    trainer = luigi.TaskParameter(default=TrainSum)

    def requires(self):
        return {"model": self.trainer(), "split": Split()}

    def run_task(self):
        self.save({"score": self.load("model", "model")})
"""
)


@pytest.mark.slow
def test_injected_task_class_swapped_by_parameter_reruns_exactly_the_affected(client, tmp_path):
    project = make_project(tmp_path, INJECTED)
    first = cli(project, "run", "--module", "pipeline", "Evaluate").stdout
    assert executed(first) == {"Prepare", "Split", "Featurize", "TrainSum", "Evaluate"}
    plan = plan_json(project, "Evaluate", "--trainer", "TrainMax")
    assert plan["status"] == "will run"
    assert plan["changed_params"] == [{"name": "trainer", "old": "TrainSum", "new": "TrainMax"}]
    out = cli(project, "run", "--module", "pipeline", "Evaluate", "--trainer", "TrainMax").stdout
    assert executed(out) == {"TrainMax", "Evaluate"}
    [_, b] = runs_of(client, "Evaluate", "FINISHED")
    assert b.data.params["trainer"] == "TrainMax"
    shown = cli(project, "show", b.info.run_id).stdout
    assert "trainer=TrainMax" in shown


class TaskInstanceParameter(luigi.Parameter):
    """gokart-style: the value is a task instance."""

    def serialize(self, x):
        return json.dumps({"type": x.get_task_family(), "params": x.to_str_params(True)})


class Scored(lf.MlflowTask):
    artifacts = {"n": "n.json"}
    n = luigi.IntParameter(default=1)

    def run_task(self):
        self.save({"n": self.n})


class Doubled(lf.MlflowTask):
    artifacts = {"n": "n.json"}
    source = TaskInstanceParameter()

    def requires(self):
        return {"source": self.source}

    def run_task(self):
        self.save({"n": 2 * self.load("source")})


def test_injected_task_instance_enters_identity_by_its_identity(client, capsys):
    one, two = Doubled(source=Scored(n=1)), Doubled(source=Scored(n=2))
    assert one.identity != two.identity
    assert Doubled(source=Scored(n=1)).identity == one.identity
    first = lf.build([one])
    second = lf.build([two])
    assert len(first.executed) == 2 and {t.get_task_family() for t in second.executed} == {
        "Scored",
        "Doubled",
    }
    assert two.load_output() == 4
    assert lf.build([one]).executed == []
    run = two.find_run()
    assert "Scored" in run.data.params["source"] and '"2"' in run.data.params["source"]
    code, out, err = read_command(capsys, "diff", one.find_run().info.run_id, run.info.run_id)
    assert code == 0, err
    assert "source" in out and "Scored" in out


# ----- upstream parameters from the command line and config ------------------------


@pytest.mark.slow
def test_upstream_parameter_from_the_command_line_changes_exactly_its_downstream(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "pipeline", "All")
    plan = entries(plan_json(project, "All", "--Split-test-size", "0.3"))
    assert plan["Split"]["status"] == "will run"
    assert plan["Split"]["changed_params"] == [{"name": "test_size", "old": "0.2", "new": "0.3"}]
    out = cli(project, "run", "--module", "pipeline", "All", "--Split-test-size", "0.3").stdout
    assert executed(out) == {"Split", "Featurize", "Train", "Report", "All"}
    assert runs_of(client, "Split", "FINISHED")[-1].data.params["test_size"] == "0.3"
    bad = cli(project, "run", "--module", "pipeline", "All", "--Nope-x", "1", check=False)
    assert bad.returncode == 1 and "--Nope-x" in bad.stderr


@pytest.mark.slow
def test_step_config_overridden_by_an_upstream_building_task_is_an_error(client, tmp_path):
    tail = '\n\n    def run_task(self):\n        self.save({"features"'
    pipeline = PIPELINE.replace(
        'return {"split": Split()}' + tail, 'return {"split": Split(test_size=0.5)}' + tail
    )
    assert "Split(test_size=0.5)" in pipeline
    project = make_project(tmp_path, pipeline)
    (project / "exp.toml").write_text(
        '[pipeline]\nmodule = "pipeline"\ntask = "Train"\n\n[steps.Split]\ntest_size = 0.3\n'
    )
    out = cli(project, "plan", "--config", "exp.toml", check=False)
    assert out.returncode == 1
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("ConfigError: ")
    assert "[steps.Split] test_size" in line and "Featurize" in line and "0.5" in line
    cmd = cli(
        project, "run", "--module", "pipeline", "Train", "--Split-test-size", "0.3", check=False
    )
    assert cmd.returncode == 1 and "--Split-test-size" in cmd.stderr and "Featurize" in cmd.stderr


# ----- typed queries -----------------------------------------------------------------


class Clean(lf.MlflowTask):
    artifacts = {"o": "o.json"}
    lowercase = luigi.BoolParameter(default=False)
    ratio = luigi.FloatParameter(default=0.5)

    def run_task(self):
        self.save({"o": 1})


def test_where_values_are_parsed_with_the_parameter_type(client, capsys):
    lf.build([Clean(lowercase=False), Clean(lowercase=True), Clean(lowercase=True, ratio=1.0)])

    def found(*where):
        args = [a for w in where for a in ("--where", w)]
        code, out, err = read_command(capsys, "runs", "Clean", *args, "--format", "json")
        assert code == 0, err
        return [(r["params"]["lowercase"], r["params"]["ratio"]) for r in json.loads(out)]

    assert found("lowercase=false") == [("False", "0.5")]
    assert found("lowercase=False") == [("False", "0.5")]
    assert sorted(found("lowercase=TRUE")) == [("True", "0.5"), ("True", "1.0")]
    assert found("lowercase=true", "ratio=1") == [("True", "1.0")]
    code, _, err = read_command(capsys, "runs", "Clean", "--where", "lowercase=maybe")
    assert code == 1 and "lowercase" in err and "maybe" in err


# ----- forced re-execution -------------------------------------------------------------


@pytest.mark.slow
def test_rerun_reexecutes_named_tasks_and_their_downstream(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "pipeline", "All")
    out = cli(project, "run", "--module", "pipeline", "All", "--rerun", "Split").stdout
    assert executed(out) == {"Split", "Featurize", "Train", "Report", "All"}
    assert len(runs_of(client, "Prepare")) == 1 and len(runs_of(client, "Split")) == 2
    two = cli(
        project, "run", "--module", "pipeline", "All", "--rerun", "Train", "--rerun", "Report"
    )
    assert executed(two.stdout) == {"Train", "Report", "All"}
    bad = cli(project, "run", "--module", "pipeline", "All", "--rerun", "Nope", check=False)
    assert bad.returncode == 1 and "Nope" in bad.stderr and "Split" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("family", ["Train"])
def test_plan_shows_rerun(client, tmp_path, family):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "pipeline", "All")
    plan = entries(plan_json(project, "All", "--rerun", family))
    assert plan[family]["status"] == "will run" and plan["All"]["status"] == "will run"
    assert plan["Featurize"]["status"] == "reused"
