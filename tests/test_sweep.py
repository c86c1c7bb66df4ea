"""Config files and sweeps: shared upstream built once, growth runs only what is new,
every config mistake reported at once, a sweep record with table and plots."""

from __future__ import annotations

import json
import pathlib
import shutil

import pandas as pd
import pytest
from PIL import Image

from tests.conftest import REPO, runs_of
from tests.conftest import luigiflow_cli as cli

pytestmark = pytest.mark.slow  # starts servers or subprocesses (see scripts/test --fast)


def write_sweep(folder: pathlib.Path, algorithms: list[str]) -> pathlib.Path:
    path = folder / "sweep.toml"
    path.write_text(
        '[pipeline]\nmodule = "examples.tabular"\ntask = "Evaluate"\n'
        '[sweep]\nmetric = "roc_auc"\n'
        '[sweep.grid]\nlogic = ["plain", "standardized", "pca"]\n'
        f"algorithm = {json.dumps(algorithms)}\n"
    )
    return path


@pytest.mark.xdist_group("example")
def test_grid_sweep_builds_shared_steps_once_and_grows_incrementally(client, tmp_path):
    config = write_sweep(tmp_path, ["logreg", "rf", "gb"])
    first = cli("run", "--config", str(config), "--workers", "2", cwd=tmp_path)
    assert "executed 23, reused 0" in first.stdout
    counts = {
        e: len(runs_of(client, f"tabular-{e}"))
        for e in ("load", "split", "process", "train", "evaluate")
    }
    assert counts == {"load": 1, "split": 1, "process": 3, "train": 9, "evaluate": 9}
    [sweep] = runs_of(client, "sweeps", "FINISHED")
    table = pd.read_csv(client.download_artifacts(sweep.info.run_id, "results.csv", str(tmp_path)))
    assert len(table) == 9
    stored = {r.info.run_id: r.data.metrics["roc_auc"] for r in runs_of(client, "tabular-evaluate")}
    assert dict(zip(table["run_id"], table["roc_auc"], strict=True)) == pytest.approx(stored)
    assert list(table["roc_auc"]) == sorted(table["roc_auc"], reverse=True)
    assert f"sweep record: run {sweep.info.run_id}" in first.stdout

    plots = pathlib.Path(client.download_artifacts(sweep.info.run_id, "plots", str(tmp_path)))
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["parallel_coordinates.png", "roc_auc_by_algorithm.png", "roc_auc_by_logic.png"]
    for name in names:
        with Image.open(plots / name) as image:
            assert image.format == "PNG"
            assert image.width >= 400 and image.height >= 300
            assert len(image.getcolors(1_000_000) or []) > 10  # not a blank canvas

    again = cli("run", "--config", str(config), cwd=tmp_path)
    assert "executed 0, reused 23" in again.stdout
    assert len(runs_of(client, "sweeps")) == 1  # the unchanged sweep reuses its record

    grown = write_sweep(tmp_path, ["logreg", "rf", "gb", "knn"])
    third = cli("run", "--config", str(grown), "--workers", "2", cwd=tmp_path)
    assert "executed 6, reused 23" in third.stdout
    assert len(runs_of(client, "tabular-train")) == 12
    assert len(runs_of(client, "tabular-evaluate")) == 12
    newest = runs_of(client, "sweeps", "FINISHED")[-1]
    assert newest.data.params["size"] == "12"

    listed = json.loads(
        cli(
            "runs", "Evaluate", "--sweep", sweep.info.run_id, "--format", "json", cwd=tmp_path
        ).stdout
    )
    assert {r["run_id"] for r in listed} == set(table["run_id"])


def test_config_mistakes_are_reported_together(client, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[pipeline]\nmodule = "examples.tabular"\ntask = "Evaluate"\n'
        '[params]\nalgorithm = "xgboost"\ncolour = "red"\n'
        "[steps.Nope]\nx = 1\n"
        '[steps.Split]\ntest_size = "a quarter"\n'
    )
    out = cli("run", "--config", str(bad), cwd=tmp_path, check=False)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("ConfigError:") and "4 problem(s)" in line
    assert "xgboost" in line and "logreg" in line and "knn" in line  # known names listed
    assert "colour" in line and "[steps.Nope]: unknown step" in line
    assert "[steps.Split] test_size: expects a number, got 'a quarter'" in line, line
    assert [e.name for e in client.search_experiments()] == ["Default"]


def test_missing_required_parameter_and_bad_sweep(client, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[pipeline]\nmodule = "tests.dags"\ntask = "AnyValue"\n'
        '[sweep.grid]\nnote_only = "not a list"\n'
    )
    out = cli("plan", "--config", str(bad), cwd=tmp_path, check=False)
    assert out.returncode == 1
    assert "required parameter of AnyValue is missing" in out.stderr
    assert "[sweep.grid] note_only: must be a non-empty list" in out.stderr


