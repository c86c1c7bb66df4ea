"""Live progress in a terminal, a lasting summary, and no control codes when piped."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import luigiflow_cli as cli
from tests.terminal import plain, run_in_terminal

pytestmark = pytest.mark.slow  # starts servers or subprocesses (see scripts/test --fast)


BUILD_LEAF = (
    "import sys\nimport luigiflow as lf\nfrom tests.dags import Leaf\n"
    "kwargs = {'progress': False} if 'quiet' in sys.argv else {}\n"
    "lf.build([Leaf(size=5)], **kwargs)\nprint('BUILT')\n"
)


def test_cli_run_shows_live_progress_then_a_summary_with_metrics(client, tmp_path):
    env = dict(os.environ, TASK_PAUSE="1.5")
    code, shown = run_in_terminal(
        [sys.executable, "-m", "luigiflow.cli", "run", "--module", "tests.dags", "Leaf"],
        cwd=tmp_path,
        env=env,
    )
    text = plain(shown)
    assert code == 0, text
    assert re.search(r"\b[0-2]/3 done", text), text
    assert "Middle(size=3, factor=2)" in text  # a running task, named readably
    assert "Middle_" not in text  # never Luigi's hashed task id
    assert "elapsed" in text and "left" in text
    summary = text[text.rindex("executed 3") :]  # the summary stays after the live display
    assert "total=6" in text[text.rindex("Leaf(") :]  # executed tasks' key metrics
    assert summary


def test_lf_build_in_a_terminal_shows_progress(store, tmp_path):
    env = dict(os.environ, TASK_PAUSE="1.5")
    code, shown = run_in_terminal([sys.executable, "-c", BUILD_LEAF], cwd=tmp_path, env=env)
    text = plain(shown)
    assert code == 0, text
    assert re.search(r"\b[0-2]/3 done", text), text
    assert "Source(size=5)" in text


def test_lf_build_progress_off_by_argument_or_when_piped(store, tmp_path):
    code, shown = run_in_terminal(
        [sys.executable, "-c", BUILD_LEAF, "quiet"], cwd=tmp_path, env=dict(os.environ)
    )
    assert code == 0
    assert plain(shown).strip() == "BUILT"
    piped = subprocess.run(
        [sys.executable, "-c", BUILD_LEAF.replace("size=5", "size=6")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() == "BUILT"
    assert "done" not in piped.stderr


def test_piped_output_has_no_control_codes(client, tmp_path):
    out = cli("run", "--module", "tests.dags", "Leaf", cwd=tmp_path)
    assert "\x1b[" not in out.stdout + out.stderr
    assert "executed 3" in out.stdout
    shown = cli("runs", "Leaf", cwd=tmp_path)
    assert "\x1b[" not in shown.stdout + shown.stderr
