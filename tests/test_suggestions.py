"""Misspelt names are one-line errors with "did you mean", never silent wrong answers."""

from __future__ import annotations

import pytest

import luigiflow as lf
from tests.conftest import luigiflow_cli as cli
from tests.dags import Leaf


@pytest.fixture
def leaf_runs(client, tmp_path):
    lf.build([Leaf(size=2), Leaf(size=4)])
    return tmp_path


def one_line_error(out) -> str:
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.mark.slow
def test_unknown_sort_metric(leaf_runs):
    line = one_line_error(cli("runs", "Leaf", "--sort", "totl", cwd=leaf_runs, check=False))
    assert "'totl'" in line and "did you mean 'total'" in line


@pytest.mark.slow
def test_unknown_where_param(leaf_runs):
    line = one_line_error(cli("runs", "Leaf", "--where", "sise=2", cwd=leaf_runs, check=False))
    assert "'sise'" in line and "did you mean 'size'" in line
    assert "factor" in line and "label" in line  # the known ones


@pytest.mark.slow
def test_unknown_task_name(client, tmp_path):
    out = cli("run", "--module", "tests.dags", "Leef", cwd=tmp_path, check=False)
    line = one_line_error(out)
    assert "did you mean 'Leaf'" in line


@pytest.mark.slow
def test_unknown_experiment_for_runs(leaf_runs):
    line = one_line_error(cli("runs", "Leef", cwd=leaf_runs, check=False))
    assert "did you mean 'Leaf'" in line


@pytest.mark.slow
def test_unknown_parameter_on_the_command_line(client, tmp_path):
    out = cli("run", "--module", "tests.dags", "Leaf", "--sise", "3", cwd=tmp_path, check=False)
    assert "did you mean --size" in one_line_error(out)


def test_unknown_parameter_in_python(store):
    with pytest.raises(lf.ParameterError, match="did you mean 'size'"):
        Leaf(sise=3)
