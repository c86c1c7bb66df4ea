"""A two-task chain for the artifact store tests: `Raw` saves an array, `Doubled` loads it
from its upstream run (a download from the tracking server on a remote store)."""

from __future__ import annotations

import luigi
import numpy as np

import luigiflow as lf


class Raw(lf.MlflowTask):
    artifacts = {"raw": "raw.npy"}
    size = luigi.IntParameter(default=10)

    def run_task(self) -> None:
        self.save({"raw": np.arange(self.size)})


class Doubled(lf.MlflowTask):
    artifacts = {"doubled": "doubled.npy"}
    size = luigi.IntParameter(default=10)

    def requires(self) -> dict[str, luigi.Task]:
        return {"raw": Raw(size=self.size)}

    def run_task(self) -> None:
        self.save({"doubled": self.load("raw", "raw") * 2})
