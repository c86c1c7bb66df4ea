"""Failures and broken modules diagnosed from the command line, as a user meets them."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of

pytestmark = pytest.mark.slow  # starts servers or subprocesses (see scripts/test --fast)


FAILING_LINE = "tests/everyday_dags.py:25"


def test_a_failing_task_is_reported_once_with_run_file_line_and_next_command(client, tmp_path):
    out = cli("run", "--module", "tests.everyday_dags", "Fails", cwd=tmp_path, check=False)
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert text.count("KeyError: 'movieId'") == 1, text
    [failed] = runs_of(client, "Fails", "FAILED")
    run_id = failed.info.run_id
    assert run_id in text
    assert FAILING_LINE in text  # the user's own line, not luigiflow's
    assert f"luigiflow show {run_id}" in text
    assert "Traceback" not in text


def test_show_of_a_failed_run_prints_error_and_traceback_tail(client, tmp_path):
    cli("run", "--module", "tests.everyday_dags", "Fails", cwd=tmp_path, check=False)
    [failed] = runs_of(client, "Fails", "FAILED")
    out = cli("show", failed.info.run_id, cwd=tmp_path).stdout
    assert "FAILED" in out
    assert "KeyError: 'movieId'" in out
    assert "table[self.column]" in out  # the tail of the stored traceback
    assert "everyday_dags.py" in out


def test_runs_lists_failed_runs_on_request(client, tmp_path):
    cli("run", "--module", "tests.everyday_dags", "Fails", cwd=tmp_path, check=False)
    cli("run", "--module", "tests.everyday_dags", "Fails", "--column", "userId", cwd=tmp_path)
    [failed] = runs_of(client, "Fails", "FAILED")
    [finished] = runs_of(client, "Fails", "FINISHED")

    def listed(*extra):
        out = cli("runs", "Fails", *extra, "--format", "json", cwd=tmp_path).stdout
        return {r["run_id"]: r for r in json.loads(out)}

    assert set(listed()) == {finished.info.run_id}
    failed_rows = listed("--status", "failed")
    assert set(failed_rows) == {failed.info.run_id}
    assert failed_rows[failed.info.run_id]["status"] == "FAILED"
    assert set(listed("--status", "all")) == {failed.info.run_id, finished.info.run_id}
    table = cli("runs", "Fails", "--status", "failed", cwd=tmp_path).stdout
    assert "FAILED" in table and "KeyError" in table


def write_broken_module(folder):
    package = folder / "pipelines"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text(
        "import luigiflow as lf\n\nTABLE = {}\nCOLUMNS = TABLE['columns']\n"
    )
    (package / "good.py").write_text(
        "import luigi\nimport luigiflow as lf\n\n\n"
        "class Hello(lf.MlflowTask):\n"
        "    artifacts = {'out': 'out.json'}\n"
        "    name = luigi.Parameter(default='world')\n\n"
        "    def run_task(self):\n"
        "        self.save({'out': {'hello': self.name}})\n"
    )


def test_a_module_that_fails_to_import_is_one_line_with_file_and_line(client, tmp_path):
    write_broken_module(tmp_path)
    out = cli("run", "--module", "pipelines.broken", "Anything", cwd=tmp_path, check=False)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "pipelines.broken" in lines[0]
    assert re.search(r"pipelines/broken\.py:4\b", lines[0]), lines[0]
    assert "KeyError: 'columns'" in lines[0]
    assert "--debug" in lines[0]

    debug = cli(
        "--debug", "run", "--module", "pipelines.broken", "Anything", cwd=tmp_path, check=False
    )
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "COLUMNS = TABLE['columns']" in debug.stderr


def test_module_given_as_a_file_path(client, tmp_path):
    write_broken_module(tmp_path)
    out = cli("run", "--module", "pipelines/good.py", "Hello", "--name", "you", cwd=tmp_path)
    assert "pipelines.good" in out.stdout + out.stderr  # says which dotted name it used
    [run] = runs_of(client, "Hello", "FINISHED")
    assert json.loads(run.data.tags["luigiflow.task"])["module"] == "pipelines.good"
