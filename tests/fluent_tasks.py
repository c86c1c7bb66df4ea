"""Tasks whose own code imports mlflow inside run_task, as users' training code does."""

from __future__ import annotations

import os
import sqlite3
import sys
import time

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
        if os.environ.get("AFTER_BEATS"):
            _wait_for_heartbeats(int(os.environ["AFTER_BEATS"]))
        imported_before = "mlflow" in sys.modules  # by luigiflow's own threads
        import mlflow

        mlflow.log_metric("live", 0.5, step=3)
        mlflow.log_param("fluent_param", "yes")
        mlflow.set_tag("fluent_tag", self.label)
        active = mlflow.active_run()
        seen = {"active_run": active.info.run_id if active else None}
        self.save({"seen": {**seen, "imported_before": imported_before}})


def _wait_for_heartbeats(beats: int) -> None:
    """Until this task's run (the one RUNNING run of the store) has had `beats` heartbeats
    (LUIGIFLOW_HEARTBEAT_S short): luigiflow's heartbeat thread wrote while the task ran."""
    db = os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")
    seen: set[str] = set()
    deadline = time.monotonic() + 300
    while len(seen) < beats + 1 and time.monotonic() < deadline:
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
                "WHERE r.status = 'RUNNING' AND t.key = 'luigiflow.heartbeat'"
            ).fetchone()
        if row:
            seen.add(row[0])
        time.sleep(0.05)
    assert len(seen) >= beats + 1, seen


class LogsLive(lf.MlflowTask):
    """Logs live metrics through luigiflow's own `log_metric`, then saves a final one."""

    artifacts = {"done": "done.json"}
    label = luigi.Parameter(default="x")

    def requires(self) -> dict[str, luigi.Task]:
        return {"middle": Middle()}

    def run_task(self) -> None:
        for step in range(3):
            self.log_metric("loss", 1.0 / (step + 1), step=step)
        self.save({"done": True}, metrics={"loss": 0.125})


class Checkpointed(lf.MlflowTask):
    """Checkpoints first (luigiflow's own write through MLflow's client imports mlflow
    while the task runs), then logs through MLflow's fluent API."""

    artifacts = {"seen": "seen.json"}
    label = luigi.Parameter(default="x")

    def run_task(self) -> None:
        self.checkpoint({"weights": [1.0]}, 0)
        import mlflow

        mlflow.log_metric("after_checkpoint", 1.0)
        active = mlflow.active_run()
        self.save({"seen": {"active_run": active.info.run_id if active else None}})


class Breaks(lf.MlflowTask):
    """Fails when its label is not "first": its traceback is stored through MLflow's
    client, whose first use imports mlflow while the task's run is still pending."""

    artifacts = {"o": "o.json"}
    label = luigi.Parameter(default="x")

    def run_task(self) -> None:
        if self.label != "first":
            raise ValueError("broken on purpose")
        self.save({"o": 1})
