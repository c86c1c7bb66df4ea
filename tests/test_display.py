"""Tables that fit a terminal, task help, and the graph printed once or exported."""

from __future__ import annotations

import json
import os

import pytest

import luigiflow as lf
from tests.conftest import luigiflow_cli as cli
from tests.dags import Gather
from tests.everyday_dags import Scored

pytestmark = pytest.mark.slow  # starts servers or subprocesses (see scripts/test --fast)


def narrow_cli(*args, cwd, columns=80):
    return cli(*args, cwd=cwd, env=dict(os.environ, COLUMNS=str(columns)))


def test_runs_table_fits_80_columns_with_short_ids_and_readable_metrics(client, tmp_path):
    result = lf.build([Scored(logic=logic) for logic in ("plain", "standardized", "pca")])
    ids = list(result.runs.values())
    out = narrow_cli("runs", "Scored", cwd=tmp_path).stdout
    assert all(len(line) <= 80 for line in out.splitlines()), out
    for run_id in ids:
        assert run_id[:8] in out and run_id not in out
    assert "0.917446" in out  # roc_auc of plain: digits, never an ellipsis
    for line in out.splitlines():  # a long parameter value may be cut, a metric never
        assert all("…" not in cell for cell in line.split()[-5:]), out
    full = cli("runs", "Scored", "--full", cwd=tmp_path, env=dict(os.environ, COLUMNS="200"))
    assert all(run_id in full.stdout for run_id in ids)
    listed = json.loads(cli("runs", "Scored", "--format", "json", cwd=tmp_path).stdout)
    assert {r["run_id"] for r in listed} == set(ids)


def test_show_accepts_the_short_id_a_table_prints(client, tmp_path):
    result = lf.build([Scored()])
    run_id = next(iter(result.runs.values()))
    out = cli("show", run_id[:8], cwd=tmp_path).stdout
    assert "Scored" in out and "roc_auc" in out


def test_task_help_lists_parameters_types_defaults_choices_and_docstring(tmp_path, store):
    out = cli("run", "--module", "tests.everyday_dags", "Scored", "--help", cwd=tmp_path).stdout
    assert "A model with several long-valued metrics" in out
    assert "--logic" in out and "one of pca, plain, standardized" in out
    assert out.count("standardized") == 1  # Luigi's own "Choices: {...}" is not repeated
    assert "--retrieved-on" in out and "2026-01-01" in out and "date" in out.lower()
    assert "--alpha" in out and "float" in out.lower()
    assert "--algorithm" in out and "logreg" in out


def test_plan_prints_each_task_once(client, tmp_path):
    out = cli("plan", "--module", "tests.dags", "Gather", "--width", "3", cwd=tmp_path).stdout
    lines = out.splitlines()
    for label in ("Gather(width=3)", "Fan(index=0)", "Fan(index=2)", "Source(size=3)"):
        full = [line for line in lines if label in line and "above" not in line]
        assert len(full) == 1, out
    assert out.count("no run of this task yet") == 1  # Source's reason, once
    assert len([line for line in lines if "shown above" in line]) == 2


def test_show_prints_each_upstream_run_once(client, tmp_path):
    result = lf.build([Gather(width=3)])
    root = result.runs[result.roots[0]]
    out = cli("show", root, cwd=tmp_path).stdout
    assert out.count("numbers (numbers.json") == 1, out  # Source's artifacts, shown once
    assert len([line for line in out.splitlines() if "above" in line]) == 2


def test_graph_export_mermaid_and_dot(client, tmp_path):
    words = ["--module", "tests.dags", "Gather", "--width", "3"]
    mermaid = cli("plan", *words, "--format", "mermaid", cwd=tmp_path).stdout
    assert mermaid.startswith("flowchart")
    assert mermaid.count("-->") == 6  # Source -> 3 Fans -> Gather
    assert "Fan(index=2)" in mermaid
    dot = cli("plan", *words, "--format", "dot", cwd=tmp_path).stdout
    assert dot.startswith("digraph")
    assert dot.count("->") == 6
