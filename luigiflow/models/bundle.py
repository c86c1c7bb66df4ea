"""Logging a processing chain + model as one MLflow pyfunc model on a run."""

from __future__ import annotations

import json
import pathlib
import tempfile
from importlib import metadata
from typing import Any

from luigiflow import _settings
from luigiflow._errors import ArtifactError, LuigiflowError
from luigiflow._store import current, schema, signatures

CODE = pathlib.Path(__file__).with_name("pipeline_model.py")


def _requirements(stages: list[Any]) -> list[str]:
    """Pinned requirements: MLflow, pandas, joblib, and the distributions of the stages."""
    packages = {"mlflow", "pandas", "numpy", "joblib", "cloudpickle"}
    distributions = metadata.packages_distributions()
    for stage in stages:
        top = type(stage).__module__.split(".")[0]
        packages.update(distributions.get(top, []))
    pinned = []
    for name in sorted(packages):
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pinned


def log_pipeline_model(
    run_id: str,
    family: str,
    stages: list[Any],
    input_example: Any,
    name: str = "model",
    predict_method: str = "predict",
    registered_model_name: str | None = None,
) -> str:
    """Log `stages` (fitted transformers, then a model) as one pyfunc model on the task's run.

    `input_example` holds raw rows (a DataFrame): the signature is inferred on those raw
    columns, so the served model takes what the first processing stage takes.
    """
    import joblib
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    if not stages:
        raise LuigiflowError(f"{family}: log_model_bundle needs at least a model")
    if not isinstance(input_example, pd.DataFrame) or input_example.empty:
        raise LuigiflowError(f"{family}: input_example must be a non-empty DataFrame of raw rows")
    last = stages[-1]
    if not hasattr(last, predict_method):
        raise LuigiflowError(
            f"{family}: the last stage {type(last).__name__} has no {predict_method}()"
        )
    data: Any = input_example
    for stage in stages[:-1]:
        data = stage.transform(data)
    predictions = getattr(last, predict_method)(data)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {}
        for i, stage in enumerate(stages):
            path = pathlib.Path(tmp) / f"stage_{i}.joblib"
            joblib.dump(stage, path)
            artifacts[f"stage_{i}"] = str(path)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(CODE),
            artifacts=artifacts,
            model_config={
                "columns": [str(c) for c in input_example.columns],
                "predict_method": predict_method,
                "stage_names": [type(s).__name__ for s in stages],
            },
            signature=infer_signature(input_example, predictions),
            input_example=input_example.head(5),
            pip_requirements=_requirements(stages),
            registered_model_name=registered_model_name or None,
            tags={
                schema.MODEL_RUN_TAG: run_id,
                schema.MODEL_UPSTREAM_TAG: json.dumps(
                    schema.upstream_ids(current.get_store().get_run(run_id).data.tags)
                ),
            },
        )
    current.get_store().set_tag(run_id, schema.MODEL_URI_TAG, info.model_uri)
    return str(info.model_uri)


def resolve_model_uri(target: str) -> str:
    """A model URI as given, or the bundle logged on run `target`."""
    if ":/" in target:
        return target
    run = current.get_store().get_run(target)
    uri = run.data.tags.get(schema.MODEL_URI_TAG)
    if uri is None:
        raise ArtifactError(
            f"run {target} has no luigiflow model bundle; serve the run of a task that "
            "calls self.log_model_bundle(), or pass a model URI (models:/NAME/VERSION)"
        )
    if not signatures.trusted(run):  # loading a model runs code chosen by its writer
        raise ArtifactError(
            f"run {target} is {signatures.status(run)} for the team key "
            f"({_settings.SIGNING_KEY}); only runs signed with it are served"
        )
    return uri
