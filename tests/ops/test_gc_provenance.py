"""gc keeps provenance: a run that a staying run (FINISHED, or RUNNING and alive)
resumed from or consumed is never collected while that run stays, and a dry run says
why it keeps it."""

from __future__ import annotations

import pytest

import luigiflow as lf
from luigiflow._ops import gc
from luigiflow.cli import _store_admin
from tests.conftest import runs_of
from tests.dags import Leaf
from tests.training import Stumbling


def test_gc_keeps_the_attempt_a_finished_run_resumed_from(client, monkeypatch, capsys):
    monkeypatch.setenv("FAIL_AT_EPOCH", "2")
    with pytest.raises(lf.BuildError):
        lf.build([Stumbling()], log_level="CRITICAL")
    [attempt] = runs_of(client, "Stumbling", "FAILED")
    garbage, kept = gc.collect()
    assert [g.run_id for g in garbage] == [attempt.info.run_id]  # nothing came from it yet

    monkeypatch.delenv("FAIL_AT_EPOCH")
    run_id = lf.build([Stumbling()], log_level="CRITICAL").runs[Stumbling()]
    garbage, kept = gc.collect()
    assert garbage == []
    assert [k.run_id for k in kept] == [attempt.info.run_id]
    assert f"kept: run {run_id} (FINISHED) resumed from it" in kept[0].reason

    _store_admin.gc(dry_run=True, older_than=None, task=None, backend_store_uri=None)
    out = " ".join(capsys.readouterr().out.split())
    assert f"keeping {attempt.info.run_id}" in out and "resumed from it" in out
    assert "0 run(s), would free 0 bytes" in out

    client.delete_run(run_id)  # once the finished run goes, so may its attempt
    assert {g.run_id for g in gc.collect()[0]} == {run_id, attempt.info.run_id}


def test_gc_keeps_a_deleted_upstream_run_a_finished_run_consumed(client):
    result = lf.build([Leaf()], log_level="CRITICAL")
    [middle] = runs_of(client, "Middle")
    client.delete_run(middle.info.run_id)
    garbage, kept = gc.collect()
    assert garbage == []
    [held] = kept
    assert held.run_id == middle.info.run_id
    leaf = result.runs[Leaf()]
    assert f"kept: run {leaf} (FINISHED) consumed it (upstream 'middle')" in held.reason

    client.delete_run(leaf)
    assert {g.run_id for g in gc.collect()[0]} == {leaf, middle.info.run_id}
