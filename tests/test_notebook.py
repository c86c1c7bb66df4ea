"""Tasks defined in a Jupyter notebook, executed headless by a real kernel (nbclient)."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import luigiflow_cli, runs_of

pytestmark = pytest.mark.slow  # notebooks run in a Jupyter kernel process

DEFINE = """
import json
import luigi
import luigiflow as lf

class NotebookCount(lf.MlflowTask):
    code_in_identity = True
    artifacts = {"x": "x.json"}

    def run_task(self):
        self.save({"x": {"x": VALUE}}, metrics={"x": VALUE})
"""

REPORT = """
registered = luigi.task_register.Register.get_task_cls("NotebookCount")
plan = lf.plan([NotebookCount()])
result = lf.build([NotebookCount()])
print(json.dumps({
    "newest_registered": registered is NotebookCount,
    "will_run": len(plan.will_run),
    "reasons": [r for e in plan.entries() for r in e.reasons],
    "executed": len(result.executed),
    "reused": len(result.reused),
    "output": NotebookCount().load_output(),
    "run_id": result.runs[NotebookCount()],
}))
"""


def _execute(folder, value: int) -> dict:
    define = DEFINE.replace("VALUE", str(value))
    # The definition cell runs twice, as a user re-running a cell would.
    cells = [nbformat.v4.new_code_cell(c) for c in (define, define, REPORT)]
    notebook = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    text = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    return json.loads(text.strip().splitlines()[-1])


def test_notebook_tasks_are_reused_and_a_cell_edit_is_a_code_change(store, tmp_path, client):
    first = _execute(tmp_path, 1)
    assert first["newest_registered"] is True
    assert (first["will_run"], first["executed"], first["output"]) == (1, 1, {"x": 1})
    facts = json.loads(client.get_run(first["run_id"]).data.tags["luigiflow.task"])
    assert facts["code_fingerprint"] != "unknown"

    again = _execute(tmp_path, 1)  # a fresh kernel: everything is reused
    assert (again["will_run"], again["executed"], again["reused"]) == (0, 0, 1)
    assert again["run_id"] == first["run_id"]

    edited = _execute(tmp_path, 2)  # the task cell edited: code_in_identity sees it
    assert edited["will_run"] == 1 and edited["executed"] == 1
    assert any("code changed" in r for r in edited["reasons"]), edited["reasons"]
    assert edited["output"] == {"x": 2}


def test_a_notebook_run_is_reproduced_from_its_recorded_definitions(store, tmp_path, client):
    first = _execute(tmp_path, 3)
    run = client.get_run(first["run_id"])
    facts = json.loads(run.data.tags["luigiflow.task"])
    assert facts["module"] == "__main__" and facts["notebook_source"] == "luigiflow/notebook.py"
    out = luigiflow_cli("reproduce", first["run_id"], "--force", cwd=tmp_path)
    assert "re-executed as run" in out.stdout, out.stdout + out.stderr
    finished = runs_of(client, "NotebookCount", "FINISHED")
    assert len(finished) == 2
    newest = finished[-1]
    assert newest.info.run_id != first["run_id"]
    assert newest.data.metrics == run.data.metrics == {"x": 3.0}
    assert newest.data.tags["luigiflow.identity"] == run.data.tags["luigiflow.identity"]
