"""Several `luigiflow run` clients without `luigid` share the ready tasks of one graph
instead of waiting on each other's leases: a task another client holds is set aside
while this client runs another (_engine/held.py), and each client orders equally ranked
tasks its own way (luigi_compat's local scheduler).

Two clients, one worker each, on a real `mlflow server`; the two `Meeting`s of the graph
finish only while both execute at once (tests/team/meeting_tasks.py). Before, both
clients took the same `Meeting` first and the second client's only worker waited on the
first one's lease: the meeting never happened.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, runs_of
from tests.servers import shared_mlflow

pytestmark = [pytest.mark.xdist_group("servers"), pytest.mark.slow]


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return shared_mlflow(request.config, tmp_path_factory)[0]


def test_two_clients_without_luigid_execute_two_tasks_at_once(server, tmp_path):
    from mlflow import MlflowClient

    room = tmp_path / "room"
    room.mkdir()
    ledger = tmp_path / "ledger"
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=server,
        LUIGIFLOW_CACHE_DIR=str(tmp_path / "cache"),
        PYTHONPATH=str(REPO),
        LEDGER=str(ledger),
        MEETING_ROOM=str(room),
    )
    args = [sys.executable, "-m", "luigiflow.cli", "run"]
    args += ["--module", "tests.team.meeting_tasks", "Meetings"]
    procs = [
        subprocess.Popen(
            args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    executed = collections.Counter(ledger.read_text().split())
    assert executed == {"Meeting(0)": 1, "Meeting(1)": 1, "Meetings": 1}
    # Each client executed one Meeting (its body ran in the client's own process).
    assert {int(f.name.partition("-")[2]) for f in room.iterdir()} == {p.pid for p in procs}
    client = MlflowClient(tracking_uri=server)
    for experiment in ("Meeting", "Meetings"):
        finished = runs_of(client, experiment, "FINISHED")
        identities = [r.data.tags["luigiflow.identity"] for r in finished]
        assert len(identities) == len(set(identities)) == (2 if experiment == "Meeting" else 1)
