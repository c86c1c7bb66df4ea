"""Code edits made visible (docs/identity.md, "When a task is reused"): `run` says what
`plan` says about reused runs whose code changed since, `runs` shows which rows differ in
code, and after a revert `--rerun-changed` reuses the older runs whose code matches."""

from __future__ import annotations

import json
import re

import pytest

import luigiflow as lf
from tests.conftest import runs_of
from tests.project_shapes import cli, edit, make_project

pytestmark = pytest.mark.slow  # builds in subprocesses

EDIT = ("len(row) * NGRAMS", "len(row) * NGRAMS + 1")  # featurize(), read by Featurize only


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
