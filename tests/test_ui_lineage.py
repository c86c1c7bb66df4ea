"""What the MLflow UI shows of a luigiflow run: a readable name, a description, inputs."""

from __future__ import annotations

import luigiflow as lf
from tests.dags import Leaf


def test_run_names_say_task_and_distinguishing_params(client):
    result = lf.build([Leaf(size=4, label="y")])
    names = {t.get_task_family(): client.get_run(r).info.run_name for t, r in result.runs.items()}
    assert names["Leaf"] == "Leaf(size=4, label=y)"
    assert names["Middle"] == "Middle(size=4)"
    assert names["Source"] == "Source(size=4)"


def test_description_links_upstream_runs_and_the_show_command(client):
    result = lf.build([Leaf()])
    runs = {t.get_task_family(): r for t, r in result.runs.items()}
    leaf = client.get_run(runs["Leaf"])
    note = leaf.data.tags["mlflow.note.content"]
    middle = client.get_run(runs["Middle"])
    page = f"#/experiments/{middle.info.experiment_id}/runs/{middle.info.run_id}"
    assert f"]({page})" in note  # a Markdown link to the upstream run's page
    assert f"luigiflow show {leaf.info.run_id}" in note


def test_upstream_artifacts_are_dataset_inputs(client):
    result = lf.build([Leaf()])
    runs = {t.get_task_family(): r for t, r in result.runs.items()}
    inputs = client.get_run(runs["Middle"]).inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == ["source.numbers"]
    assert runs["Source"] in inputs[0].dataset.source


def test_task_experiments_open_in_the_classic_runs_view(client):
    # MLflow 3's UI opens an experiment without a kind in its GenAI view (traces,
    # evaluations); a task's experiment says it holds model-training runs.
    lf.build([Leaf()])
    for name in ("Leaf", "Middle", "Source"):
        tags = client.get_experiment_by_name(name).tags
        assert tags.get("mlflow.experimentKind") == "custom_model_development", (name, tags)
