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

from types import ModuleType as _ModuleType
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from luigiflow._core import platform as _platform
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
from luigiflow._settings import tracking_uri
from luigiflow._version import __version__

# On purpose: Windows is refused here, in one line, rather than failing later inside a
# build (docs/platforms.md).
_platform.check_supported()

if _TYPE_CHECKING:
    from luigiflow._command import CommandTask
    from luigiflow._core.parameters import FileParameter, StepsParameter
    from luigiflow._ops.build import BuildResult, build
    from luigiflow._ops.lineage import find_runs
    from luigiflow._ops.plan_view import Plan, plan
    from luigiflow._ops.tables import runs
    from luigiflow._task import MlflowTask


def __getattr__(name: str) -> _Any:
    """The names that need Luigi are imported on first use (PEP 562), not with the package:
    the `luigiflow` command lives in `luigiflow.cli`, and `--help`, `runs` and `show`
    would otherwise pay for importing Luigi (about half their time) without using it."""
    module: _ModuleType
    if name == "MlflowTask":
        from luigiflow import _task as module
    elif name == "CommandTask":
        import luigiflow._command as module
    elif name in ("FileParameter", "StepsParameter"):
        from luigiflow._core import parameters as module
    elif name in ("build", "BuildResult"):
        from luigiflow._ops import build as module
    elif name == "find_runs":
        from luigiflow._ops import lineage as module
    elif name in ("plan", "Plan"):
        from luigiflow._ops import plan_view as module
    elif name == "runs":
        from luigiflow._ops import tables as module
    else:
        raise AttributeError(f"module 'luigiflow' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
    "StepsParameter",
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
