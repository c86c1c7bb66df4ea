"""The code a task depends on, followed into the user's helper modules: plan names what
changed, --rerun-changed re-runs exactly those tasks and their downstream."""

from __future__ import annotations

import json

import pytest

from tests.conftest import runs_of
from tests.project_shapes import cli, edit, entries, executed, make_project, plan_json

pytestmark = pytest.mark.slow  # builds the project in subprocesses


def test_helper_function_edit_is_named_and_rerun_with_its_downstream(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "pipeline", "All")
    edit(project / "src" / "featurization.py", "len(row) * NGRAMS", "len(row) * NGRAMS + 1")

    plan = entries(plan_json(project, "All"))
    assert plan["Featurize"]["status"] == "reused"
    assert plan["Featurize"]["code_changes"] == ["src/featurization.py: featurize()"]
    assert any("src/featurization.py: featurize()" in r for r in plan["Featurize"]["reasons"])
    assert [f for f, e in plan.items() if e["code_changed"]] == ["Featurize"]
    text = cli(project, "plan", "--module", "pipeline", "All").stdout
    assert "src/featurization.py: featurize()" in text

    out = cli(project, "run", "--module", "pipeline", "All", "--rerun-changed").stdout
    assert executed(out) == {"Featurize", "Train", "All"}
    assert "executed 3, reused 3" in out
    assert len(runs_of(client, "Split")) == 1 and len(runs_of(client, "Report")) == 1


def test_constant_edit_is_named_through_the_helper_that_reads_it(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "pipeline", "All")
    edit(project / "src" / "params.py", "NGRAMS = 2", "NGRAMS = 3")

    plan = entries(plan_json(project, "All"))
    assert plan["Featurize"]["code_changes"] == ["src/params.py: NGRAMS"]
    assert [f for f, e in plan.items() if e["code_changed"]] == ["Featurize"]
    out = cli(project, "run", "--module", "pipeline", "All", "--rerun-changed").stdout
    assert executed(out) == {"Featurize", "Train", "All"}
    [old, new] = runs_of(client, "Train", "FINISHED")
    assert new.data.metrics["total"] != old.data.metrics["total"]


def test_comment_docstring_and_unrelated_edits_change_nothing(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "pipeline", "All")
    helpers = project / "src" / "featurization.py"
    edit(helpers, "# one number per row", "# one number per row, reworded")
    edit(helpers, "return [len(row)", "return [  len(row)")  # formatting only
    edit(helpers, "return x + 1", "return x + 2")  # a function no task calls
    edit(project / "src" / "params.py", "UNUSED = 7", "UNUSED = 8")  # a constant nobody reads
    edit(
        project / "pipeline.py",
        "class Train(lf.MlflowTask):\n",
        'class Train(lf.MlflowTask):\n    """Docs."""\n',
    )

    plan = entries(plan_json(project, "All"))
    assert all(not e["code_changed"] and e["code_changes"] == [] for e in plan.values())
    out = cli(project, "run", "--module", "pipeline", "All", "--rerun-changed").stdout
    assert "executed 0, reused 6" in out


def test_parts_are_recorded_and_installed_code_is_not_fingerprinted(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "pipeline", "Featurize")
    [run] = runs_of(client, "Featurize")
    facts = json.loads(run.data.tags["luigiflow.task"])
    parts = set(facts["code_parts"])
    assert parts == {
        "pipeline.py: Featurize",
        "src/featurization.py: featurize()",
        "src/params.py: NGRAMS",
    }
    # luigiflow, luigi and the standard library are not the user's code
    assert not any("luigiflow" in p or "site-packages" in p for p in parts)


def test_code_in_identity_uses_the_deep_fingerprint(client, tmp_path):
    project = make_project(tmp_path)
    edit(
        project / "pipeline.py",
        "class Featurize(lf.MlflowTask):\n",
        "class Featurize(lf.MlflowTask):\n    code_in_identity = True\n",
    )
    cli(project, "run", "--module", "pipeline", "Train")
    edit(project / "src" / "params.py", "NGRAMS = 2", "NGRAMS = 5")
    plan = entries(plan_json(project, "Train"))
    assert plan["Featurize"]["status"] == "will run"
    assert any("src/params.py: NGRAMS" in r for r in plan["Featurize"]["reasons"])
    assert plan["Train"]["status"] == "will run" and plan["Split"]["status"] == "reused"
    out = cli(project, "run", "--module", "pipeline", "Train").stdout
    assert executed(out) == {"Featurize", "Train"}


def test_declared_code_files_enter_the_fingerprint(client, tmp_path):
    project = make_project(tmp_path)
    (project / "query.sql").write_text("select 1\n")
    edit(
        project / "pipeline.py",
        "class Report(lf.MlflowTask):\n",
        'class Report(lf.MlflowTask):\n    code_files = ("query.sql",)\n',
    )
    cli(project, "run", "--module", "pipeline", "All")
    (project / "query.sql").write_text("select 2\n")
    plan = entries(plan_json(project, "All"))
    assert plan["Report"]["code_changes"] == ["query.sql"]
    assert [f for f, e in plan.items() if e["code_changed"]] == ["Report"]


def test_plan_reports_package_versions_that_differ_from_the_run(client, tmp_path):
    project = make_project(tmp_path)
    cli(project, "run", "--module", "pipeline", "Prepare")
    [run] = runs_of(client, "Prepare")
    env = json.loads(run.data.tags["luigiflow.env"])
    now = env["version.mlflow"]
    env["version.mlflow"] = "0.0.1"
    client.set_tag(run.info.run_id, "luigiflow.env", json.dumps(env))
    plan = plan_json(project, "Prepare")
    assert plan["status"] == "reused"
    assert plan["environment_changes"] == [f"mlflow 0.0.1 -> {now}"]
    shown = cli(project, "plan", "--module", "pipeline", "Prepare").stdout
    assert f"mlflow 0.0.1 -> {now}" in " ".join(shown.split())  # wrapped at 80 columns