def test_random_sweep_is_reproducible(store, tmp_path):
    from luigiflow._ops.sweep import config as _config

    path = tmp_path / "random.toml"
    path.write_text(
        '[pipeline]\nmodule = "tests.dags"\ntask = "Middle"\n'
        "[sweep.random]\nseed = 7\ncount = 5\n"
        "[sweep.random.params]\nsize = {int = [1, 50]}\nfactor = [2, 3, 5]\n"
    )
    first = _config.load(path)
    second = _config.load(path)
    assert first.sweep.combinations == second.sweep.combinations
    assert len(first.sweep.combinations) == 5
    assert all(1 <= c["size"] <= 50 and c["factor"] in (2, 3, 5) for c in first.sweep.combinations)
    assert len(first.tasks()) == 5


def test_a_grown_random_sweep_keeps_every_earlier_point(store, tmp_path):
    from luigiflow._ops.sweep import config as _config

    def sweep(count: int, space: str) -> list[dict]:
        path = tmp_path / f"random{count}.toml"
        path.write_text(
            '[pipeline]\nmodule = "tests.dags"\ntask = "Middle"\n'
            f"[sweep.random]\nseed = 7\ncount = {count}\n[sweep.random.params]\n{space}"
        )
        return _config.load(path).sweep.combinations

    both = "size = {int = [1, 1000]}\nfactor = [2, 3, 5, 7]\n"
    twelve, sixteen = sweep(12, both), sweep(16, both)
    assert sixteen[:12] == twelve
    assert len({tuple(sorted(c.items())) for c in sixteen}) > 12  # new points are new draws
    # A parameter added to the space leaves the others' draws where they were.
    alone = sweep(12, "size = {int = [1, 1000]}\n")
    assert [c["size"] for c in alone] == [c["size"] for c in twelve]


@pytest.mark.xdist_group("example")
def test_a_random_sweep_grown_from_12_to_16_points_reuses_all_12(client, tmp_path):
    def write(count: int) -> pathlib.Path:
        path = tmp_path / "random.toml"
        path.write_text(
            '[pipeline]\nmodule = "tests.dags"\ntask = "Middle"\n'
            f"[sweep.random]\nseed = 3\ncount = {count}\n"
            "[sweep.random.params]\nsize = {int = [1, 10000]}\nfactor = {int = [1, 10000]}\n"
        )
        return path

    cli("run", "--config", str(write(12)), cwd=tmp_path)
    middles = len(runs_of(client, "Middle", "FINISHED"))
    assert middles == 12
    grown = cli("run", "--config", str(write(16)), cwd=tmp_path)
    assert len(runs_of(client, "Middle", "FINISHED")) == 16, grown.stdout


def test_example_configs_are_valid(store, tmp_path):
    from luigiflow._ops.sweep import config as _config

    for name in ("sweep.toml", "experiment.toml"):
        shutil.copy(REPO / "examples" / name, tmp_path / name)
        config = _config.load(tmp_path / name)
        assert config.tasks()


def test_a_misspelt_sweep_metric_is_an_error_naming_the_logged_ones(client, tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text(
        '[pipeline]\nmodule = "tests.dags"\ntask = "Source"\n'
        '[sweep]\nmetric = "sise"\n[sweep.grid]\nsize = [1, 2]\n'
    )
    out = cli("run", "--config", str(config), cwd=tmp_path, check=False)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("ConfigError:") and "'sise'" in line and "did you mean 'size'" in line
    assert len(runs_of(client, "Source")) == 2  # the runs are kept; no sweep record made
    config.write_text(config.read_text().replace('"sise"', '"size"'))
    fixed = cli("run", "--config", str(config), cwd=tmp_path)
    assert "executed 0" in fixed.stdout or "reused" in fixed.stdout, fixed.stdout
    assert len(runs_of(client, "Source")) == 2


def test_a_random_space_written_outside_its_params_table_or_with_bad_bounds_is_refused(
    store, tmp_path
):
    from luigiflow._errors import ConfigError
    from luigiflow._ops.sweep import config as _config

    path = tmp_path / "random.toml"
    path.write_text(
        '[pipeline]\nmodule = "tests.dags"\ntask = "Middle"\n'
        "[sweep.random]\nseed = 3\ncount = 4\nsize = {int = [1, 8]}\n"
        "[sweep.random.params]\nfactor = {int = [8, 1]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        _config.load(path)
    message = str(caught.value)
    assert "[sweep.random]: unknown key(s) size" in message
    assert "[sweep.random.params]" in message
    assert "int = [8, 1]: give [low, high] numbers with low <= high" in message
