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
