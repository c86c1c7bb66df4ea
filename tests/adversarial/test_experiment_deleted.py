"""A task whose experiment is deleted while it runs records its run in the successor
experiment (issue 28 item 13).

Deleting an experiment (the MLflow UI, `mlflow experiments delete`) deletes its runs
too, and the task running in it failed with MLflow's "must be in the 'active' state".
On the embedded store the run now goes on in the experiment that succeeds the deleted
one (where the next build would put it); through MLflow's client, which cannot move a
run, the task fails with one line saying what happened and what to do.
"""

from __future__ import annotations

import mlflow
import pytest

import luigiflow as lf
from luigiflow._store import current, schema, sqlite_reads


class DeletedMidRun(lf.MlflowTask):
    """Its experiment is deleted while the body runs."""

    artifacts = {"value": "value.json"}

    def run_task(self) -> None:
        run = mlflow.active_run()
        mlflow.MlflowClient().delete_experiment(run.info.experiment_id)
        self.save({"value": 41}, metrics={"score": 0.9})


def test_a_run_whose_experiment_is_deleted_midway_is_recorded_in_the_successor(
    store: str, client
) -> None:
    result = lf.build([DeletedMidRun()])
    run = client.get_run(result.runs[DeletedMidRun()])
    deleted = client.get_experiment_by_name("DeletedMidRun")
    assert deleted.lifecycle_stage == "deleted"
    successor = schema.successor_experiment("DeletedMidRun", deleted.experiment_id)
    assert run.info.experiment_id == client.get_experiment_by_name(successor).experiment_id
    assert (run.info.status, run.info.lifecycle_stage) == ("FINISHED", "active")
    assert run.data.metrics["score"] == 0.9
    assert DeletedMidRun().load_output("value") == 41
    assert lf.build([DeletedMidRun()]).executed == []  # the next build reuses it


def test_through_mlflows_client_it_fails_in_one_line(store: str) -> None:
    store_ = current.get_store(store)
    assert isinstance(store_, sqlite_reads.SqliteStore)
    store_.direct_writes = False
    with pytest.raises(lf.BuildError) as raised:
        lf.build([DeletedMidRun()])
    [error] = raised.value.failures.values()
    assert isinstance(error, lf.LuigiflowError)
    assert "experiment 'DeletedMidRun' was deleted while the task ran" in str(error)
    assert "\n" not in str(error)
