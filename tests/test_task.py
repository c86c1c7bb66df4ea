"""The life of a run: completion by FINISHED run only, reruns, failures, crashes."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import luigi
import mlflow
import pytest

import luigiflow as lf
from tests.conftest import runs_of
from tests.dags import Flaky, Leaf, Middle, Sleeper, Source

IDENTITY_TAG = "luigiflow.identity"  # the run-tag contract (DESIGN.md)


def ledger(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    path = tmp_path / "ledger.txt"
    monkeypatch.setenv("LEDGER", str(path))
    return path


def executed(path: pathlib.Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_rerun_of_finished_graph_creates_no_run(client, tmp_path, monkeypatch):
    book = ledger(tmp_path, monkeypatch)
    first = lf.build([Leaf()])
    assert sorted(t.get_task_family() for t in first.executed) == ["Leaf", "Middle", "Source"]
    counts = [len(runs_of(client, e)) for e in ("Source", "Middle", "Leaf")]
    second = lf.build([Leaf()])
    assert second.executed == []
    assert set(second.reused) == {Leaf(), Middle(), Source()}
    assert [len(runs_of(client, e)) for e in ("Source", "Middle", "Leaf")] == counts == [1, 1, 1]
    assert second.runs == first.runs
    assert len(executed(book)) == 3


def test_changing_one_parameter_reruns_it_and_downstream_only(client, tmp_path, monkeypatch):
    book = ledger(tmp_path, monkeypatch)
    lf.build([Leaf(factor=2)])
    book.unlink()
    result = lf.build([Leaf(factor=5)])
    assert executed(book) == ["Middle(3,5)", "Leaf(3,5,x)"]
    assert {t.get_task_family() for t in result.executed} == {"Middle", "Leaf"}
    assert result.reused == [Source()]
    assert len(runs_of(client, "Source")) == 1
    assert Leaf(factor=5).load_output() == str(sum(n * 5 for n in range(3)))


def test_leaf_only_parameter_reruns_leaf_only(tmp_path, monkeypatch, store):
    book = ledger(tmp_path, monkeypatch)
    lf.build([Leaf(label="a")])
    book.unlink()
    lf.build([Leaf(label="b")])
    assert executed(book) == ["Leaf(3,2,b)"]


def test_run_records_identity_lineage_params_metrics(client):
    result = lf.build([Leaf(size=4)])
    leaf_run = client.get_run(result.runs[Leaf(size=4)])
    middle_run_id = result.runs[Middle(size=4)]
    assert leaf_run.info.status == "FINISHED"
    assert leaf_run.data.tags[IDENTITY_TAG] == Leaf(size=4).identity
    assert leaf_run.data.tags["luigiflow.task_family"] == "Leaf"
    assert leaf_run.data.tags["luigiflow.upstream.middle"] == middle_run_id
    assert leaf_run.data.params == {"size": "4", "factor": "2", "label": "x"}
    assert leaf_run.data.metrics["total"] == 12.0
    assert (
        client.get_run(middle_run_id).data.tags["luigiflow.upstream.source"]
        == result.runs[Source(size=4)]
    )


def test_failure_leaves_failed_run_with_traceback_and_retry_succeeds(client, tmp_path):
    gate = tmp_path / "gate"
    gate.write_text("closed")
    task = Flaky(gate=str(gate))
    with pytest.raises(lf.BuildError) as info:
        lf.build([task])
    assert isinstance(info.value.failures[task], RuntimeError)
    assert "gate" in str(info.value)
    [failed] = runs_of(client, "Flaky")
    assert failed.info.status == "FAILED"
    assert failed.data.metrics["before_failure"] == 1.0
    assert "RuntimeError" in failed.data.tags["luigiflow.error"]
    trace = client.download_artifacts(failed.info.run_id, "luigiflow/traceback.txt", str(tmp_path))
    assert "gate" in pathlib.Path(trace).read_text()
    assert not task.complete()

    gate.unlink()
    result = lf.build([task])
    assert result.executed == [task]
    statuses = sorted(r.info.status for r in runs_of(client, "Flaky"))
    assert statuses == ["FAILED", "FINISHED"]


def test_missing_declared_artifact_fails_run_naming_it(client):
    class Forgetful(lf.MlflowTask):
        artifacts = {"kept": "kept.json", "forgotten": "forgotten.json"}

        def run_task(self):
            self.save({"kept": 1})

    with pytest.raises(lf.BuildError) as info:
        lf.build([Forgetful()])
    exc = info.value.failures[Forgetful()]
    assert isinstance(exc, lf.ArtifactError)
    assert "'forgotten'" in str(exc) and "Forgetful" in str(exc)
    [run] = runs_of(client, "Forgetful")
    assert run.info.status == "FAILED"


def test_running_and_deleted_runs_never_count(client):
    task = Source(size=9)
    lf.build([task])
    [run] = runs_of(client, "Source")
    client.delete_run(run.info.run_id)
    assert not task.complete()
    # A RUNNING run with the right identity (a crashed worker: its last heartbeat an
    # hour old, so the build does not wait for it as a live lease) does not count either.
    exp = client.get_experiment_by_name("Source")
    crashed_beat = f"{time.time() - 3600:.3f}"
    client.create_run(
        exp.experiment_id,
        tags={IDENTITY_TAG: task.identity, "luigiflow.heartbeat": crashed_beat},
    )
    assert not task.complete()
    result = lf.build([task])
    assert result.executed == [task]


def test_newest_finished_run_wins_among_duplicates(client):
    task = Source(size=2)
    lf.build([task])
    exp = client.get_experiment_by_name("Source")
    later = client.create_run(
        exp.experiment_id,
        start_time=int(time.time() * 1000) + 10_000,
        tags={IDENTITY_TAG: task.identity},
    )
    client.set_terminated(later.info.run_id, "FINISHED")
    assert task.find_run().info.run_id == later.info.run_id


@pytest.mark.slow
def test_sigkill_leaves_no_finished_run_and_next_build_recomputes(client, tmp_path, store):
    marker = tmp_path / "started"
    code = (
        "import luigiflow as lf; from tests.dags import Sleeper;"
        f"lf.build([Sleeper(marker={str(marker)!r}, seconds=60)])"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path)
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert time.time() < deadline, "task never started"
            assert proc.poll() is None, "build exited early"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    [orphan] = runs_of(client, "Sleeper")
    assert orphan.info.status == "RUNNING"
    task = Sleeper(marker=str(marker), seconds=0.01)
    fresh = Sleeper(marker=str(marker), seconds=60)
    assert not fresh.complete()
    assert lf.build([task]).executed == [task]
    # The next build saw the orphan's worker process gone (same host) and retired it.
    statuses = sorted(r.info.status for r in runs_of(client, "Sleeper"))
    assert statuses == ["FINISHED", "KILLED"]


def test_run_task_runs_inside_active_mlflow_run(client):
    seen = {}

    class Fluent(lf.MlflowTask):
        artifacts = {"o": "o.json"}

        def run_task(self):
            seen["active"] = mlflow.active_run().info.run_id
            mlflow.log_metric("fluent_metric", 7.0)  # the user's own MLflow calls land here
            mlflow.log_param("extra", "yes")
            self.save({"o": {}})

    result = lf.build([Fluent()])
    run = client.get_run(result.runs[Fluent()])
    assert seen["active"] == run.info.run_id
    assert run.data.metrics["fluent_metric"] == 7.0
    assert run.data.params["extra"] == "yes"
    assert mlflow.active_run() is None


def test_runs_carry_mlflow_context_tags_and_nest_under_an_active_run(client):
    mlflow.set_experiment("outer")
    with mlflow.start_run() as outer:
        result = lf.build([Source()])
    run = client.get_run(result.runs[Source()])
    assert run.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.type"] == "LOCAL"
    assert run.data.tags["mlflow.runName"] == "Source()"  # the task and its non-default params
    assert (
        mlflow.active_run() is None and client.get_run(outer.info.run_id).info.status == "FINISHED"
    )


def test_seed_is_set_before_run_task(client):
    import random

    import numpy as np

    drawn = {}

    class Random(lf.MlflowTask):
        artifacts = {"o": "o.json"}
        n = luigi.IntParameter()

        def run_task(self):
            drawn[self.n] = (random.random(), float(np.random.rand()))
            self.save({"o": {}})

    lf.build([Random(n=1)])
    random.seed(Random(n=1).seed)
    np.random.seed(Random(n=1).seed)
    assert drawn[1] == (random.random(), float(np.random.rand()))


def test_output_targets_give_local_readable_paths(client):
    lf.build([Middle()])
    target = Middle().output()["doubled"]
    assert target.exists()
    assert os.path.isfile(target.path)
    assert Middle().load_output("doubled") == [0, 2, 4]


def test_load_output_without_run_names_task(store):
    with pytest.raises(lf.ArtifactError, match=r"Source\(size=77\).*no FINISHED run"):
        Source(size=77).load_output()


def test_plain_luigi_build_works(client, tmp_path, monkeypatch):
    book = ledger(tmp_path, monkeypatch)
    assert luigi.build([Leaf(size=2)], local_scheduler=True, log_level="WARNING")
    assert executed(book) == ["Source(2)", "Middle(2,2)", "Leaf(2,2,x)"]
    assert Leaf(size=2).complete()


@pytest.mark.slow
def test_luigi_command_line_works(client, tmp_path, store):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "luigi",
            "--module",
            "tests.dags",
            "Leaf",
            "--size",
            "6",
            "--local-scheduler",
            "--log-level",
            "WARNING",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert Leaf(size=6).complete()
    assert Leaf(size=6).load_output() == str(sum(n * 2 for n in range(6)))


def test_luigi_config_sets_parameters(client, tmp_path):
    (tmp_path / "luigi.cfg").write_text("[Source]\nsize=11\n")
    luigi.configuration.LuigiConfigParser._instance = None
    luigi.configuration.get_config().read(str(tmp_path / "luigi.cfg"))
    try:
        assert Source().size == 11
    finally:
        luigi.configuration.LuigiConfigParser._instance = None
