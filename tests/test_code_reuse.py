"""Code edits made visible (docs/identity.md, "When a task is reused"): `run` says what
`plan` says about reused runs whose code changed since, `runs` shows which rows differ in
code, and after a revert `--rerun-changed` reuses the older runs whose code matches."""

from __future__ import annotations

import json
import re

import pytest

import luigiflow as lf
from tests.conftest import runs_of
from tests.project_shapes import cli, edit, entries, executed, make_project, plan_json

pytestmark = pytest.mark.slow  # builds in subprocesses

EDIT = ("len(row) * NGRAMS", "len(row) * NGRAMS + 1")  # featurize(), read by Featurize only


def _words(text: str) -> str:
    """Text as one line of single spaces (the console wraps at its width)."""
    return " ".join(text.split())


def _code_column(out: str) -> list[str]:
    """The `code` cells of a `luigiflow runs` table, top to bottom (run ids have 8 hex
    digits, short fingerprints 7)."""
    assert "code" in out.split(), out
    return [m for line in out.splitlines() for m in re.findall(r"\b[0-9a-f]{7}\b", line)]


def test_runs_shows_which_runs_differ_in_code(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "pipeline", "Featurize")
    assert "code" not in cli(project, "runs", "Featurize").stdout.split()  # one fingerprint
    edit(project / "src" / "featurization.py", *EDIT)
    cli(project, "run", "--module", "pipeline", "Featurize", "--rerun-changed")

    old, new = (
        json.loads(r.data.tags["luigiflow.task"])["code_fingerprint"]
        for r in runs_of(client, "Featurize")
    )
    assert old != new
    out = cli(project, "runs", "Featurize").stdout
    assert _code_column(out) == [new[:7], old[:7]]
    assert "duplicate" in out.split()  # same identity: the code column says why they differ
    rows = json.loads(cli(project, "runs", "Featurize", "--format", "json").stdout)
    assert [r["code"] for r in rows] == [new, old]
    assert lf.runs("Featurize")["code"].tolist() == [new[:7], old[:7]]
    assert "code" not in cli(project, "runs", "Split").stdout.split()


def test_run_says_what_plan_says_of_a_reused_run_whose_code_changed(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "pipeline", "All")
    edit(project / "src" / "featurization.py", *EDIT)

    reason = next(
        r for r in entries(plan_json(project, "All"))["Featurize"]["reasons"] if "code" in r
    )
    assert "src/featurization.py: featurize()" in reason
    out = cli(project, "run", "--module", "pipeline", "All").stdout
    assert "executed 0, reused 6" in out
    [first] = runs_of(client, "Featurize")
    assert f"Featurize: reused run {first.info.run_id[:8]}; {reason}" in _words(out)
    assert "Train:" not in out  # its own code did not change


def test_after_a_revert_rerun_changed_reuses_the_runs_whose_code_matches(client, tmp_path):
    project = make_project(tmp_path)
    helpers = project / "src" / "featurization.py"
    cli(project, "run", "--module", "pipeline", "All")
    first = {e: runs_of(client, e)[0].info.run_id for e in ("Featurize", "Train", "All")}
    edit(helpers, *EDIT)
    cli(project, "run", "--module", "pipeline", "All", "--rerun-changed")
    edit(helpers, EDIT[1], EDIT[0])  # reverted

    plan = entries(plan_json(project, "All", "--rerun-changed"))
    assert {f: e["status"] for f, e in plan.items()} == dict.fromkeys(plan, "reused")
    assert {f: plan[f]["run_id"] for f in first} == first
    assert (
        f"reused run {first['Featurize']} (its code matches the current code)"
        in (plan["Featurize"]["reasons"])
    )
    out = cli(project, "run", "--module", "pipeline", "All", "--rerun-changed").stdout
    assert "executed 0, reused 6" in out
    assert f"result: luigiflow show {first['All']}" in out
    assert f"Featurize: reused run {first['Featurize']} (its code matches the current code)" in (
        _words(out)
    )
    assert len(runs_of(client, "Featurize")) == 2  # nothing executed

    # Edited again: the newest run's code matches now, and it is the one reused.
    edit(helpers, *EDIT)
    plan = entries(plan_json(project, "All", "--rerun-changed"))
    assert {f: e["status"] for f, e in plan.items()} == dict.fromkeys(plan, "reused")
    newest = runs_of(client, "Featurize")[-1].info.run_id
    assert plan["Featurize"]["run_id"] == newest


def test_after_a_revert_a_downstream_run_on_other_upstream_code_runs_again(client, tmp_path):
    """Train's only run consumed the edited Featurize: with Featurize's older run reused,
    Train runs again on it (lineage stays exact), and plan says so before."""
    project = make_project(tmp_path)
    helpers = project / "src" / "featurization.py"
    cli(project, "run", "--module", "pipeline", "Featurize")
    [first] = runs_of(client, "Featurize")
    edit(helpers, *EDIT)
    cli(project, "run", "--module", "pipeline", "Train", "--rerun-changed")
    edit(helpers, EDIT[1], EDIT[0])  # reverted

    plan = entries(plan_json(project, "Train", "--rerun-changed"))
    assert plan["Featurize"]["run_id"] == first.info.run_id
    assert plan["Train"]["status"] == "will run"
    assert any("than those reused now" in r for r in plan["Train"]["reasons"])
    out = cli(project, "run", "--module", "pipeline", "Train", "--rerun-changed").stdout
    assert executed(out) == {"Train"}
    newest = runs_of(client, "Train")[-1]
    assert newest.data.tags["luigiflow.upstream.features"] == first.info.run_id
