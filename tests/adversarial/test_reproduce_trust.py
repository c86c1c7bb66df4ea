"""`luigiflow reproduce` as an attacker with write access to the store would use it: the
notebook definitions it executes are the signed ones, unsigned or forged runs are refused
under a team key, and a reproduction whose metrics differ exits non-zero."""

from __future__ import annotations

import json
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of

pytestmark = pytest.mark.slow  # a notebook kernel and CLI subprocesses

KEY = "team-key-reproduce-5b1e"
OTHER_KEY = "another-team-key-0c9d"

NOTEBOOK_CELL = """
import json
import luigiflow as lf

class NotebookTrust(lf.MlflowTask):
    artifacts = {"x": "x.json"}

    def run_task(self):
        self.save({"x": 1}, metrics={"x": 1})

result = lf.build([NotebookTrust()])
print(json.dumps({"run_id": result.runs[NotebookTrust()]}))
"""


def env_with(key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGIFLOW_SIGNING_KEY")}
    if key is not None:
        env["LUIGIFLOW_SIGNING_KEY"] = key
    return env


def notebook_run(folder: pathlib.Path) -> str:
    """A run made in a real Jupyter kernel (its definitions stored as notebook.py)."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_CELL)])
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    text = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    return str(json.loads(text.strip().splitlines()[-1])["run_id"])


def test_reproduce_executes_only_the_signed_notebook_definitions(client, tmp_path, monkeypatch):
    monkeypatch.setenv("LUIGIFLOW_SIGNING_KEY", KEY)  # the kernel inherits it
    run_id = notebook_run(tmp_path)
    run = client.get_run(run_id)
    assert "luigiflow.signature" in run.data.tags
    definitions = next(
        pathlib.Path(run.info.artifact_uri.removeprefix("file://")).rglob("notebook.py")
    )
    genuine = definitions.read_text()
    marker = tmp_path / "pwned"

    # The attacker appends code to the stored definitions of the signed run.
    definitions.write_text(genuine + f"\nopen({str(marker)!r}, 'w').write('pwned')\n")
    for key in (KEY, None):  # refused with the key, and without it (the digest differs)
        refused = cli("reproduce", run_id, "--force", cwd=tmp_path, env=env_with(key), check=False)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "UntrustedRunError" in refused.stderr and "notebook" in refused.stderr
        assert not marker.exists()

    # Restored: the signed definitions are executed and the run reproduced.
    definitions.write_text(genuine)
    out = cli("reproduce", run_id, "--force", cwd=tmp_path, env=env_with(KEY))
    assert "re-executed as run" in out.stdout

    # A holder of another key, or a run without its signature, is refused before any code.
    other = cli("reproduce", run_id, cwd=tmp_path, env=env_with(OTHER_KEY), check=False)
    assert other.returncode == 1 and "badly signed" in other.stderr, other.stderr
    client.delete_tag(run_id, "luigiflow.signature")
    unsigned = cli("reproduce", run_id, cwd=tmp_path, env=env_with(KEY), check=False)
    assert unsigned.returncode == 1 and "is unsigned" in unsigned.stderr, unsigned.stderr
    assert len(unsigned.stderr.strip().splitlines()) == 1


DRIFTING = """
import pathlib

import luigiflow as lf


class Drifting(lf.MlflowTask):
    artifacts = {"o": "o.json"}

    def run_task(self):
        # Reads a file that is not a parameter: the result can drift under one identity.
        value = float(pathlib.Path("value.txt").read_text())
        self.save({"o": value}, metrics={"value": value, "constant": 1.0})
"""


def test_reproduce_exits_non_zero_when_the_metrics_differ(client, tmp_path):
    (tmp_path / "drifting.py").write_text(DRIFTING)
    (tmp_path / "value.txt").write_text("1.5")
    cli("run", "--module", "drifting", "Drifting", cwd=tmp_path)
    [first] = runs_of(client, "Drifting")
    # (the same metrics exit 0: tests/test_provenance.py::test_reproduce_force_gives_...)
    (tmp_path / "value.txt").write_text("2.5")
    differs = cli("reproduce", first.info.run_id, "--force", cwd=tmp_path, check=False)
    assert differs.returncode == 1, differs.stdout + differs.stderr
    assert "NO" in differs.stdout
    [line] = differs.stderr.strip().splitlines()
    assert line == f"reproduced metrics differ from run {first.info.run_id}: value"
