"""Sibling tasks that consume the same upstream artifact record the same dataset input at
the same moment; MLflow's check-then-insert of a dataset is not atomic, and one task used
to FAIL on `UNIQUE constraint failed: datasets...` (the README's main job did, on a fresh
store). The race is made deterministic here: both processes are released together."""

from __future__ import annotations

import multiprocessing

from luigiflow._store import current
from luigiflow._store.port import DatasetRef

ROUNDS = 15


def _log(uri: str, run_id: str, barrier, errors) -> None:
    store = current.get_store(uri)
    for i in range(ROUNDS):
        ref = DatasetRef(name=f"up.a{i}", digest=f"{i:036d}", source=f"runs:/up{i}/a.json")
        barrier.wait(timeout=60)
        try:
            store.log_inputs(run_id, [ref])
        except Exception as exc:
            errors.put(f"{run_id}: {exc}"[:300])


def test_two_runs_record_one_new_dataset_at_once(store):
    s = current.get_store(store)
    exp = s.experiment_id("Use", create=True)
    runs = [s.create_run(exp, f"Use(k={k})", {}).info.run_id for k in range(2)]
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_log, args=(store, r, barrier, errors)) for r in runs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures, "\n".join(failures)
    assert all(p.exitcode == 0 for p in procs)
    from mlflow import MlflowClient

    for run_id in runs:  # each run links every dataset
        assert len(MlflowClient(store).get_run(run_id).inputs.dataset_inputs) == ROUNDS
