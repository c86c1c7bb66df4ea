"""Several `luigiflow run` clients started at once on one graph, as a team starts the
documented command on several machines: with a central scheduler (`luigid`) and without
(the lease on the store), two clients with one worker and one with two. Every client
exits 0 and names the root's run; every task body runs once (counted by the bodies, in
a ledger file), and every task has one FINISHED run.

The graph is the chain Source -> Middle -> Leaf with a pause in each body, so that at
every step one client runs the only runnable task while the others have nothing left
to take: the moment Luigi gives up on a task running elsewhere.
"""

from __future__ import annotations

import collections
import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import runs_of
from tests.servers import luigid

pytestmark = [pytest.mark.xdist_group("servers"), pytest.mark.slow]

WORKERS = (1, 1, 2)  # one client each
EXPECTED = collections.Counter({"Source(5)": 1, "Middle(5,2)": 1, "Leaf(5,2,x)": 1})


def _clients_build_the_chain(client, tmp_path: pathlib.Path, scheduler: str | None) -> None:
    ledger = tmp_path / "ledger"
    env = dict(os.environ, LEDGER=str(ledger), TASK_PAUSE="0.5")
    args = [sys.executable, "-m", "luigiflow.cli", "run", "--module", "tests.dags", "Leaf"]
    args += ["--size", "5"] + (["--scheduler-url", scheduler] if scheduler else [])
    procs = [
        subprocess.Popen(
            [*args, "--workers", str(workers)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for workers in WORKERS
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(WORKERS), outputs
    assert collections.Counter(ledger.read_text().split()) == EXPECTED
    for experiment in ("Source", "Middle", "Leaf"):
        assert len(runs_of(client, experiment, "FINISHED")) == 1, experiment
    leaf = runs_of(client, "Leaf", "FINISHED")[0].info.run_id
    assert all(leaf in out for out, _ in outputs), outputs  # every client names the root's run


def test_clients_under_luigid_wait_for_tasks_running_elsewhere(client, tmp_path):
    with luigid(tmp_path) as scheduler:
        _clients_build_the_chain(client, tmp_path, scheduler)


def test_clients_without_luigid_wait_on_the_lease(client, tmp_path):
    _clients_build_the_chain(client, tmp_path, None)
