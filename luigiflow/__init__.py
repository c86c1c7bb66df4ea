"""luigiflow: Luigi task graphs where every task is an MLflow run.

import luigi
import luigiflow as lf

class Train(lf.MlflowTask):
    artifacts = {"model": "model.pkl"}
    alpha = luigi.FloatParameter(default=1.0)

    def run_task(self):
        self.save({"model": {"alpha": self.alpha}}, metrics={"score": 0.9})

result = lf.build([Train(alpha=0.5)])
"""

from __future__ import annotations

from luigiflow._command import CommandTask
from luigiflow._core.parameters import FileParameter
from luigiflow._errors import (
    ArtifactError,
    BuildError,
    CommandFailedError,
    ConfigError,
    LuigiflowError,
    ParameterError,
    RunNotFoundError,
    TaskDefinitionError,
    TaskFailedError,
    TaskNotFoundError,
    TrackingError,
)
from luigiflow._ops.build import BuildResult, build
from luigiflow._ops.lineage import find_runs
from luigiflow._ops.plan_view import Plan, plan
from luigiflow._ops.tables import runs
from luigiflow._settings import tracking_uri
from luigiflow._task import MlflowTask

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BuildError",
    "BuildResult",
    "CommandFailedError",
    "CommandTask",
    "ConfigError",
    "FileParameter",
    "LuigiflowError",
    "MlflowTask",
    "ParameterError",
    "Plan",
    "RunNotFoundError",
    "TaskDefinitionError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TrackingError",
    "__version__",
    "build",
    "find_runs",
    "plan",
    "runs",
    "tracking_uri",
]
