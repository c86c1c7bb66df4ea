"""Run names tell the runs of one task apart: the parameters that differ from the
family's other runs are shown, defaults included when they differ."""

from __future__ import annotations

import luigi

import luigiflow as lf
from tests.conftest import runs_of


class Clean(lf.MlflowTask):
    artifacts = {"text": "text.txt"}
    lower = luigi.BoolParameter(default=True)
    min_len = luigi.IntParameter(default=3)
    language = luigi.Parameter(default="en")

    def run_task(self):
        self.save({"text": f"{self.lower} {self.min_len} {self.language}"})


def test_four_runs_of_one_task_have_four_names(client):
    lf.build([Clean()])
    lf.build([Clean(lower=False)])
    lf.build([Clean(min_len=5)])
    lf.build([Clean(language="fr", lower=False)])
    names = [r.info.run_name for r in runs_of(client, "Clean", "FINISHED")]
    assert names == [
        "Clean()",  # the first run knows no other
        "Clean(lower=False)",
        "Clean(lower=True, min_len=5)",  # a default is shown where another run differs
        "Clean(lower=False, min_len=3, language=fr)",
    ]


def test_a_run_at_a_changed_default_is_named_by_it(client):
    lf.build([Clean(min_len=4)])
    lf.build([Clean()])  # min_len at its default (3), which the earlier run did not have
    names = [r.info.run_name for r in runs_of(client, "Clean", "FINISHED")]
    assert names == ["Clean(min_len=4)", "Clean(min_len=3)"]
