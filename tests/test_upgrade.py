"""Upgrading luigiflow: runs record the release that made them, and runs of an older
store format (another identity formula) are named as such by `run`, `diff` and
`reproduce`, never as "code changed"."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

import luigiflow as lf
from luigiflow._ops import lineage, reproduce
from luigiflow._store import schema
from tests.conftest import luigiflow_cli, runs_of
from tests.dags import Leaf

TASK = Leaf(size=2, factor=5, label="u")


def _as_made_by_format_1(client) -> dict[str, str]:
    """Turn every FINISHED run into what release 0.1.0 left: no store-format or version
    tag, and an identity from the old formula. Returns family -> run id."""
    made = {}
    for family in ("Source", "Middle", "Leaf"):
        [run] = runs_of(client, family, status="FINISHED")
        run_id = run.info.run_id
        client.delete_tag(run_id, schema.STORE_FORMAT_TAG)
        client.delete_tag(run_id, schema.VERSION_TAG)
        client.set_tag(run_id, schema.IDENTITY_TAG, "0" + run.data.tags[schema.IDENTITY_TAG][1:])
        made[family] = run_id
    return made


def test_runs_record_the_luigiflow_version(client):
    lf.build([TASK])
    [run] = runs_of(client, "Leaf")
    assert run.data.tags[schema.VERSION_TAG] == lf.__version__
    assert importlib.metadata.version("luigiflow") == lf.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", lf.__version__)  # SemVer
    assert lf.__version__ != "0.1.0"  # the release that changed the identity formula


def test_rerun_diff_and_reproduce_name_the_format_change(client):
    lf.build([TASK])
    old = _as_made_by_format_1(client)

    result = lf.build([TASK])
    assert len(result.executed) == 3
    assert set(result.rerun_after_format_change().values()) == {1}
    assert len(result.rerun_after_format_change()) == 3

    new_root = result.runs[TASK]
    chain = lineage.diff(old["Leaf"], new_root)
    assert chain.steps and all(s.formats == (1, 2) for s in chain.steps)
    assert all(s.code is None for s in chain.steps)

    old_run = lineage.get_run(old["Leaf"])
    found = reproduce.differences(old_run, reproduce.task_from_run(old_run))
    assert any("identity formula changed (store format 1 → 2" in line for line in found)
    assert not any("source changed" in line or "code changed" in line for line in found)


def test_an_unchanged_rebuild_names_no_format_change(client):
    lf.build([TASK])
    lf.build([Leaf(size=2, factor=6, label="u")])  # a parameter change, same format
    assert lf.build([Leaf(size=2, factor=7, label="u")]).rerun_after_format_change() == {}


@pytest.mark.slow
def test_run_and_diff_commands_say_identity_formula_changed(client, tmp_path):
    args = ("--module", "tests.dags", "Leaf", "--size", "2", "--factor", "5", "--label", "u")
    luigiflow_cli("run", *args, cwd=tmp_path)
    old = _as_made_by_format_1(client)
    out = luigiflow_cli("run", *args, cwd=tmp_path).stdout
    assert "executed 3, reused 0" in out
    assert "3 of the executed tasks ran again with the same parameters" in out
    assert "identity formula changed (store format 1 → 2" in out
    [new_root] = [r for r in runs_of(client, "Leaf") if r.info.run_id != old["Leaf"]]
    diff = luigiflow_cli("diff", old["Leaf"], new_root.info.run_id, cwd=tmp_path).stdout
    assert "identity formula changed (store format 1 → 2)" in diff
    assert "code changed" not in diff
