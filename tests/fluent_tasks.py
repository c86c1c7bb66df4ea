"""Tasks whose own code imports mlflow inside run_task, as users' training code does."""

from __future__ import annotations

import luigi

import luigiflow as lf
from tests.dags import Middle


class LogsThroughMlflow(lf.MlflowTask):
    """Logs a metric, a param and a tag through MLflow's fluent API, and saves the id of
    MLflow's active run so the test can compare it with the task's run."""

    artifacts = {"seen": "seen.json"}
    label = luigi.Parameter(default="x")

    def requires(self) -> dict[str, luigi.Task]:
        return {"middle": Middle()}

    def run_task(self) -> None:
        import mlflow

        mlflow.log_metric("live", 0.5, step=3)
        mlflow.log_param("fluent_param", "yes")
        mlflow.set_tag("fluent_tag", self.label)
        active = mlflow.active_run()
        self.save({"seen": {"active_run": active.info.run_id if active else None}})
