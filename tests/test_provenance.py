"""Every run carries what made it: code, data, environment, seed; and can be re-executed."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

import luigiflow as lf
from tests.conftest import luigiflow_cli, runs_of
from tests.dags import Leaf

pytestmark = pytest.mark.slow  # starts servers or subprocesses (see scripts/test --fast)


PIPELINE = """
import luigi
import numpy as np
import luigiflow as lf


class Base(lf.MlflowTask):
    artifacts = {"o": "o.json"}

    def run_task(self):
        self.save({"o": 1})


class Step(lf.MlflowTask):
    artifacts = {"o": "o.json"}
    k = luigi.IntParameter(default=1)

    def requires(self):
        return {"base": Base()}

    def run_task(self):
        factor = 10  # BODY
        draw = float(np.random.rand())
        self.save({"o": self.k * factor}, metrics={"draw": draw, "v": self.k * factor})


class After(lf.MlflowTask):
    artifacts = {"o": "o.json"}

    def requires(self):
        return {"step": Step()}

    def run_task(self):
        self.save({"o": self.load("step") + 1})
"""


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_project(tmp_path: pathlib.Path) -> pathlib.Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "mypipe.py").write_text(PIPELINE)
    git(project, "init", "-q")
    git(project, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    git(project, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    return project


def cli(project, *args, check=True):
    return luigiflow_cli(*args, cwd=project, check=check)


def test_clean_and_dirty_tree_recorded_with_diff(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "mypipe", "Base")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True
    ).stdout.strip()
    [clean] = runs_of(client, "Base")
    recorded = json.loads(clean.data.tags["luigiflow.git"])
    assert recorded["commit"] == head and recorded["dirty"] == "False"
    env = json.loads(clean.data.tags["luigiflow.env"])
    assert env["version.mlflow"] and env["version.luigi"] and env["python"]
    files = {f.path for f in client.list_artifacts(clean.info.run_id, "luigiflow")}
    assert "luigiflow/environment.txt" in files and "luigiflow/git.diff" not in files

    source = project / "mypipe.py"
    source.write_text(
        source.read_text().replace("factor = 10  # BODY", "factor = 10  # BODY edited")
    )
    cli(project, "run", "--module", "mypipe", "Step")
    [step] = runs_of(client, "Step")
    assert json.loads(step.data.tags["luigiflow.git"])["dirty"] == "True"
    diff = client.download_artifacts(step.info.run_id, "luigiflow/git.diff", str(tmp_path))
    assert "BODY edited" in pathlib.Path(diff).read_text()
    packages = client.download_artifacts(
        step.info.run_id, "luigiflow/environment.txt", str(tmp_path)
    )
    assert "mlflow==" in pathlib.Path(packages).read_text()


def test_code_edit_is_reported_and_rerun_only_when_asked(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "mypipe", "After")
    source = project / "mypipe.py"
    source.write_text(source.read_text().replace("factor = 10  # BODY", "factor = 20  # BODY"))

    planned = json.loads(
        cli(project, "plan", "--module", "mypipe", "After", "--format", "json").stdout
    )[0]
    step = planned["upstream"]["step"]
    assert planned["status"] == "reused" and step["status"] == "reused"
    assert step["code_changed"] is True and planned["code_changed"] is False
    assert any("code changed" in r for r in step["reasons"])

    plain = cli(project, "run", "--module", "mypipe", "After")
    assert "executed 0, reused 3" in plain.stdout
    assert len(runs_of(client, "Step")) == 1

    forced = cli(project, "run", "--module", "mypipe", "After", "--rerun-changed")
    assert "executed 2, reused 1" in forced.stdout
    assert len(runs_of(client, "Step", "FINISHED")) == 2
    assert len(runs_of(client, "Base")) == 1
    newest_after = runs_of(client, "After", "FINISHED")[-1]
    assert (
        newest_after.data.tags["luigiflow.upstream.step"] == runs_of(client, "Step")[-1].info.run_id
    )


def test_reproduce_force_gives_identical_metrics_and_same_seed(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "mypipe", "Step", "--k", "3")
    [first] = runs_of(client, "Step")
    out = cli(project, "reproduce", first.info.run_id, "--force")  # a second process
    assert "code and inputs match the recorded run" in out.stdout
    assert "re-executed as run" in out.stdout and "NO" not in out.stdout
    runs = runs_of(client, "Step", "FINISHED")
    assert len(runs) == 2
    assert runs[0].data.metrics == runs[1].data.metrics  # same seed -> same random draw
    seeds = [json.loads(r.data.tags["luigiflow.task"])["seed"] for r in runs]
    assert seeds[0] == seeds[1]
    assert runs[1].data.params == {"k": "3"}

    again = cli(project, "reproduce", first.info.run_id)
    assert "reused" in again.stdout
    assert len(runs_of(client, "Step")) == 2


def test_reproduce_runs_made_by_a_script(client, tmp_path):
    project = make_project(tmp_path)
    main = "\nif __name__ == '__main__':\n    lf.build([Step(k=int(sys.argv[1]))])\n"
    (project / "mypipe.py").write_text(
        PIPELINE.replace("import luigi\n", "import sys\nimport luigi\n", 1) + main
    )
    env = dict(os.environ)
    subprocess.run([sys.executable, "-m", "mypipe", "4"], cwd=project, env=env, check=True)
    subprocess.run([sys.executable, "mypipe.py", "5"], cwd=project, env=env, check=True)
    by_k = {r.data.params["k"]: r for r in runs_of(client, "Step")}
    # `python -m mypipe` runs the module as __main__: its importable name is recorded
    assert json.loads(by_k["4"].data.tags["luigiflow.task"])["module"] == "mypipe"
    assert "reused" in cli(project, "reproduce", by_k["4"].info.run_id).stdout
    # `python mypipe.py` records the name the file is importable as from its folder
    assert json.loads(by_k["5"].data.tags["luigiflow.task"])["module"] == "mypipe"
    assert "reused" in cli(project, "reproduce", by_k["5"].info.run_id).stdout
    # from a folder where that name cannot be imported, the error says what to pass
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    failed = cli(elsewhere, "reproduce", by_k["5"].info.run_id, check=False)
    assert failed.returncode == 1 and "--module" in failed.stderr, failed.stderr


def test_reproduce_reports_code_difference(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "mypipe", "Step")
    [run] = runs_of(client, "Step")
    source = project / "mypipe.py"
    source.write_text(source.read_text().replace("factor = 10  # BODY", "factor = 30  # BODY"))
    out = cli(project, "reproduce", run.info.run_id)
    assert "Step source changed" in out.stdout
    assert "working tree has uncommitted changes" in out.stdout


def test_reproduce_and_diff_name_an_upstream_whose_code_changed(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "mypipe", "After")
    [after] = runs_of(client, "After")
    [step] = runs_of(client, "Step")
    old_fp = json.loads(step.data.tags["luigiflow.task"])["code_fingerprint"]
    source = project / "mypipe.py"
    source.write_text(source.read_text().replace("factor = 10  # BODY", "factor = 20  # BODY"))
    upstream = f"upstream Step (run {step.info.run_id[:8]}): source changed"

    # Nothing rebuilt yet: the chain differs, but the recorded upstream run is still the
    # one the build consumes, so --force re-executes After on the recorded inputs.
    plain = cli(project, "reproduce", after.info.run_id)
    assert "code and inputs match" not in plain.stdout
    assert upstream in plain.stdout, plain.stdout
    forced = cli(project, "reproduce", after.info.run_id, "--force")
    assert upstream in forced.stdout and "re-executed as run" in forced.stdout
    assert f"on the recorded upstream run(s): step {step.info.run_id[:8]}" in forced.stdout
    assert "NO" not in forced.stdout

    # Rebuilt with the changed code: a forced reproduce would consume the NEW Step run,
    # which is not a reproduction; it refuses, naming the upstream and what to do.
    cli(project, "run", "--module", "mypipe", "After", "--rerun-changed")
    afters = len(runs_of(client, "After"))
    new_step = runs_of(client, "Step", "FINISHED")[-1]
    refused = cli(project, "reproduce", after.info.run_id, "--force", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    error = refused.stderr.strip().splitlines()
    assert len(error) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"upstream Step (run {step.info.run_id[:8]})" in error[0]
    assert new_step.info.run_id[:8] in error[0] and "git checkout" in error[0]
    assert len(runs_of(client, "After")) == afters  # nothing executed

    new_after = runs_of(client, "After", "FINISHED")[-1]
    new_fp = json.loads(new_step.data.tags["luigiflow.task"])["code_fingerprint"]
    diff = cli(project, "diff", new_after.info.run_id, after.info.run_id).stdout
    assert "no parameter" not in diff
    assert f"code changed: Step {new_fp[:12]} -> {old_fp[:12]}" in diff, diff


def test_seed_differs_between_identities_and_matches_across_processes(store):
    code = "from tests.dags import Leaf; print(Leaf(size={}).seed)"
    seeds = [
        subprocess.run(
            [sys.executable, "-c", code.format(n)], capture_output=True, text=True, check=True
        ).stdout.strip()
        for n in (3, 3, 4)
    ]
    assert seeds[0] == seeds[1] == str(Leaf(size=3).seed)
    assert seeds[2] != seeds[0]


class ReadsData(lf.MlflowTask):
    artifacts = {"rows": "rows.json"}
    data = lf.FileParameter()

    def run_task(self):
        from tests.dags import note

        note("ReadsData")
        self.save({"rows": pathlib.Path(self.data).read_text().splitlines()})


class CountsRows(lf.MlflowTask):
    artifacts = {"n": "n.json"}
    data = lf.FileParameter()

    def requires(self):
        return {"rows": ReadsData(data=self.data)}

    def run_task(self):
        from tests.dags import note

        note("CountsRows")
        self.save({"n": len(self.load("rows"))})


def test_data_change_reruns_dependents_and_restore_reuses(client, tmp_path, monkeypatch):
    ledger = tmp_path / "ledger"
    monkeypatch.setenv("LEDGER", str(ledger))
    data = tmp_path / "data.csv"
    data.write_text("a\nb\n")
    original = lf.build([CountsRows(data=str(data)), Leaf()])
    assert ledger.read_text().split().count("ReadsData") == 1

    ledger.unlink()
    data.write_text("a\nb\nc\n")
    changed = lf.build([CountsRows(data=str(data)), Leaf()])
    assert ledger.read_text().split() == ["ReadsData", "CountsRows"]
    assert CountsRows(data=str(data)).load_output() == 3
    assert changed.runs[Leaf()] == original.runs[Leaf()]

    ledger.unlink()
    data.write_text("a\nb\n")
    restored = lf.build([CountsRows(data=str(data))])
    assert not ledger.exists()
    assert restored.executed == []
    assert restored.runs[CountsRows(data=str(data))] == original.runs[CountsRows(data=str(data))]


def test_coherent_chain_query_ignores_decoys(client):
    # Decoys match the leaf's own parameter but not an upstream step.
    lf.build([Leaf(size=4, factor=3, label="x")])
    lf.build([Leaf(size=4, factor=2, label="x")])  # wrong factor upstream
    lf.build([Leaf(size=5, factor=3, label="x")])  # wrong size upstream
    lf.build([Leaf(size=4, factor=3, label="y")])  # wrong own label
    wanted = Leaf(size=4, factor=3, label="x").find_run().info.run_id
    found = lf.find_runs(
        Leaf, where={"label": "x"}, upstream={"Middle": {"factor": 3}, "Source": {"size": 4}}
    )
    assert [r.info.run_id for r in found] == [wanted]
    both = lf.find_runs("Leaf", upstream={"Middle": {"factor": 3}, "Source": {"size": 4}})
    assert len(both) == 2 and both[0].info.start_time >= both[1].info.start_time
    assert lf.find_runs(Leaf, upstream={"Source": {"size": 99}}) == []
