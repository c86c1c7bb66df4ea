"""Mistakes at the command line that used to print tracebacks or exit 0: one line, exit 1."""

from __future__ import annotations

import os

import pytest

from tests.conftest import luigiflow_cli as cli

pytestmark = pytest.mark.slow  # CLI subprocesses


def local_env() -> dict[str, str]:
    """This process's environment on the store of the working folder (another test of the
    same worker may have pointed MLFLOW_TRACKING_URI at a server it has since stopped)."""
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


@pytest.mark.parametrize("uri", ["sqlte:///x.db", "garbage", "file:///tmp/a-file-store"])
def test_a_wrong_tracking_uri_is_one_line(uri, tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    out = cli("runs", "Anything", cwd=tmp_path, env=env, check=False)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert f"MLFLOW_TRACKING_URI={uri!r}" in lines[0] and "sqlite:///" in lines[0]
    assert not (tmp_path / "mlruns").exists()  # nothing was created


def test_ui_on_a_busy_port_is_one_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = cli("ui", "--port", str(port), cwd=tmp_path, env=local_env(), check=False)
    assert out.returncode == 1, out.stderr[-2000:]
    [line] = out.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and "--port" in line


def test_a_missing_required_parameter_names_it_and_the_option(tmp_path):
    (tmp_path / "files.py").write_text(
        "import luigi\nimport luigiflow as lf\n\n\nclass CountLines(lf.MlflowTask):\n"
        '    artifacts = {"o": "o.json"}\n    input_path = luigi.Parameter()\n'
        "    n = luigi.IntParameter(default=1)\n\n    def run_task(self):\n"
        '        self.save({"o": 1})\n'
    )
    out = cli(
        "run", "--module", "files.py", "CountLines", cwd=tmp_path, env=local_env(), check=False
    )
    assert out.returncode == 1
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("ParameterError: CountLines:"), out.stderr
    assert "'input_path'" in line and "--input-path" in line and "kwargs" not in line
    assert "'n'" not in line  # it has a default


@pytest.mark.parametrize("command", [["runs", "Source"], ["show", "abc123"], ["gc", "--yes"]])
def test_a_read_command_in_a_folder_without_a_store_creates_nothing(command, tmp_path):
    out = cli(*command, cwd=tmp_path, env=local_env(), check=False)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("TrackingError: no tracking store at") and "mlflow.db" in line
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no lock file


def test_a_value_of_the_wrong_type_names_the_option_and_the_expected_form(tmp_path):
    (tmp_path / "typed.py").write_text(
        "import luigi\nimport luigiflow as lf\n\n\nclass Total(lf.MlflowTask):\n"
        '    artifacts = {"o": "o.json"}\n    n = luigi.IntParameter(default=1)\n'
        "    factor = luigi.FloatParameter(default=1.0)\n"
        "    flag = luigi.BoolParameter(default=False)\n"
        "    day = luigi.DateParameter(default=None)\n\n    def run_task(self):\n"
        '        self.save({"o": 1})\n'
    )
    words = ["--n", "abc", "--factor", "x1", "--flag=maybe", "--day", "2026-13-01"]
    out = cli(
        "run", "--module", "typed.py", "Total", *words, cwd=tmp_path, env=local_env(), check=False
    )
    assert out.returncode == 1
    line = out.stderr.strip().splitlines()[-1]  # after "typed.py imported as module typed"
    assert line.startswith("ParameterError: Total: "), out.stderr
    for expected in (
        "--n expects an integer, got 'abc'",
        "--factor expects a number, got 'x1'",
        "--flag expects a bool (true or false), got 'maybe'",
        "--day expects a date (YYYY-MM-DD), got '2026-13-01'",
    ):
        assert expected in line, line
    assert "invalid literal" not in line and "ValueError" not in line
