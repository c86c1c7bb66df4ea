"""Team mode and reliability with real processes: luigid, mlflow server (SQLite and
PostgreSQL), concurrent builds, killed workers, a server that goes away, and gc."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import luigiflow_cli as cli
from tests.conftest import luigiflow_cli_at_once, runs_of
from tests.servers import luigid, mlflow_server, postgres, shared_mlflow, start_mlflow, stop

pytestmark = [pytest.mark.xdist_group("servers"), pytest.mark.slow]


def server_env(url: str, tmp_path: pathlib.Path) -> dict[str, str]:
    return dict(
        os.environ,
        MLFLOW_TRACKING_URI=url,
        LUIGIFLOW_CACHE_DIR=str(tmp_path / "cache"),
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="20",
    )


def server_client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url)


def test_example_against_sqlite_server_with_luigid(store, tmp_path, request, tmp_path_factory):
    # The shared server (tests/servers.py): the example's experiments are this test's own.
    url, artifacts = shared_mlflow(request.config, tmp_path_factory)
    with luigid(tmp_path) as scheduler:
        env = server_env(url, tmp_path)
        start = time.time()
        out = cli(
            "run",
            "--module",
            "examples.tabular",
            "Evaluate",
            "--algorithm",
            "rf",
            "--scheduler-url",
            scheduler,
            cwd=tmp_path,
            env=env,
        )
        elapsed = time.time() - start
        assert "executed 5, reused 0, failed 0" in out.stdout
        client = server_client(url)
        [evaluation] = runs_of(client, "tabular-evaluate", "FINISHED")
        assert evaluation.info.artifact_uri.startswith("mlflow-artifacts:")
        assert 0.8 < evaluation.data.metrics["roc_auc"] <= 1.0
        # artifacts went through the proxy into the server's destination folder
        assert list(artifacts.rglob("report.json")) and list(artifacts.rglob("model.joblib"))
        # downstream tasks read upstream artifacts through the local download cache
        assert list((tmp_path / "cache" / "artifacts").rglob("test.npz"))
        again = cli(
            "run",
            "--module",
            "examples.tabular",
            "Evaluate",
            "--algorithm",
            "rf",
            "--scheduler-url",
            scheduler,
            cwd=tmp_path,
            env=env,
        )
        assert "executed 0, reused 5" in again.stdout
    print(f"\nexample chain (5 tasks) against mlflow server + luigid: {elapsed:.1f}s")


def test_postgresql_backed_server(store, tmp_path):
    with postgres() as pg_uri, mlflow_server(pg_uri, tmp_path / "pg-artifacts") as url:
        env = server_env(url, tmp_path)
        cli("run", "--module", "tests.dags", "Leaf", "--size", "4", cwd=tmp_path, env=env)
        client = server_client(url)
        [leaf] = runs_of(client, "Leaf", "FINISHED")
        assert leaf.data.metrics["total"] == 12.0
        assert (
            leaf.data.tags["luigiflow.upstream.middle"] == runs_of(client, "Middle")[0].info.run_id
        )
        again = cli("run", "--module", "tests.dags", "Leaf", "--size", "4", cwd=tmp_path, env=env)
        assert "executed 0, reused 3" in again.stdout


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrent_builds_with_central_scheduler_run_each_task_once(client, tmp_path, processes):
    ledger = tmp_path / "ledger"
    env = dict(os.environ, LEDGER=str(ledger), TASK_PAUSE="0.3")
    with luigid(tmp_path) as scheduler:
        outputs = luigiflow_cli_at_once(
            *("run", "--module", "tests.dags", "Gather", "--width", "6", "--workers", "2"),
            *("--scheduler-url", scheduler),
            processes=processes,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )
    counts = collections.Counter(ledger.read_text().split())
    assert counts == collections.Counter(
        {"Gather": 1, "Source(3)": 1, **{f"Fan({i})": 1 for i in range(6)}}
    )
    finished = runs_of(client, "Fan", "FINISHED")
    assert len(finished) == 6 and len({r.data.tags["luigiflow.identity"] for r in finished}) == 6
    # every process reports the whole graph with the same run ids
    tables = [out for out, _ in outputs]
    gather_run = runs_of(client, "Gather", "FINISHED")[0].info.run_id
    assert all(gather_run in table for table in tables), tables
    print(
        f"\n{processes} processes: 8 tasks, {len(ledger.read_text().split())} executions, "
        f"{sum(len(runs_of(client, e)) for e in ('Fan', 'Gather', 'Source'))} runs, 0 duplicates"
    )


def test_concurrent_builds_without_scheduler_stay_consistent(client, tmp_path):
    env = dict(os.environ, TASK_PAUSE="0.2")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "luigiflow.cli",
                "run",
                "--module",
                "tests.dags",
                "Gather",
                "--width",
                "6",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    import luigiflow as lf
    from tests.dags import Fan, Gather

    for task in [Gather(width=6), *(Fan(index=i) for i in range(6))]:
        runs = [
            r
            for r in runs_of(client, task.get_experiment_name(), "FINISHED")
            if r.data.tags["luigiflow.identity"] == task.identity
        ]
        assert runs, task
        newest = max(runs, key=lambda r: (r.info.start_time, -int(r.info.run_id, 16)))
        assert task.find_run().info.run_id == newest.info.run_id  # deterministic pick
    listed = json.loads(cli("runs", "Fan", "--format", "json", cwd=tmp_path, env=os.environ).stdout)
    per_identity = collections.Counter(r["identity"] for r in listed)
    for row in listed:
        assert row["duplicate"] == (per_identity[row["identity"]] > 1)
    assert lf.build([Gather(width=6)]).executed == []


def test_killed_worker_is_recomputed_and_its_orphan_retired(client, tmp_path, monkeypatch):
    marker = tmp_path / "started"
    env = dict(os.environ, LUIGIFLOW_HEARTBEAT_S="0.2")
    code = (
        "import luigiflow as lf; from tests.dags import Sleeper;"
        f"lf.build([Sleeper(marker={str(marker)!r}, seconds=60)])"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env)
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        [alive] = runs_of(client, "Sleeper")

        def beat() -> float:
            return float(client.get_run(alive.info.run_id).data.tags["luigiflow.heartbeat"])

        first_beat = beat()
        while beat() <= first_beat:  # it beats again (every 0.2 s) while its task runs
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    monkeypatch.setenv("LUIGIFLOW_STALE_AFTER_S", "1")
    last_beat = beat()
    while time.time() - last_beat <= 1.5:  # until its 1 s lease has passed, with margin
        time.sleep(0.05)
    import luigiflow as lf
    from tests.dags import Sleeper

    task = Sleeper(marker=str(marker), seconds=0.01)
    assert lf.build([task]).executed == [task]
    runs = {r.info.run_id: r for r in runs_of(client, "Sleeper")}
    orphan = runs[alive.info.run_id]
    assert orphan.info.status == "KILLED"
    assert "abandoned" in orphan.data.tags["luigiflow.error"]
    assert sorted(r.info.status for r in runs.values()) == ["FINISHED", "KILLED"]


def test_server_going_away_mid_build_fails_clearly_and_recovers(store, tmp_path):
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    artifacts = tmp_path / "artifacts"
    proc, url = start_mlflow(backend, artifacts)
    port = url.rsplit(":", 1)[1]
    try:
        env = server_env(url, tmp_path)
        env["KILL_PGID"] = str(proc.pid)
        out = cli(
            "run", "--module", "tests.faulty", "KillsServer", cwd=tmp_path, env=env, check=False
        )
        assert out.returncode == 1
        assert f"cannot reach the MLflow tracking server at {url}" in out.stderr
        assert "Traceback" not in out.stderr
        proc.wait(timeout=15)
        proc, url2 = start_mlflow(backend, artifacts, port=int(port))
        assert url2 == url
        client = server_client(url)
        assert runs_of(client, "KillsServer", "FINISHED") == []
        env.pop("KILL_PGID")
        again = cli("run", "--module", "tests.faulty", "KillsServer", cwd=tmp_path, env=env)
        assert "executed 1" in again.stdout
        [done] = runs_of(client, "KillsServer", "FINISHED")
        assert {f.path for f in client.list_artifacts(done.info.run_id)} >= {"big.json"}
    finally:
        stop(proc)


def test_gc_removes_deleted_and_failed_runs_only(client, tmp_path):
    import luigiflow as lf
    from tests.dags import Flaky, Leaf

    lf.build([Leaf(size=2), Leaf(size=3)])
    gate = tmp_path / "gate"
    gate.write_text("closed")
    with pytest.raises(lf.BuildError):
        lf.build([Flaky(gate=str(gate))])
    deleted = Leaf(size=2).find_run()
    client.delete_run(deleted.info.run_id)
    [failed] = runs_of(client, "Flaky")
    deleted_dir = pathlib.Path(deleted.info.artifact_uri.replace("file://", ""))
    assert deleted_dir.exists()

    dry = cli("gc", "--dry-run", cwd=tmp_path, env=os.environ).stdout
    assert deleted.info.run_id in dry and failed.info.run_id in dry and "would free" in dry
    assert deleted_dir.exists()

    out = cli("gc", "--yes", cwd=tmp_path, env=os.environ).stdout
    assert "2 run(s), freed" in out and int(out.split("freed ")[1].split()[0]) > 0
    assert not deleted_dir.exists()
    from mlflow.entities import ViewType

    remaining = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], run_view_type=ViewType.ALL
    )
    ids = {r.info.run_id for r in remaining}
    assert deleted.info.run_id not in ids and failed.info.run_id not in ids
    assert Leaf(size=3).load_output() == "6"  # a live FINISHED result is untouched
    assert len(ids) == 5  # Leaf(3), Middle x2, Source x2
