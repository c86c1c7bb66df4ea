"""An experiment config over a dvc.yaml: `[pipeline] dvc = ...` or `--dvc` with
`--config`; the points are the stage's tasks with the swept params-file values, and each
knows what the params files must hold while it runs."""

from __future__ import annotations

import pytest

from luigiflow._errors import ConfigError
from luigiflow.cli._commands import _roots
from tests.scripts_project import copy_example

SWEEP = '[sweep]\n[sweep.grid]\n"train.n_est" = [7, 20]\n'


def test_dvc_on_the_command_line_names_the_dvc_yaml_a_config_sweeps(tmp_path):
    project = copy_example(tmp_path)
    config = tmp_path / "sweep.toml"
    config.write_text('[params]\n"featurize.max_features" = 3\n\n' + SWEEP)
    roots, loaded = _roots(None, (), str(config), None, str(project / "dvc.yaml"))

    assert [r.get_task_family() for r in roots] == ["evaluate", "evaluate"]
    assert [getattr(r, "train.n_est") for r in roots] == [7, 20]
    assert loaded.point_overlay is not None  # each point built alone, files overlaid
    params = (project / "params.yaml").read_bytes()
    with loaded.point_overlay(roots[1]) as changed:  # n_est 20 is the file's; max_features not
        assert changed == ["params.yaml"]
        text = (project / "params.yaml").read_text()
        assert "max_features: 3" in text and "n_est: 20" in text
    assert (project / "params.yaml").read_bytes() == params

    other = tmp_path / "other.toml"
    other.write_text('[pipeline]\nfile = "pipeline.toml"\n\n' + SWEEP)
    with pytest.raises(ConfigError, match="names a pipeline file or module instead of --dvc"):
        _roots(None, (), str(other), None, str(project / "dvc.yaml"))


def test_an_adaptive_search_over_a_dvc_yaml_is_refused_in_one_line(tmp_path):
    copy_example(tmp_path)
    config = tmp_path / "search.toml"
    config.write_text(
        '[pipeline]\ndvc = "project/dvc.yaml"\n\n[sweep]\nmetric = "roc_auc.test"\n'
        '[sweep.optuna]\ntrials = 2\n[sweep.optuna.params]\n"train.n_est" = {int = [5, 50]}\n'
    )
    with pytest.raises(ConfigError, match=r"\[sweep.optuna\] over a dvc.yaml is not supported"):
        _roots(None, (), str(config))
