"""Programs that are all module `__main__` (scripts run as files, stdin, `-c`, notebooks)
never share runs by accident: two projects each running `python tasks.py` with a `Prep`
of their own, or two different stdin programs, get different identities; classes of
importable modules keep the identities they always had."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from luigiflow._core.identity import compute_identity, encode_value
from tests.dags import Source

TASKS = """
import json
import pathlib

import luigi
import luigiflow as lf


class Prep(lf.MlflowTask):
    artifacts = {"o": "o.json"}
    n = luigi.IntParameter(default=1)

    def run_task(self):
        here = pathlib.Path(__file__).parent
        self.save({"o": (here / "data.txt").read_text()})


if __name__ == "__main__":
    result = lf.build([Prep()])
    print(json.dumps({"executed": len(result.executed), "output": Prep().load_output()}))
"""


def python(*args: str, cwd, stdin: str | None = None) -> str:
    out = subprocess.run(
        [sys.executable, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_two_projects_running_python_tasks_py_do_not_share_runs(store, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tasks.py").write_text(TASKS)
        (tmp_path / name / "data.txt").write_text(f"data of {name}")
    first = json.loads(python("tasks.py", cwd=tmp_path / "a"))
    assert first == {"executed": 1, "output": "data of a"}
    # Was: reused a's run and loaded a's data.
    other = json.loads(python("tasks.py", cwd=tmp_path / "b"))
    assert other == {"executed": 1, "output": "data of b"}
    again = json.loads(python("tasks.py", cwd=tmp_path / "a"))
    assert again == {"executed": 0, "output": "data of a"}


def program(body: int) -> str:
    return (
        "import luigiflow as lf\n"
        "class Prep(lf.MlflowTask):\n"
        "    artifacts = {'o': 'o.json'}\n"
        "    def run_task(self):\n"
        f"        self.save({{'o': {body}}})\n"
        "print(Prep().identity)\n"
    )


@pytest.mark.slow
def test_stdin_and_dash_c_programs_are_told_apart_by_their_code(tmp_path):
    one = python("-", cwd=tmp_path, stdin=program(1))
    assert python("-", cwd=tmp_path, stdin=program(1)) == one  # the same program: same task
    assert python("-", cwd=tmp_path, stdin=program(2)) != one  # was: equal (no code, no file)
    assert python("-c", program(1), cwd=tmp_path) != one


def test_a_class_of_an_importable_module_keeps_its_identity():
    params = {"size": encode_value(3)}
    assert Source().identity == compute_identity("tests.dags", "Source", 0, params, {})
