"""Task classes sharing one experiment (Kedro's nodes all in `spaceflights`): lf.runs and
`luigiflow runs` tell the families apart, and bad filters are errors, as in the CLI."""

from __future__ import annotations

import pytest

import luigiflow as lf
from tests.conftest import REPO, luigiflow_cli
from tests.luigi_users.wrapped_tasks import Default, Model, Prepare


@pytest.fixture
def built(store: str) -> str:
    lf.build([Default(), Default(alpha=2.0)])
    return store


def test_lf_runs_of_a_class_lists_only_its_family(built: str) -> None:
    frame = lf.runs(Model)
    assert len(frame) == 2
    assert sorted(frame["alpha"]) == ["1.0", "2.0"]
    assert len(lf.runs(Prepare)) == 3
    assert len(lf.find_runs(Model)) == 2


def test_lf_runs_of_a_shared_experiment_has_a_task_column(built: str) -> None:
    frame = lf.runs("spaceflights")
    assert len(frame) == 5
    assert sorted(frame["task"]) == ["Model", "Model", "Prepare", "Prepare", "Prepare"]


@pytest.mark.slow  # starts a Python process (see scripts/test --fast)
def test_lf_runs_raises_on_an_unknown_parameter_as_the_cli_does(built: str) -> None:
    with pytest.raises(lf.ParameterError, match=r"Model.*no parameter 'nonexistent'"):
        lf.runs(Model, where={"nonexistent": 5})
    cli = luigiflow_cli("runs", "Model", "--where", "nonexistent=5", cwd=REPO, check=False)
    assert cli.returncode != 0 and "nonexistent" in cli.stdout + cli.stderr


def test_lf_runs_filters_on_an_upstream_column_it_shows(built: str) -> None:
    frame = lf.runs(Model)
    assert "companies.part" in frame.columns, list(frame.columns)
    kept = lf.runs(Model, where={"companies.part": "companies", "alpha": 2.0})
    assert list(kept["alpha"]) == ["2.0"]
    assert lf.runs(Model, where={"companies.part": "shuttles"}).empty
    with pytest.raises(lf.ParameterError, match=r"companies\.nope"):
        lf.runs(Model, where={"companies.nope": 1})


@pytest.mark.slow  # starts a Python process (see scripts/test --fast)
def test_cli_table_of_a_shared_experiment_stays_readable(built: str) -> None:
    import os

    long_path = "/data/" + "/".join(["spaceflights-raw-companies"] * 4) + ".csv"
    lf.build([Prepare(part=long_path)])
    env = {**os.environ, "COLUMNS": "80"}
    out = luigiflow_cli("runs", "spaceflights", cwd=REPO, env=env)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) <= 2 + 1 + 6, out.stdout  # title, header, rule, one line per run
    header = next(line for line in lines if line.split()[:1] == ["run"])
    assert "task" in header.split(), out.stdout
    assert "Prepare" in out.stdout and "Model" in out.stdout
    assert "…" in out.stdout  # the long path is cut, not folded
