"""MlflowTask and ArtifactTarget: the user API, delegating to `_engine`."""

from __future__ import annotations

from luigiflow._task.outputs import ArtifactTarget
from luigiflow._task.task import MlflowTask

__all__ = ["ArtifactTarget", "MlflowTask"]
