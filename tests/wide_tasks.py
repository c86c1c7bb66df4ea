"""A fan-in wider than a run description can list (MLflow keeps 8,000 characters)."""

from __future__ import annotations

import luigi

import luigiflow as lf
from tests.dags import Fan

LONG = "an_upstream_named_at_length_" * 7


class WideGather(lf.MlflowTask):
    artifacts = {"sum": "sum.json"}
    width = luigi.IntParameter(default=32)

    def requires(self) -> dict[str, luigi.Task]:
        return {f"{LONG}{i}": Fan(index=i) for i in range(self.width)}

    def run_task(self) -> None:
        self.save({"sum": sum(self.load(name)["index"] for name in self.requires())})
