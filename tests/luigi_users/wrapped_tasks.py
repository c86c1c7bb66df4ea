"""A Kedro-style pipeline: luigiflow tasks gathered under a plain `luigi.WrapperTask`
(Kedro's `__default__` pipeline), as a Luigi user writes it."""

from __future__ import annotations

import luigi

import luigiflow as lf


class Prepare(lf.MlflowTask):
    experiment_name = "spaceflights"  # the nine Kedro nodes share one experiment
    artifacts = {"table": "table.json"}
    part = luigi.Parameter()

    def run_task(self) -> None:
        self.save({"table": {"part": self.part}})


class Model(lf.MlflowTask):
    experiment_name = "spaceflights"
    artifacts = {"model": "model.json"}
    alpha = luigi.FloatParameter(default=1.0)

    def requires(self):
        return {"companies": Prepare(part="companies"), "shuttles": Prepare(part="shuttles")}

    def run_task(self) -> None:
        self.save({"model": {"alpha": self.alpha, "parts": sorted(self.requires())}})


class Default(luigi.WrapperTask):
    alpha = luigi.FloatParameter(default=1.0)

    def requires(self):
        return [Model(alpha=self.alpha), Prepare(part="reviews")]
