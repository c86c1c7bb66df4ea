"""A KILLED run never becomes FINISHED (issue 28 item 12).

A worker paused past its lease (SIGSTOP, a frozen machine) is judged dead: another
worker marks its run KILLED and does the task. The paused worker, resumed, used to
record its result and flip the run to FINISHED (still tagged "marked it KILLED"), so
the identity had two FINISHED runs. The finishing write now compares and sets the
status, on the SQL path and through MLflow's client; the resumed task fails cleanly.
"""

from __future__ import annotations

import mlflow
import pytest

import luigiflow as lf
from luigiflow._store import current, schema, sqlite_reads
from tests.conftest import runs_of

REASON = "abandoned: no heartbeat from its worker since 0 (luigiflow marked it KILLED)"


class Paused(lf.MlflowTask):
    """Its run is marked KILLED by another worker while the body runs, as when the
    worker was paused past its lease."""

    artifacts = {"value": "value.json"}

    def run_task(self) -> None:
        run_id = mlflow.active_run().info.run_id
        other = mlflow.MlflowClient()  # another worker, on the same store
        other.set_tag(run_id, schema.ERROR_TAG, REASON)
        other.set_terminated(run_id, "KILLED")
        self.save({"value": 1}, metrics={"score": 0.5})


@pytest.mark.parametrize("direct", [True, False], ids=["sql", "mlflow-client"])
def test_a_run_killed_meanwhile_is_never_finished_and_the_task_fails(
    store: str, client, direct: bool
) -> None:
    store_ = current.get_store(store)
    assert isinstance(store_, sqlite_reads.SqliteStore)
    store_.direct_writes = direct
    with pytest.raises(lf.BuildError) as raised:
        lf.build([Paused()])
    [error] = raised.value.failures.values()
    assert isinstance(error, lf.LuigiflowError)
    assert "Paused()" in str(error) and "was marked KILLED by another worker" in str(error)
    [run] = runs_of(client, "Paused")
    assert run.info.status == "KILLED"
    assert run.data.tags[schema.ERROR_TAG] == REASON  # the other worker's reason is kept
    assert "score" not in run.data.metrics  # no result was recorded
    assert mlflow.active_run() is None
