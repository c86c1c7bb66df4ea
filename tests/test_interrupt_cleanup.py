"""A second signal that cuts the failure clean-up short must never leave a FINISHED run.

Under a wrapper that forwards Ctrl-C (`timeout`, CI steps) a second SIGINT could land in
the clean-up after the first: the run stayed MLflow's active run, and MLflow's exit hook
ended it FINISHED, so the next build reused an interrupted task with no artifacts.
Here the clean-up itself is interrupted, deterministically.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import runs_of

pytestmark = pytest.mark.slow  # a subprocess build

CODE = """
import luigiflow as lf
from luigiflow._engine import execution

def interrupted_cleanup(task, writer, exc):
    raise KeyboardInterrupt  # the second Ctrl-C, landing in the clean-up

execution._fail = interrupted_cleanup

class Step(lf.MlflowTask):
    artifacts = {"o": "o.json"}

    def run_task(self):
        raise KeyboardInterrupt  # the first Ctrl-C

lf.build([Step()], progress=False)
"""


def test_interrupted_cleanup_leaves_no_finished_run(client, tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", CODE], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode != 0
    [run] = runs_of(client, "Step")
    assert run.info.status == "KILLED", out.stderr[-2000:]
