"""Tasks for the everyday-use tests: a failing lookup, a scored model, typed parameters.

Kept apart from tests/dags.py so the line numbers the failure tests assert on stay put.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import luigi

import luigiflow as lf


class Fails(lf.MlflowTask):
    """Looks up a column that is not there, as a user's code would."""

    artifacts = {"out": "out.json"}
    column = luigi.Parameter(default="movieId")

    def run_task(self) -> None:
        table = {"userId": [1, 2]}
        self.save({"out": table[self.column]})  # KeyError: the user's own line


class Scored(lf.MlflowTask):
    """A model with several long-valued metrics and params, as a results table shows."""

    artifacts = {"report": "report.json"}
    logic = luigi.ChoiceParameter(choices=["plain", "standardized", "pca"], default="plain")
    algorithm = luigi.Parameter(default="logreg")
    retrieved_on = luigi.DateParameter(default=dt.date(2026, 1, 1))
    alpha = luigi.FloatParameter(default=1.0)

    def run_task(self) -> None:
        time.sleep(float(os.environ.get("TASK_PAUSE", "0")))
        base = 0.9 + len(self.logic) / 1000 + self.alpha / 10_000
        metrics = {
            "roc_auc": base + 0.0123456789,
            "accuracy": base - 0.0234567891,
            "f1": base - 0.0345678912,
            "log_loss": 0.123456789 + self.alpha,
        }
        self.save({"report": metrics}, metrics=metrics)


class Typed(lf.MlflowTask):
    """One parameter of every common Luigi type."""

    artifacts = {"echo": "echo.json"}
    day = luigi.DateParameter()
    count = luigi.IntParameter(default=1)
    ratio = luigi.FloatParameter(default=0.5)
    flag = luigi.BoolParameter(default=False)
    items = luigi.ListParameter(default=[])
    span = luigi.TimeDeltaParameter(default=dt.timedelta(days=1))

    def run_task(self) -> None:
        self.save({"echo": {"day": self.day.isoformat(), "count": self.count}})
