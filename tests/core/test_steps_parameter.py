"""StepsParameter: the length of a training is in the identity but not in the seed."""

from __future__ import annotations

import luigi
import pytest

import luigiflow as lf


class Fit(lf.MlflowTask):
    artifacts = {"w": "w.json"}
    epochs = lf.StepsParameter(default=10)
    lr = luigi.FloatParameter(default=0.1)

    def run_task(self) -> None:
        self.save({"w": [0.0]})


def test_steps_change_the_identity_and_not_the_seed():
    short, long = Fit(epochs=10), Fit(epochs=15)
    assert short.identity != long.identity  # two tasks, two runs
    assert short.seed == long.seed  # one trajectory
    assert short.training()[0] == long.training()[0]  # one training line
    assert (short.training()[1:], long.training()[1:]) == (("epochs", 10), ("epochs", 15))
    other = Fit(epochs=10, lr=0.2)
    assert other.training()[0] != short.training()[0]  # another parameter: another line
    assert other.seed != short.seed


def test_a_task_has_at_most_one_steps_parameter():
    with pytest.raises(lf.TaskDefinitionError, match="2 StepsParameters \\(epochs, iters\\)"):

        class Twice(lf.MlflowTask):
            epochs = lf.StepsParameter(default=1)
            iters = lf.StepsParameter(default=1)

            def run_task(self) -> None:
                pass


def test_a_negative_number_of_steps_is_refused_before_any_run():
    with pytest.raises(lf.ParameterError, match="Fit: parameter 'epochs': expected a number"):
        Fit(epochs=-1)
