"""A run is reused only by the task that made it, and never once a user deleted it."""

from __future__ import annotations

import importlib
import os
import pathlib
import subprocess
import sys
import textwrap

import luigi
import pytest

import luigiflow as lf
from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of

TRAIN = """
import luigi
import luigiflow as lf


class Train(lf.MlflowTask):
    artifacts = {"model": "model.json"}
    alpha = luigi.FloatParameter(default=0.5)

    def run_task(self):
        self.save({"model": {"made_by": __spec__.name, "alpha": self.alpha}})


if __name__ == "__main__":
    task = Train()
    lf.build([task])
    print(task.identity)
"""


def _package(root: pathlib.Path, name: str) -> pathlib.Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for module in ("moda", "modb"):
        (pkg / f"{module}.py").write_text(textwrap.dedent(TRAIN))
    return pkg


# ----- item 5: same class name, different modules --------------------------------------


def test_same_named_classes_in_two_modules_do_not_share_runs(client, tmp_path, monkeypatch):
    _package(tmp_path / "src", "samename")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    moda = importlib.import_module("samename.moda")
    modb = importlib.import_module("samename.modb")
    a, b = moda.Train(), modb.Train()
    # What users see stays: family, experiment, config section.
    assert a.get_task_family() == b.get_task_family() == "Train"
    assert a.get_experiment_name() == b.get_experiment_name() == "Train"
    assert a.identity != b.identity
    assert lf.build([a]).executed == [a]
    result = lf.build([b])
    assert result.executed == [b]
    assert b.load_output() == {"made_by": "samename.modb", "alpha": 0.5}
    assert a.load_output() == {"made_by": "samename.moda", "alpha": 0.5}
    assert len(runs_of(client, "Train", "FINISHED")) == 2


