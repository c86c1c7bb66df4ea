"""Early cutoff (docs/identity.md): a task whose upstream re-ran with byte-identical
outputs takes the results of its earlier run instead of computing them again."""

from __future__ import annotations

import luigi

import luigiflow as lf

calls: list[str] = []


def new_version(monkeypatch, version: int) -> None:
    monkeypatch.setattr(Fit, "version", version)
    # Luigi hands out the same instance for the same parameters: a fresh one computes
    # its identity again.
    luigi.task_register.Register.clear_instance_cache()


class Fit(lf.MlflowTask):
    artifacts = {"model": "model.json"}
    version = 1
    weights = luigi.IntParameter(default=3)

    def run_task(self) -> None:
        calls.append("Fit")
        self.save({"model": {"weights": list(range(self.weights))}}, metrics={"loss": 0.5})


class Score(lf.MlflowTask):
    artifacts = {"score": "score.json"}

    def requires(self):
        return {"fit": Fit()}

    def run_task(self) -> None:
        calls.append("Score")
        model = self.load("fit", "model")
        self.save({"score": {"sum": sum(model["weights"])}}, metrics={"sum": sum(model["weights"])})


class Report(lf.MlflowTask):
    artifacts = {"report": "report.txt"}

    def requires(self):
        return {"score": Score()}

    def run_task(self) -> None:
        calls.append("Report")
        self.save({"report": f"sum {self.load('score', 'score')['sum']}"})


def test_a_rerun_upstream_with_identical_outputs_cuts_off_its_downstream(store, monkeypatch):
    from mlflow import MlflowClient

    calls.clear()
    first = lf.build([Report()])
    assert calls == ["Fit", "Score", "Report"]
    old_score = first.runs[Score()]

    # Fit's definition changes (its identity too), its output bytes do not.
    new_version(monkeypatch, 2)
    calls.clear()
    second = lf.build([Report()])
    assert calls == ["Fit"]  # nothing downstream of Fit computed again
    assert second.executed == [Fit()]
    assert set(second.reused) == {Score(), Report()}
    client = MlflowClient(store)
    score = client.get_run(second.runs[Score()])
    assert score.info.status == "FINISHED" and second.runs[Score()] != old_score
    assert score.data.tags["luigiflow.cutoff_from"] == old_score
    # lineage is exact: the run records the Fit run it stands on now
    assert score.data.tags["luigiflow.upstream.fit"] == second.runs[Fit()]
    assert score.data.metrics["sum"] == 3
    assert Report().load_output("report") == "sum 3"

    calls.clear()
    third = lf.build([Report()])  # the cut-off runs complete their tasks by identity
    assert calls == [] and third.executed == []


def test_an_upstream_whose_outputs_changed_is_never_cut_off(store, monkeypatch):
    calls.clear()
    lf.build([Report()])

    def run_task(self) -> None:
        calls.append("Fit")
        self.save({"model": {"weights": [5, 5]}}, metrics={"loss": 0.4})

    monkeypatch.setattr(Fit, "run_task", run_task)
    new_version(monkeypatch, 2)
    calls.clear()
    build = lf.build([Report()])
    assert calls == ["Fit", "Score", "Report"]
    assert len(build.executed) == 3
    assert Report().load_output("report") == "sum 10"
