"""A sweep's record and its points: each point run names its sweep (tag, parent run,
a link in its description) and the sweep run lists its points."""

from __future__ import annotations

import pathlib

from click.testing import CliRunner

from luigiflow.cli import app
from tests.conftest import runs_of


def grid(folder: pathlib.Path, depths: list[int], name: str = "grid.toml") -> pathlib.Path:
    path = folder / name
    path.write_text(
        '[pipeline]\nmodule = "tests.luigi_users.search_tasks"\ntask = "Tune"\n'
        '[sweep]\nmetric = "score"\n'
        f"[sweep.grid]\nlr = [0.1, 0.01]\ndepth = {depths}\n"
    )
    return path


def run_config(path: pathlib.Path, *extra: str) -> str:
    out = CliRunner().invoke(app, ["run", "--config", str(path), *extra])
    assert out.exit_code == 0, out.output
    return out.output


def test_point_runs_nest_under_their_sweep_and_link_to_it_with_parallel_workers(client, tmp_path):
    run_config(grid(tmp_path, [2, 3]), "--workers", "2")
    [sweep] = runs_of(client, "sweeps", "FINISHED")
    sweep_id = sweep.info.run_id
    points = runs_of(client, "Tune", "FINISHED")
    assert len(points) == 4
    for point in points:
        assert point.data.tags["luigiflow.sweep.run"] == sweep_id
        assert point.data.tags["mlflow.parentRunId"] == sweep_id
        note = point.data.tags["mlflow.note.content"]
        assert "recorded by luigiflow" in note  # the run's own description is kept
        assert f"#/experiments/{sweep.info.experiment_id}/runs/{sweep_id}" in note
    listed = sweep.data.tags["mlflow.note.content"]
    for point in points:
        assert f"#/experiments/{point.info.experiment_id}/runs/{point.info.run_id}" in listed


def test_a_point_reused_by_a_second_sweep_keeps_its_first_sweep_as_parent(client, tmp_path):
    run_config(grid(tmp_path, [2]))
    [first] = runs_of(client, "sweeps", "FINISHED")
    run_config(grid(tmp_path, [2, 5], "grown.toml"))
    [second] = [
        r for r in runs_of(client, "sweeps", "FINISHED") if r.info.run_id != first.info.run_id
    ]
    points = runs_of(client, "Tune", "FINISHED")
    by_depth = {
        depth: {
            (p.data.tags["mlflow.parentRunId"], p.data.tags["luigiflow.sweep.run"])
            for p in points
            if p.data.params["depth"] == depth
        }
        for depth in ("2", "5")
    }
    assert by_depth == {
        "2": {(first.info.run_id, first.info.run_id)},
        "5": {(second.info.run_id, second.info.run_id)},
    }
    # The second sweep lists all four of its points, the two it reused included.
    listed = second.data.tags["mlflow.note.content"]
    assert sum(p.info.run_id in listed for p in points) == 4
    again = run_config(grid(tmp_path, [2, 5], "grown.toml"))
    assert f"sweep record: run {second.info.run_id}" in again
    assert len(runs_of(client, "sweeps")) == 2