@pytest.mark.slow
def test_python_dash_m_main_is_the_module_it_was_run_as(client, tmp_path, monkeypatch):
    src = tmp_path / "src"
    _package(src, "runasmain")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ["PYTHONPATH"]]))
    out = subprocess.run(
        [sys.executable, "-m", "runasmain.moda"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    monkeypatch.syspath_prepend(str(src))
    moda = importlib.import_module("runasmain.moda")
    task = moda.Train()
    assert out.stdout.strip().splitlines()[-1] == task.identity
    assert lf.build([task]).executed == []  # the run made under __main__ is this task's
    assert importlib.import_module("runasmain.modb").Train().find_run() is None


def test_config_section_by_family_still_applies(client, tmp_path, monkeypatch):
    _package(tmp_path / "src", "configured")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    (tmp_path / "luigi.cfg").write_text("[Train]\nalpha = 0.25\n")
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(tmp_path / "luigi.cfg"))
    import luigi

    luigi.configuration.LuigiConfigParser._instance = None
    moda = importlib.import_module("configured.moda")
    assert moda.Train().alpha == 0.25


# ----- item 6: deleted experiments stay deleted ----------------------------------------


@pytest.mark.slow
def test_deleted_experiment_is_not_restored_in_a_new_process(client, tmp_path):
    from tests.dags import Source

    task = Source(size=7)
    old_run = lf.build([task]).runs[task]
    old = client.get_experiment_by_name("Source")
    client.delete_experiment(old.experiment_id)  # what the MLflow UI's delete does
    # before any rebuild, `runs` says the experiment was deleted and how to see its runs
    gone = cli("runs", "Source", cwd=tmp_path, check=False)
    assert gone.returncode == 1 and "Traceback" not in gone.stderr, gone.stderr
    [line] = gone.stderr.strip().splitlines()
    assert f"experiment 'Source' (id {old.experiment_id}) was deleted" in line, line
    assert f"'Source~{old.experiment_id}'" in line and "no task family" not in line
    listing = line.split("to see its runs: ")[1].split(" (")[0]
    assert listing.startswith("mlflow runs list"), line
    shown = subprocess.run(
        [sys.executable, "-m", "mlflow", *listing.split()[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert old_run in shown.stdout, shown.stdout + shown.stderr
    out = cli("run", "--module", "tests.dags", "Source", "--size", "7", cwd=tmp_path)
    assert "executed 1, reused 0" in out.stdout, out.stdout
    assert client.get_experiment(old.experiment_id).lifecycle_stage == "deleted"
    assert client.get_run(old_run).info.lifecycle_stage == "deleted"
    fresh = client.get_experiment_by_name(f"Source~{old.experiment_id}")
    assert fresh is not None and fresh.lifecycle_stage == "active"
    [new_run] = runs_of(client, fresh.name, "FINISHED")
    assert new_run.info.run_id != old_run
    # and every reader finds it under the task's usual name
    listed = cli("runs", "Source", "--format", "json", cwd=tmp_path).stdout
    assert new_run.info.run_id in listed and old_run not in listed


def test_deleted_experiment_is_not_reused_within_one_process(client):
    from tests.dags import Middle

    task = Middle(size=8)
    lf.build([task])
    for name in ("Source", "Middle"):
        client.delete_experiment(client.get_experiment_by_name(name).experiment_id)
    result = lf.build([task])
    assert set(result.executed) == {task, *task.requires_dict().values()}
    assert task.load_output() == [n * 2 for n in range(8)]
    assert client.get_experiment_by_name("Source").lifecycle_stage == "deleted"


def test_deleted_experiment_again_moves_on(client):
    from tests.dags import Source

    task = Source(size=9)
    deleted = []
    for _ in range(2):
        run_id = lf.build([task]).runs[task]
        deleted.append(client.get_run(run_id).info.experiment_id)
        client.delete_experiment(deleted[-1])
    result = lf.build([task])
    assert result.executed == [task]
    run = task.find_run()
    assert run is not None and run.info.experiment_id not in deleted
    assert client.get_experiment(run.info.experiment_id).lifecycle_stage == "active"


class Later(lf.MlflowTask):
    """`Later(step=1)` runs after `Deleter`, which runs after `Later(step=0)`."""

    step = luigi.IntParameter()

    def requires(self):
        return {"deleter": Deleter()} if self.step else {}

    def run_task(self):
        self.log_metric("step", self.step)


class Deleter(lf.MlflowTask):
    """Deletes the experiment of `Later` while the build that resolved it goes on."""

    def requires(self):
        return {"first": Later(step=0)}

    def run_task(self):
        from mlflow import MlflowClient

        client = MlflowClient()
        client.delete_experiment(client.get_experiment_by_name("Later").experiment_id)
        self.log_metric("deleted", 1)


def test_experiment_deleted_during_a_build_is_not_written_to(client):
    # A build resolves each experiment once; one deleted since goes on in a successor.
    result = lf.build([Later(step=1)])
    assert result.success, result.failed
    first, second = result.runs[Later(step=0)], result.runs[Later(step=1)]
    deleted = client.get_run(first).info.experiment_id
    assert client.get_experiment(deleted).lifecycle_stage == "deleted"
    moved = client.get_run(second)
    assert moved.info.status == "FINISHED" and moved.info.lifecycle_stage == "active"
    assert moved.info.experiment_id != deleted
    assert client.get_experiment(moved.info.experiment_id).name == f"Later~{deleted}"


# ----- item 15: a deleted upstream run is said to be deleted ---------------------------


@pytest.mark.slow
def test_deleted_upstream_run_is_reported_as_deleted(client, tmp_path):
    from tests.dags import Leaf

    task = Leaf(size=5)
    result = lf.build([task])
    middle = task.requires_dict()["middle"]
    middle_run = result.runs[middle]
    leaf_run = result.runs[task]
    client.delete_run(middle_run)
    out = cli("run", "--module", "tests.dags", "Leaf", "--size", "5", cwd=tmp_path).stdout
    [row] = [line for line in out.splitlines() if "Middle(" in line]
    assert "deleted" in row and "reused" not in row, out
    # the counts agree with the rows: a deleted run was not reused
    assert "executed 0, reused 2, failed 0, run deleted 1" in out, out
    again = lf.build([task])
    assert middle not in again.reused and again.runs[middle] == middle_run
    source = middle.requires_dict()["source"]
    assert sorted(map(repr, again.reused)) == sorted(map(repr, [task, source]))
    shown = cli("show", leaf_run, cwd=tmp_path).stdout
    [line] = [line for line in shown.splitlines() if middle_run in line]
    assert "DELETED" in line and "FINISHED" not in line, shown
