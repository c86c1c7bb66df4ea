"""Without luigid, concurrent processes on one store execute each task exactly once.

Four `luigiflow run` processes with Luigi's local scheduler build the same graph at
once: on one SQLite store, with a delay injected between luigiflow's last check and
its `create_run` (the widest race window), and sharing nothing but an `mlflow server`.
Every process must exit 0 and every identity must have exactly one FINISHED run and
one execution (counted by the task bodies themselves, in a ledger file).
"""

from __future__ import annotations

import collections
import os
import pathlib

import pytest

from tests.conftest import luigiflow_cli_at_once, runs_of
from tests.servers import mlflow_server

PROCESSES = 4
WIDTH = 6
EXPECTED = collections.Counter(
    {"Gather": 1, "Source(3)": 1, **{f"Fan({i})": 1 for i in range(WIDTH)}}
)

# Four `luigiflow run` processes per test: slow.
pytestmark = [pytest.mark.xdist_group("servers"), pytest.mark.slow]


def _race(tmp_path: pathlib.Path, env: dict[str, str]) -> tuple[collections.Counter, list]:
    ledger = tmp_path / "ledger"
    env = dict(env, LEDGER=str(ledger), TASK_PAUSE="0.3")
    outputs = luigiflow_cli_at_once(
        *("run", "--module", "tests.exec_tasks", "Gather", "--width", str(WIDTH)),
        processes=PROCESSES,
        cwd=tmp_path,
        env=env,
    )
    executions = collections.Counter(ledger.read_text().split())
    print(f"\n{PROCESSES} processes, 8 tasks: {sum(executions.values())} executions {executions}")
    return executions, outputs


def _finished_per_identity(client) -> collections.Counter:
    per_identity: collections.Counter = collections.Counter()
    for experiment in ("Source", "Fan", "Gather"):
        for run in runs_of(client, experiment, "FINISHED"):
            if run.info.lifecycle_stage == "active":
                per_identity[run.data.tags["luigiflow.identity"]] += 1
    return per_identity


def _assert_once(client, executions: collections.Counter) -> None:
    assert executions == EXPECTED
    per_identity = _finished_per_identity(client)
    assert len(per_identity) == len(EXPECTED)
    assert set(per_identity.values()) == {1}, per_identity


@pytest.mark.parametrize("delay", ["0", "1.5"])
def test_four_local_schedulers_on_one_sqlite_store_run_each_task_once(client, tmp_path, delay):
    executions, outputs = _race(tmp_path, dict(os.environ, EXEC_CREATE_DELAY_S=delay))
    _assert_once(client, executions)
    gather = runs_of(client, "Gather", "FINISHED")[0].info.run_id
    assert all(gather in out for out, _ in outputs)  # every process reports the one run


def test_four_local_schedulers_with_recheck_off(client, tmp_path):
    executions, _ = _race(tmp_path, dict(os.environ, LUIGIFLOW_RECHECK_S="0"))
    _assert_once(client, executions)


def test_four_processes_sharing_only_an_mlflow_server(store, tmp_path):
    from mlflow import MlflowClient

    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "served") as url:
        env = dict(
            os.environ,
            MLFLOW_TRACKING_URI=url,
            LUIGIFLOW_CACHE_DIR=str(tmp_path / "cache"),
            EXEC_CREATE_DELAY_S="1",
        )
        executions, _ = _race(tmp_path, env)
        _assert_once(MlflowClient(tracking_uri=url), executions)
