"""`luigiflow plots --dvc dvc.yaml`: the plots a dvc.yaml declares, drawn from the
workspace files as `dvc plots show` does."""

from __future__ import annotations

import json

import pytest

from tests.conftest import luigiflow_cli as cli

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # starts a Python process (see scripts/test --fast)
def test_plots_renders_every_kind_of_dvc_plot_and_names_what_is_missing(tmp_path):
    project = tmp_path / "proj"
    (project / "eval").mkdir(parents=True)
    roc = [{"fpr": i / 10, "tpr": min(1, i / 5), "threshold": 1 - i / 10} for i in range(11)]
    (project / "eval" / "roc_train.json").write_text(json.dumps({"roc": roc}))
    (project / "eval" / "roc_test.json").write_text(json.dumps({"roc": roc[::2]}))
    cm = [{"actual": str(i % 2), "predicted": str((i // 3) % 2)} for i in range(20)]
    (project / "eval" / "cm.json").write_text(json.dumps(cm))
    (project / "eval" / "loss.csv").write_text("step,loss\n0,1.0\n1,0.5\n2,0.25\n")
    (project / "eval" / "importance.png").write_bytes(PNG + b"not really an image")
    (project / "dvc.yaml").write_text(
        """
stages:
  train:
    cmd: python train.py
    plots:
      - eval/loss.csv:
          x: step
          y: loss
plots:
  - ROC:
      template: simple
      x: fpr
      y:
        eval/roc_train.json: tpr
        eval/roc_test.json: tpr
  - Confusion-Matrix:
      template: confusion
      x: actual
      y:
        eval/cm.json: predicted
  - eval/importance.png
  - eval/not_yet_made.json
"""
    )
    out = cli("plots", "--dvc", str(project / "dvc.yaml"), "--output", "shown", cwd=tmp_path)
    assert "eval/not_yet_made.json" in out.stdout  # named, not an error
    page = (tmp_path / "shown" / "index.html").read_text()
    images = sorted(p.name for p in (tmp_path / "shown").iterdir() if p.name != "index.html")
    assert len(images) == 4 and all(name in page for name in images)
    for title in ("ROC", "Confusion-Matrix", "eval/importance.png", "eval/loss.csv"):
        assert title in page
    for image in images:
        assert (tmp_path / "shown" / image).read_bytes().startswith(PNG)


@pytest.mark.slow  # starts a Python process (see scripts/test --fast)
def test_plots_of_a_missing_dvc_yaml_is_one_line(tmp_path):
    out = cli("plots", "--dvc", str(tmp_path / "dvc.yaml"), cwd=tmp_path, check=False)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("ConfigError:") and "dvc.yaml" in line


def test_plots_of_a_task_draws_a_metric_across_its_runs(store, tmp_path):
    """`luigiflow plots TASK`: a metric over the runs, against a parameter or run order,
    as `dvc plots show` compares experiments."""
    from click.testing import CliRunner

    import luigiflow as lf
    from luigiflow._errors import ParameterError
    from luigiflow.cli import app
    from tests.dags import Source

    for size in (5, 2, 3):  # built out of order: the x axis sorts them, run order does not
        lf.build([Source(size=size)])
    runner = CliRunner()

    by_size = runner.invoke(app, ["plots", "Source", "--metric", "size", "--x", "size", "-o", "by"])
    assert by_size.exit_code == 0, by_size.output
    assert (tmp_path / "by" / "size_by_size.png").read_bytes().startswith(PNG)
    page = (tmp_path / "by" / "index.html").read_text()
    assert "Source: size by size" in page
    cells = [line for line in page.splitlines() if line.startswith("<tr><td>")]
    assert [c.split("<td>")[2].split("<")[0] for c in cells] == ["5", "2", "3"]  # run order

    over_runs = runner.invoke(app, ["plots", "Source", "-o", "order", "--where", "size=2"])
    assert over_runs.exit_code == 0, over_runs.output
    assert "drew 1 plot(s) of Source: size.png" in over_runs.output
    assert "Source: size over runs" in (tmp_path / "order" / "index.html").read_text()

    # Mistakes are ParameterErrors (one line from the `luigiflow` command), naming them.
    wrong = runner.invoke(app, ["plots", "Source", "--metric", "sise"])
    assert isinstance(wrong.exception, ParameterError)
    assert "no metric 'sise'; did you mean 'size'?" in str(wrong.exception)
    bad_x = runner.invoke(app, ["plots", "Source", "--x", "colour"])
    assert isinstance(bad_x.exception, ParameterError)
    assert "no parameter 'colour'" in str(bad_x.exception)
