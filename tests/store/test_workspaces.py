"""MLflow workspaces (MLflow 3.10+): the SQL read and write paths see exactly what MLflow's
client sees, differentially, on a store where two workspaces hold same-named experiments.

Each setting is probed in a fresh process: MLflow's client picks its workspace-aware
store once per process, as a user's command does."""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import subprocess
import sys

import pytest

import luigiflow as lf
from luigiflow._store import current
from tests.conftest import REPO, add_run
from tests.dags import Leaf, Source

pytestmark = pytest.mark.slow

PROBE = r"""
import json, sys
from luigiflow._store import sqlite_reads
from luigiflow._store.mlflow_store import MlflowStore

uri, run_ids = sys.argv[1], sys.argv[2].split(",")

def answers(store):
    try:
        out = {"experiments": sorted([e.experiment_id, e.name] for e in store.experiments())}
        for name in ("Source", "Middle", "Leaf"):
            exp = store.experiment_id(name)
            runs = [] if exp is None else [r.info.run_id for r in store.all_runs(exp)]
            out[name] = [exp, runs]
        out["found"] = sorted(store.get_runs(run_ids))
        return out
    except Exception as exc:
        return {"refused": str(exc).splitlines()[0]}

print(json.dumps([answers(sqlite_reads.SqliteStore(uri)), answers(MlflowStore(uri))]))
"""


def probe(uri: str, run_ids: list[str], **env: str) -> tuple[dict, dict]:
    """(the SQL path's answers, MLflow client's) in a process with `env`."""
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, uri, ",".join(run_ids)],
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    ours, theirs = json.loads(out.stdout.strip().splitlines()[-1])
    return ours, theirs


def cli(*args: str, cwd: pathlib.Path, **env: str):
    return subprocess.run(
        [sys.executable, "-m", "luigiflow.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_two_workspaces_with_same_named_experiments_read_and_write_as_mlflow(
    store: str, tmp_path: pathlib.Path
):
    db = tmp_path / "mlflow.db"
    team_b = lf.build([Leaf()]).runs
    failed = add_run(current.get_store(store), Source(size=8), "FAILED").info.run_id
    with sqlite3.connect(db) as conn:  # team B's experiments, as `mlflow` moves them
        conn.execute("INSERT INTO workspaces (name) VALUES ('teamB')")
        conn.execute("UPDATE experiments SET workspace = 'teamB' WHERE experiment_id != 0")
    ids = [*team_b.values(), failed]
    on = {"MLFLOW_ENABLE_WORKSPACES": "true"}

    # Workspaces off: MLflow refuses the store; so does luigiflow, in one line.
    ours, theirs = probe(store, ids)
    assert "refused" in theirs and "refused" in ours, (ours, theirs)
    assert "MLFLOW_ENABLE_WORKSPACES=true" in ours["refused"] and "teamB" in ours["refused"]
    out = cli("runs", "Leaf", cwd=tmp_path)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "MLFLOW_ENABLE_WORKSPACES" in out.stderr

    # The default workspace: team B's experiments and runs do not exist.
    ours, theirs = probe(store, ids, **on, MLFLOW_WORKSPACE="default")
    assert ours == theirs and ours["Leaf"] == [None, []] and ours["found"] == [], ours
    # A build executes every task into new experiments of the default workspace...
    out = cli(
        "run", "--module", "tests.dags", "Leaf", cwd=tmp_path, **on, MLFLOW_WORKSPACE="default"
    )
    assert out.returncode == 0 and "executed 3, reused 0" in out.stdout, out.stdout + out.stderr
    ours, theirs = probe(store, ids, **on, MLFLOW_WORKSPACE="default")
    assert ours == theirs and len(ours["Leaf"][1]) == 1, ours
    assert ours["Leaf"][1][0] not in ids
    # ...and gc does not offer team B's failed run for deletion.
    out = cli("gc", "--dry-run", cwd=tmp_path, **on, MLFLOW_WORKSPACE="default")
    assert out.returncode == 0 and failed[:8] not in out.stdout, out.stdout

    # Team B sees its own runs only, the same through both paths.
    mine, theirs = probe(store, ids, **on, MLFLOW_WORKSPACE=" teamB ")
    assert mine == theirs and sorted(mine["found"]) == sorted(ids), mine
    assert mine["Leaf"][1] == [team_b[Leaf()]]
    assert mine["Leaf"][0] != ours["Leaf"][0]  # two experiments named Leaf
    out = cli("gc", "--dry-run", cwd=tmp_path, **on, MLFLOW_WORKSPACE="teamB")
    assert out.returncode == 0 and failed[:8] in out.stdout, out.stdout

    # On, without a workspace: MLflow's client cannot choose one; neither does luigiflow.
    out = cli("runs", "Leaf", cwd=tmp_path, **on)
    assert out.returncode != 0 and "MLFLOW_WORKSPACE" in out.stderr, out.stderr
