"""A client whose root another client is building under `luigid`: it waits for that
run (one line naming it), reports the task as built by another worker and exits 0 —
also when Luigi, having offered a task another worker just finished, calls it "not run".
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import runs_of
from tests.servers import luigid

pytestmark = [pytest.mark.xdist_group("servers"), pytest.mark.slow]

BOUND_S = 120


# The late client calls lf.build (raise_on_failure=True): Luigi's "not run" must not
# raise when the root has its FINISHED run.
LATE = (
    "import sys, luigiflow as lf; from tests.team.tasks import Held;"
    "r = lf.build([Held()], scheduler_url=sys.argv[1]);"
    "print('by another worker:', r.by_other_workers, r.runs[Held()])"
)


def _start(tmp_path, scheduler, env, name, task="Held"):
    out = (tmp_path / f"{name}.out").open("w")
    command = ["-m", "luigiflow.cli", "run", "--module", "tests.team.tasks", task]
    command += ["--scheduler-url", scheduler]
    return subprocess.Popen(
        [sys.executable, *(["-c", LATE, scheduler] if name == "late" else command)],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_until(what, condition, procs):
    deadline = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < deadline, what
        assert all(p.poll() is None for p in procs), [p.returncode for p in procs]
        time.sleep(0.1)


def test_clients_wait_for_a_root_another_client_builds(client, tmp_path):
    release = tmp_path / "release"
    ledger = tmp_path / "ledger"
    env = dict(os.environ, TEAM_RELEASE=str(release), LEDGER=str(ledger))
    with luigid(tmp_path) as scheduler:
        holder = _start(tmp_path, scheduler, env, "holder")
        procs = [holder]
        try:
            _wait_until("Held runs", release.with_suffix(".running").exists, procs)
            # A waits on the live run; B offers Held to luigid only once it is DONE.
            waiter = _start(tmp_path, scheduler, env, "waiter")
            procs.append(waiter)
            _wait_until(
                "the waiter says what it waits for",
                lambda: "waiting for Held()" in (tmp_path / "waiter.out").read_text(),
                procs,
            )
            late = _start(tmp_path, scheduler, dict(env, TEAM_HOLD_SCHEDULING=scheduler), "late")
            procs.append(late)
            codes = [p.wait(timeout=BOUND_S) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    outputs = {n: (tmp_path / f"{n}.out").read_text() for n in ("holder", "waiter", "late")}
    assert codes == [0, 0, 0], outputs
    assert sorted(ledger.read_text().split()) == ["Held", "Upstream"]
    [held] = runs_of(client, "Held", "FINISHED")
    assert f"by another worker: [Held()] {held.info.run_id}" in outputs["late"]
    assert "by another worker" in outputs["waiter"] and held.info.run_id[:8] in outputs["waiter"]
    assert "reused 2 (1 built by another worker now), failed 0" in outputs["waiter"]
    [line] = [x for x in outputs["waiter"].splitlines() if "waiting for Held()" in x]
    assert held.info.run_id in line


def test_a_dead_machines_task_is_taken_over_within_its_lease(client, tmp_path, monkeypatch):
    """Client A dies (SIGKILL) while running Held; client B, waiting downstream of it in
    Luigi's keep-alive loop, runs Held itself once luigid has marked A's task FAILED (its
    retry_delay is Luigi's default 900 s: B must not wait for it)."""
    config = tmp_path / "luigid.cfg"
    # What docs/team.md recommends for luigid, shortened for the test: a worker silent for
    # 3 s is dead, and the scheduler prunes on every request instead of once a minute.
    # B's keep-alive worker with nothing to run leaves Luigi after 2 s instead of
    # luigiflow's 20 s and offers the graph again (a user's setting, honoured): that
    # offer, not luigid's retry_delay, still has to turn A's FAILED task back to PENDING.
    config.write_text(
        "[scheduler]\nworker_disconnect_delay = 3\nprune_on_get_work = true\n"
        "[worker]\nmax_keep_alive_idle_duration = 2 seconds\n"
    )
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(config))
    release = tmp_path / "release"
    ledger = tmp_path / "ledger"
    env = dict(os.environ, TEAM_RELEASE=str(release), LEDGER=str(ledger))
    with luigid(tmp_path) as scheduler:
        dying = _start(tmp_path, scheduler, env, "dying")
        procs = [dying]
        try:
            _wait_until("Held runs", release.with_suffix(".running").exists, procs)
            taker = _start(tmp_path, scheduler, env, "taker", task="AfterHeld")
            procs.append(taker)
            _wait_until("B schedules", lambda: "AfterHeld" in _task_list(scheduler), procs)
            dying.kill()
            dying.wait(timeout=BOUND_S)
            release.touch()
            assert taker.wait(timeout=BOUND_S) == 0, (tmp_path / "taker.out").read_text()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    assert sorted(ledger.read_text().split()) == ["AfterHeld", "Held", "Held", "Upstream"]
    [killed] = runs_of(client, "Held", "KILLED")
    assert "is gone" in killed.data.tags["luigiflow.error"]
    assert len(runs_of(client, "Held", "FINISHED")) == 1


def _task_list(scheduler: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{scheduler}/api/task_list?data=%7B%7D", timeout=10) as r:
        return r.read().decode()
