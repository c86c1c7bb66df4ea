"""An MLflow Project entry point as a pipeline stage, in the local environment."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of
from tests.scripts_project import summary

pytestmark = pytest.mark.slow  # runs builds in subprocesses

MLPROJECT = """
name: tables
python_env: python_env.yaml
entry_points:
  load:
    parameters:
      table: {type: string, default: transactions}
      rows: {type: float, default: 2}
    command: "python load.py --table {table} --rows {rows}"
"""

LOAD = """
import argparse
import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--table")
parser.add_argument("--rows", type=float)
args = parser.parse_args()
with mlflow.start_run() as run:            # joins the stage's run, as under `mlflow run`
    mlflow.log_metric("rows_loaded", args.rows)
    mlflow.set_tag("script.run_id", run.info.run_id)
    with open(f"{args.table}.csv", "w") as f:
        f.write("id\\n" + "".join(f"{i}\\n" for i in range(int(args.rows))))
print("loaded", args.table)
"""


def _project(tmp_path, outs: str) -> None:
    project = tmp_path / "tables"
    project.mkdir()
    (project / "MLproject").write_text(MLPROJECT)
    (project / "python_env.yaml").write_text("python: '3.11'\ndependencies: [mlflow]\n")
    (project / "load.py").write_text(textwrap.dedent(LOAD))
    (tmp_path / "pipeline.toml").write_text(
        textwrap.dedent(
            f"""
            [stages.load]
            mlproject = "tables"
            entry_point = "load"
            params = {{ table = "customers", rows = 4 }}
            outs = [{outs}]
            """
        )
    )


def test_mlproject_entry_point_runs_as_a_stage_logging_into_its_run(client, tmp_path):
    _project(tmp_path, '"customers.csv"')
    out = cli("run", "--pipeline", "pipeline.toml", cwd=tmp_path)
    assert summary(out.stdout) == (1, 0, 0)
    (run,) = runs_of(client, "load")
    assert run.info.status == "FINISHED"
    assert run.data.tags["script.run_id"] == run.info.run_id  # one run: the stage's
    assert run.data.metrics["rows_loaded"] == 4.0
    assert run.data.params["table"] == "customers"
    assert run.data.tags["luigiflow.identity"]
    stored = client.download_artifacts(run.info.run_id, "customers.csv")
    assert pathlib.Path(stored).read_text().splitlines() == ["id", "0", "1", "2", "3"]
    again = cli("run", "--pipeline", "pipeline.toml", cwd=tmp_path)
    assert summary(again.stdout) == (0, 1, 0)


def test_only_luigiflow_finishes_the_run_after_verifying_outputs(client, tmp_path):
    # The script ends its run (FINISHED, as mlflow.start_run's context does), but the
    # declared output is missing: the run must end FAILED, never count as complete.
    _project(tmp_path, '"customers.csv", "summary.json"')
    out = cli("run", "--pipeline", "pipeline.toml", cwd=tmp_path, check=False)
    assert out.returncode == 1 and "summary.json" in out.stderr
    (run,) = runs_of(client, "load")
    assert run.info.status == "FAILED"
