"""[sweep.optuna] pruner settings are checked with the rest of the config."""

from __future__ import annotations

import pytest

from luigiflow._errors import ConfigError
from luigiflow._ops.sweep import config as sweep_config

HEAD = (
    '[pipeline]\nmodule = "tests.luigi_users.search_tasks"\ntask = "Curve"\n'
    '[sweep]\nmetric = "score"\n[sweep.optuna]\ntrials = 2\n'
)
SPACE = "[sweep.optuna.params]\nquality = {uniform = [0.0, 1.0]}\n"


def test_a_pruner_is_read_with_its_arguments(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(HEAD + "pruner = {median = {n_startup_trials = 1}}\n" + SPACE)
    sweep = sweep_config.load(path).sweep
    assert sweep is not None
    assert sweep.settings["pruner"] == ("median", {"n_startup_trials": 1})


@pytest.mark.parametrize("pruner", ['"medain"', "[1]", "{median = 3}"])
def test_an_unknown_pruner_is_one_problem_naming_the_known_ones(tmp_path, pruner):
    path = tmp_path / "bad.toml"
    path.write_text(HEAD + f"pruner = {pruner}\n" + SPACE)
    with pytest.raises(ConfigError) as info:
        sweep_config.load(path)
    assert "[sweep.optuna] pruner" in str(info.value)
    assert "median, percentile, hyperband, successive_halving" in str(info.value)
