"""`luigiflow gc` removes only luigiflow's own dead runs, asks first, and counts freed
bytes once per file it really frees (hard links included)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest

import luigiflow as lf
from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of


def _all_run_ids(client) -> set[str]:
    from mlflow.entities import ViewType

    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, run_view_type=ViewType.ALL, max_results=10_000)
    return {r.info.run_id for r in runs}


def _colleague_runs(client, tmp_path: pathlib.Path) -> tuple[str, str]:
    """A colleague's RUNNING run (started an hour ago, no heartbeat) and FAILED run, each
    with an artifact, in their own experiment: nothing luigiflow made."""
    exp = client.create_experiment("colleague")
    hour_ago = int((time.time() - 3600) * 1000)
    note = tmp_path / "notes.txt"
    note.write_text("colleague's work")
    running = client.create_run(exp, start_time=hour_ago).info.run_id
    failed = client.create_run(exp, start_time=hour_ago).info.run_id
    for run_id in (running, failed):
        client.log_artifact(run_id, str(note))
    client.set_terminated(failed, "FAILED", end_time=hour_ago + 1000)
    return running, failed


def _artifact_dir(client, run_id: str) -> pathlib.Path:
    uri = client.get_run(run_id).info.artifact_uri
    return pathlib.Path(uri.replace("file://", ""))


def _luigiflow_failed_run(client, tmp_path: pathlib.Path) -> str:
    from tests.dags import Flaky

    gate = tmp_path / "gate"
    gate.write_text("closed")
    with pytest.raises(lf.BuildError):
        lf.build([Flaky(gate=str(gate))])
    [failed] = runs_of(client, "Flaky")
    return failed.info.run_id


@pytest.mark.slow
def test_gc_never_touches_runs_luigiflow_did_not_make(client, tmp_path):
    running, failed = _colleague_runs(client, tmp_path)
    ours = _luigiflow_failed_run(client, tmp_path)

    out = cli("gc", "--yes", cwd=tmp_path, env=os.environ).stdout
    assert ours in out and running not in out and failed not in out
    remaining = _all_run_ids(client)
    assert ours not in remaining
    assert {running, failed} <= remaining
    assert client.get_run(running).info.status == "RUNNING"
    for run_id in (running, failed):
        assert (_artifact_dir(client, run_id) / "notes.txt").read_text() == "colleague's work"


@pytest.mark.slow
def test_gc_without_a_terminal_needs_yes(client, tmp_path):
    ours = _luigiflow_failed_run(client, tmp_path)
    out = cli("gc", cwd=tmp_path, env=os.environ, check=False)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "--yes" in last and "Traceback" not in out.stderr
    assert ours in _all_run_ids(client)  # nothing removed


def _gc_in_terminal(tmp_path: pathlib.Path, answer: bytes) -> tuple[int, str]:
    """Run `luigiflow gc` on a pseudo-terminal and type `answer` at its question."""
    import pty

    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "luigiflow.cli", "gc"],
        cwd=tmp_path,
        stdin=child,
        stdout=child,
        stderr=child,
        close_fds=True,
    )
    os.close(child)
    seen = b""
    deadline = time.time() + 300
    answered = False
    while time.time() < deadline:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if not answered and b"[y/N]" in seen:
            os.write(main, answer + b"\n")
            answered = True
    os.close(main)
    return proc.wait(timeout=120), seen.decode(errors="replace")


@pytest.mark.slow
def test_gc_asks_in_a_terminal(client, tmp_path):
    ours = _luigiflow_failed_run(client, tmp_path)
    code, text = _gc_in_terminal(tmp_path, b"n")
    assert code != 0 and ours in text
    assert ours in _all_run_ids(client)  # declined: nothing removed
    code, text = _gc_in_terminal(tmp_path, b"y")
    assert code == 0, text
    assert ours not in _all_run_ids(client)


@pytest.mark.slow
def test_gc_counts_hard_linked_bytes_once(client, tmp_path):
    from tests.dags import Leaf

    lf.build([Leaf(size=2), Leaf(size=4)])
    first, second = Leaf(size=2).find_run(), Leaf(size=4).find_run()
    for run in (first, second):
        client.delete_run(run.info.run_id)
    a, b = _artifact_dir(client, first.info.run_id), _artifact_dir(client, second.info.run_id)
    # One 1 MiB file linked into both dead runs: removing both frees it once.
    (a / "shared.bin").write_bytes(os.urandom(1 << 20))
    os.link(a / "shared.bin", b / "shared.bin")
    # A file also linked from outside the dead runs: removing them frees nothing of it.
    kept = tmp_path / "kept.bin"
    kept.write_bytes(os.urandom(1 << 20))
    os.link(kept, a / "kept.bin")

    inodes: dict[int, int] = {}
    for folder in (a, b):
        for path in folder.rglob("*"):
            st = path.stat()
            if path.is_file() and path.name != "kept.bin":
                inodes[st.st_ino] = st.st_size
    expected = sum(inodes.values())

    out = cli("gc", "--yes", cwd=tmp_path, env=os.environ).stdout
    assert f"freed {expected} bytes" in out, out
    assert kept.read_bytes() and not a.exists() and not b.exists()
