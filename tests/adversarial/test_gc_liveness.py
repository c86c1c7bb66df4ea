"""`gc` looks at each run again right before removing it (issue 28 item 5).

`gc` lists abandoned runs (no heartbeat), asks, then removes them. A worker that
resumed in between (a laptop woken, a SIGSTOPped process continued) used to lose its
run and artifacts; the look is now repeated under the store's write lock, in the
transaction that marks the run KILLED before its removal.
"""

from __future__ import annotations

import time

import luigiflow as lf
from luigiflow._ops import gc
from luigiflow._store import current, schema
from tests.conftest import add_run


class Slow(lf.MlflowTask):
    artifacts = {"value": "value.json"}

    def run_task(self) -> None:
        self.save({"value": 1})


def test_gc_never_removes_a_run_whose_worker_resumed_after_the_listing(store: str, client) -> None:
    an_hour_ago = time.time() - 3600
    resumed, dead = (
        add_run(
            current.get_store(),
            Slow(),
            status=None,
            start_time=int(an_hour_ago * 1000),
            worker=f"farhost@feedbeef0000.1/{pid}/abcd1234",
            tags={schema.HEARTBEAT_TAG: f"{an_hour_ago:.3f}"},
        ).info.run_id
        for pid in (4242, 4343)
    )
    client.log_text(resumed, "partial work", "partial.txt")
    listed = gc.find_garbage()
    assert {g.run_id for g in listed} == {resumed, dead}  # both look abandoned

    client.set_tag(resumed, schema.HEARTBEAT_TAG, f"{time.time():.3f}")  # its worker resumed
    gc.remove(listed)

    kept = client.get_run(resumed)
    assert kept.info.status == "RUNNING"
    assert [a.path for a in client.list_artifacts(resumed)] == ["partial.txt"]
    assert dead not in {r.info.run_id for r in _all_runs(client)}  # the dead one went


def _all_runs(client) -> list:
    from mlflow.entities import ViewType

    exp = client.get_experiment_by_name("Slow")
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
