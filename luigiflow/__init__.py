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

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
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

# Each public name is imported on first use (PEP 562), not with the package: the
# `luigiflow` command lives in `luigiflow.cli`, and importing the package eagerly cost
# every command, `--help` and the store queries included, the import of Luigi (~0.25 s).
_WHERE = {
    "CommandTask": "luigiflow._command",
    "FileParameter": "luigiflow._core.parameters",
    **dict.fromkeys(
        [
            "ArtifactError",
            "BuildError",
            "CommandFailedError",
            "ConfigError",
            "LuigiflowError",
            "ParameterError",
            "RunNotFoundError",
            "TaskDefinitionError",
            "TaskFailedError",
            "TaskNotFoundError",
            "TrackingError",
        ],
        "luigiflow._errors",
    ),
    "BuildResult": "luigiflow._ops.build",
    "build": "luigiflow._ops.build",
    "find_runs": "luigiflow._ops.lineage",
    "Plan": "luigiflow._ops.plan_view",
    "plan": "luigiflow._ops.plan_view",
    "runs": "luigiflow._ops.tables",
    "tracking_uri": "luigiflow._settings",
    "MlflowTask": "luigiflow._task",
}


def __getattr__(name: str) -> _Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'luigiflow' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
