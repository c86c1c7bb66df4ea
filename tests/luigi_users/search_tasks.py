"""A task an adaptive search tunes: a score with one best point, per-step metrics."""

from __future__ import annotations

import math

import luigi

import luigiflow as lf


class Tune(lf.MlflowTask):
    artifacts = {"score": "score.json"}
    lr = luigi.FloatParameter(default=0.1)
    depth = luigi.IntParameter(default=3)
    kind = luigi.Parameter(default="a")

    def run_task(self) -> None:
        score = -((math.log10(self.lr) + 2) ** 2) - (self.depth - 4) ** 2
        score += 0.5 if self.kind == "b" else 0.0
        self.save({"score": score}, metrics={"score": score})


class Curve(lf.MlflowTask):
    """A training whose score per epoch is known early: a pruner can stop a poor one."""

    artifacts = {"curve": "curve.json"}
    quality = luigi.FloatParameter(default=0.5)
    epochs = luigi.IntParameter(default=4)

    def run_task(self) -> None:
        curve = []
        for epoch in range(self.epochs):
            curve.append(self.quality * (epoch + 1))
            self.log_metric("score", curve[-1], step=epoch)  # the pruner may stop it here
        self.save({"curve": curve}, metrics={"score": curve[-1]})
