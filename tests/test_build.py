"""build(): every task's run, executed vs reused, failures collected across processes."""

from __future__ import annotations

import luigi
import pytest

import luigiflow as lf
from tests.conftest import runs_of
from tests.dags import Fan, Flaky, Gather, Leaf, Source


@pytest.mark.slow
def test_result_lists_every_task_with_its_run(client):
    result = lf.build([Gather(width=4)], workers=2)
    graph = {Gather(width=4), Source(), *(Fan(index=i) for i in range(4))}
    assert set(result.runs) == graph
    assert set(result.executed) == graph
    assert result.reused == []
    for task, run_id in result.runs.items():
        assert client.get_run(run_id).data.tags["luigiflow.identity"] == task.identity


def test_reused_graph_reports_lineage_runs(client):
    first = lf.build([Gather(width=4)])
    second = lf.build([Gather(width=4)])
    assert second.executed == []
    assert second.runs == first.runs
    assert set(second.reused) == set(first.runs)


@pytest.mark.slow
def test_extending_a_fan_runs_only_new_tasks(client):
    lf.build([Gather(width=3)])
    result = lf.build([Gather(width=5)], workers=2)
    assert set(result.executed) == {Gather(width=5), Fan(index=3), Fan(index=4)}
    assert len(runs_of(client, "Fan")) == 5
    assert len(runs_of(client, "Source")) == 1


@pytest.mark.slow
def test_build_error_carries_exception_with_multiple_workers(client, tmp_path):
    gate = tmp_path / "gate"
    gate.write_text("closed")
    ok, bad = Leaf(size=2), Flaky(gate=str(gate))
    with pytest.raises(lf.BuildError) as info:
        lf.build([ok, bad], workers=2)
    failures = info.value.failures
    assert list(failures) == [bad]
    assert isinstance(failures[bad], RuntimeError)
    assert "closed" in str(failures[bad])
    assert info.value.result.runs[ok]  # the healthy branch still finished
    assert ok.complete()


def test_downstream_of_failure_is_not_run(client, tmp_path):
    gate = tmp_path / "gate"
    gate.write_text("closed")

    class AfterFlaky(lf.MlflowTask):
        artifacts = {"o": "o.json"}

        def requires(self):
            return {"flaky": Flaky(gate=str(gate))}

        def run_task(self):
            self.save({"o": 1})

    with pytest.raises(lf.BuildError):
        lf.build([AfterFlaky()])
    assert runs_of(client, "AfterFlaky") == []


def test_raise_on_failure_false_returns_result(client, tmp_path):
    gate = tmp_path / "gate"
    gate.write_text("closed")
    result = lf.build([Flaky(gate=str(gate))], raise_on_failure=False)
    assert not result.success
    assert list(result.failed) == [Flaky(gate=str(gate))]


def test_bad_arguments(store):
    with pytest.raises(lf.LuigiflowError, match="workers"):
        lf.build([Source()], workers=0)
    with pytest.raises(lf.LuigiflowError, match="scheduler URL"):
        lf.build([Source()], scheduler_url="localhost:8082")
    with pytest.raises(lf.LuigiflowError, match="task instances"):
        lf.build(["Source"])


def test_plain_luigi_task_upstream_is_allowed(client, tmp_path):
    marker = tmp_path / "raw.txt"
    marker.write_text("raw data")

    class RawFile(luigi.ExternalTask):
        def output(self):
            return luigi.LocalTarget(str(marker))

    class ReadsRaw(lf.MlflowTask):
        artifacts = {"o": "o.txt"}

        def requires(self):
            return {"raw": RawFile()}

        def run_task(self):
            with self.input()["raw"].open() as f:
                self.save({"o": f.read()})

    result = lf.build([ReadsRaw()])
    assert ReadsRaw().load_output() == "raw data"
    assert ReadsRaw() in result.runs
