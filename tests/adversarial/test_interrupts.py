"""Ctrl-C with several workers returns at once and signals only its own processes
(issue 28 item 14).

Luigi's TaskProcess reaps its process through psutil, so `multiprocessing` lists it
as alive forever: the build waited its whole 60 s grace after Ctrl-C, then sent
SIGKILL to pids it no longer owned (on a busy machine, an unrelated process). The
build here runs under a wrapper that logs every `os.kill` of its main process and
whether the target was, at that moment, a running child of it.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import runs_of

# Every os.kill of the build's main process, with whether the target was then a running
# (unreaped) child of it; then `luigiflow run ...` as the command line does.
WRAPPER = """
import json, os, runpy, sys
log, main = sys.argv.pop(1), os.getpid()
real_kill = os.kill
def kill(pid, sig):
    if os.getpid() == main:
        try:
            own = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            own = False
        with open(log, "a") as f:
            f.write(json.dumps({"pid": pid, "sig": int(sig), "own_child": own}) + "\\n")
    return real_kill(pid, sig)
os.kill = kill
sys.argv[0] = "luigiflow"
runpy.run_module("luigiflow.cli", run_name="__main__")
"""


@pytest.mark.slow
def test_ctrl_c_with_two_workers_returns_at_once_and_signals_only_its_children(
    client, tmp_path: pathlib.Path
) -> None:
    markers, log = tmp_path / "markers", tmp_path / "kills.jsonl"
    args = ["run", "--module", "tests.exec_tasks", "Nappers", "--markers", str(markers)]
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(log), *args, "--workers", "2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the group signal below is what Ctrl-C in a terminal sends
    )
    try:
        deadline = time.monotonic() + 180
        while not ((markers / "left").exists() and (markers / "right").exists()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the tasks never started"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        interrupted = time.monotonic()
        out, err = proc.communicate(timeout=120)
        returned_after = time.monotonic() - interrupted
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out + err
    # A behaviour bound, not a benchmark: the old build waited its whole 60 s grace.
    assert returned_after < 30, (returned_after, err)
    kills = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert all(k["own_child"] for k in kills), kills
    assert {r.info.status for r in runs_of(client, "Napper")} == {"KILLED"}
