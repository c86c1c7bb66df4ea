"""Upgrading luigiflow: runs record the release that made them, and runs of an older
store format (another identity formula) are named as such by `run`, `diff` and
`reproduce`, never as "code changed"."""

from __future__ import annotations

import importlib.metadata
import json
import re

import pytest

import luigiflow as lf
from luigiflow._ops import lineage, reproduce, upgrade
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


# ----- luigiflow upgrade: re-key what can be proven --------------------------------------


def test_upgrade_rekeys_provable_runs_so_a_build_reuses_them(client):
    lf.build([TASK])
    old = _as_made_by_format_1(client)
    old_identity = client.get_run(old["Source"]).data.tags[schema.IDENTITY_TAG]
    # Interrupted after the first writes of the Source run: the old identity is already
    # kept aside and the new one written, the format tag not yet.
    client.set_tag(old["Source"], schema.IDENTITY_BEFORE_TAG, old_identity)
    client.set_tag(old["Source"], schema.IDENTITY_TAG, "interrupted")

    done = upgrade.upgrade()
    assert sorted(r.info.run_id for r, _ in done.rekeyed) == sorted(old.values())
    assert done.kept == []
    source = client.get_run(old["Source"]).data.tags
    assert source[schema.IDENTITY_BEFORE_TAG] == old_identity  # not the interrupted one
    assert source[schema.STORE_FORMAT_TAG] == str(schema.STORE_FORMAT)

    again = lf.build([TASK])
    assert again.executed == []
    assert again.runs[TASK] == old["Leaf"]
    second = upgrade.upgrade()  # idempotent: nothing left of an older format
    assert second.rekeyed == [] and second.kept == []


def test_upgrade_keeps_what_it_cannot_prove_with_the_reason(client):
    lf.build([TASK])
    old = _as_made_by_format_1(client)
    middle = client.get_run(old["Middle"]).data.tags
    facts = json.loads(middle[schema.TASK_TAG])
    facts["code_fingerprint"] = "f" * 64  # made by other code than today's
    client.set_tag(old["Middle"], schema.TASK_TAG, json.dumps(facts))

    done = upgrade.upgrade()
    assert [r.info.run_id for r, _ in done.rekeyed] == [old["Source"]]
    reasons = {r.info.run_id: why for r, why in done.kept}
    assert reasons[old["Middle"]].startswith("its code changed since (fingerprint ffffffffffff")
    assert reasons[old["Leaf"]] == f"upstream middle (run {old['Middle'][:8]}) is not re-keyed"
    tag = json.loads(client.get_run(old["Leaf"]).data.tags[schema.UPGRADE_TAG])
    assert tag == {"not_rekeyed": reasons[old["Leaf"]]}

    rebuilt = lf.build([TASK])
    assert sorted(t.get_task_family() for t in rebuilt.executed) == ["Leaf", "Middle"]


@pytest.mark.slow
def test_upgrade_command_dry_run_changes_nothing(client, tmp_path):
    lf.build([TASK])
    old = _as_made_by_format_1(client)
    dry = luigiflow_cli("upgrade", "--dry-run", cwd=tmp_path).stdout
    assert "would re-key 3, not re-keyable 0" in dry
    assert schema.STORE_FORMAT_TAG not in client.get_run(old["Leaf"]).data.tags
    out = luigiflow_cli("upgrade", cwd=tmp_path).stdout
    assert f"re-keyed Leaf run {old['Leaf']}" in out
    assert "re-keyed 3, not re-keyable 0" in out
    assert "re-keyed 0, not re-keyable 0 (every run is of the current store format)" in (
        luigiflow_cli("upgrade", cwd=tmp_path).stdout
    )
