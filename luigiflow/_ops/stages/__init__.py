"""Pipelines declared in files: luigiflow pipeline files (TOML), DVC's dvc.yaml and
MLflow Projects' entry points, each stage a task recorded as one MLflow run."""

from __future__ import annotations

from luigiflow._ops.stages.model import Pipeline, load, stage_class_for_run
from luigiflow._ops.stages.spec import StageSource

__all__ = ["Pipeline", "StageSource", "load", "stage_class_for_run"]
