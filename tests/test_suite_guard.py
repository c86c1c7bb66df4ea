"""The fast tier stays fast: a test that starts a Python process without being marked
slow fails (tests/conftest.py's audit hook), whatever way it starts the process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # runs pytest in a subprocess

TESTS = """
import os
import subprocess
import sys

import luigi
import pytest

import luigiflow as lf


def test_unmarked_python():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_unmarked_shell_running_python():
    subprocess.run("true && python3 -c pass", shell=True, check=True)


def test_unmarked_os_system_with_env_prefix():
    assert os.system("A=1 env python3 -c pass") == 0


def test_unmarked_venv_command():
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "luigiflow"), "--help"],
                   check=True, capture_output=True)


class Spawns(lf.MlflowTask):
    n = luigi.IntParameter()

    def run_task(self):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        self.save({})


def test_unmarked_python_in_a_forked_task_process(store):
    lf.build([Spawns(n=1), Spawns(n=2)], workers=2)


@pytest.mark.slow
def test_marked_python():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_unmarked_git_and_shell():
    subprocess.run(["git", "--version"], check=True, capture_output=True)
    subprocess.run("echo python > /dev/null", shell=True, check=True)


def test_unmarked_store_fixture(store):
    pass
"""


def test_a_test_starting_python_unmarked_fails_and_marked_or_other_programs_pass(tmp_path):
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_spawns.py").write_text(TESTS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    env.pop("PYTEST_XDIST_WORKER", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-rA",
            "-q",
            "-n",
            "0",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_spawns.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = out.stdout.splitlines()
    failed = {line.split("::")[1].split()[0] for line in lines if line.startswith("FAILED")}
    passed = {line.split("::")[1].split()[0] for line in lines if line.startswith("PASSED")}
    assert failed == {
        "test_unmarked_python",
        "test_unmarked_shell_running_python",
        "test_unmarked_os_system_with_env_prefix",
        "test_unmarked_venv_command",
        "test_unmarked_python_in_a_forked_task_process",
    }, out.stdout + out.stderr
    # The store fixture's one-off template migration is the session's, not the test's.
    assert passed == {
        "test_marked_python",
        "test_unmarked_git_and_shell",
        "test_unmarked_store_fixture",
    }, out.stdout
    assert "started 1 Python process(es) but is not marked slow" in out.stdout
