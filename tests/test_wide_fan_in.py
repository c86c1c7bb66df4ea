"""A fan-in of any width: its lineage is recorded whole and its run description fits
MLflow's limit (no truncation, no warning)."""

from __future__ import annotations

import json
import logging

import pytest

import luigiflow as lf
from luigiflow._store import schema
from tests.wide_tasks import WideGather

pytestmark = pytest.mark.slow  # builds 33 tasks


def test_a_wide_fan_in_lists_its_whole_lineage_without_truncation(client, caplog, capfd):
    caplog.set_level(logging.WARNING)
    task = WideGather(width=32)
    result = lf.build([task])
    run = client.get_run(result.runs[task])
    assert run.info.status == "FINISHED"
    note = run.data.tags[schema.NOTE_TAG]
    assert len(note) <= schema.MAX_TAG_LENGTH
    assert note.endswith(f"`luigiflow show {run.info.run_id}`")  # whole, not cut
    assert f"more: all 32 upstream runs are listed in `{schema.LINEAGE_FILE}`" in note
    path = client.download_artifacts(run.info.run_id, schema.LINEAGE_FILE)
    with open(path, encoding="utf-8") as f:
        lineage = json.load(f)
    upstream = {k: v for k, v in run.data.tags.items() if k.startswith("luigiflow.upstream.")}
    assert {name: rec["run_id"] for name, rec in lineage.items()} == {
        name: upstream[schema.upstream_tag(name)] for name in lineage
    }
    assert len(lineage) == 32
    shown = "\n".join(r.getMessage() for r in caplog.records) + "".join(capfd.readouterr())
    assert "truncated" not in shown, shown


def test_a_narrow_fan_in_lists_every_upstream_in_its_description(client):
    task = WideGather(width=2)
    run = client.get_run(lf.build([task]).runs[task])
    note = run.data.tags[schema.NOTE_TAG]
    assert note.count("- an_upstream_named") == 2 and "more:" not in note
    assert schema.LINEAGE_FILE not in [
        a.path for a in client.list_artifacts(run.info.run_id, "luigiflow")
    ]
