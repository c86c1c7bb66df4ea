"""What the store hands back about a run: MLflow's `Run` shape, without MLflow.

`record.info.run_id`, `record.data.tags` read as on an `mlflow.entities.Run`, so user
code written against MLflow keeps working, while stores that are not MLflow's client
(the in-memory store of the fast tests, a direct read path) can build them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FINISHED = "FINISHED"
RUNNING = "RUNNING"
FAILED = "FAILED"
KILLED = "KILLED"
ACTIVE = "active"
DELETED = "deleted"


@dataclass(frozen=True)
class RunInfo:
    """The run's attributes (as `mlflow.entities.RunInfo`)."""

    run_id: str
    experiment_id: str
    status: str
    start_time: int
    end_time: int | None = None
    artifact_uri: str = ""
    lifecycle_stage: str = ACTIVE
    run_name: str = ""


@dataclass(frozen=True)
class RunData:
    """The run's tags, params and latest metrics (as `mlflow.entities.RunData`)."""

    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecord:
    """One run as read from the store."""

    info: RunInfo
    data: RunData

    @property
    def run_id(self) -> str:
        return self.info.run_id


def from_mlflow(run: Any) -> RunRecord:
    """Convert an `mlflow.entities.Run` (its properties build dicts on every access)."""
    info, data = run.info, run.data
    return RunRecord(
        RunInfo(
            run_id=info.run_id,
            experiment_id=str(info.experiment_id),
            status=info.status,
            start_time=info.start_time or 0,
            end_time=info.end_time,
            artifact_uri=info.artifact_uri or "",
            lifecycle_stage=info.lifecycle_stage,
            run_name=info.run_name or "",
        ),
        RunData(dict(data.tags), dict(data.params), dict(data.metrics)),
    )
