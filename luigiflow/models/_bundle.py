"""Logging a processing chain + model as one MLflow model, and serving it over HTTP."""

from __future__ import annotations

import json
import pathlib
import tempfile
from importlib import metadata
from typing import TYPE_CHECKING, Any

from luigiflow._errors import ArtifactError, LuigiflowError, RunNotFoundError

if TYPE_CHECKING:
    from luigiflow._task import MlflowTask

MODEL_TAG = "luigiflow.model_uri"
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
    task: MlflowTask,
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
        raise LuigiflowError(f"{task.get_task_family()}: log_model_bundle needs at least a model")
    if not isinstance(input_example, pd.DataFrame) or input_example.empty:
        raise LuigiflowError(
            f"{task.get_task_family()}: input_example must be a non-empty DataFrame of raw rows"
        )
    last = stages[-1]
    if not hasattr(last, predict_method):
        raise LuigiflowError(
            f"{task.get_task_family()}: the last stage {type(last).__name__} has no "
            f"{predict_method}()"
        )
    data: Any = input_example
    for stage in stages[:-1]:
        data = stage.transform(data)
    predictions = getattr(last, predict_method)(data)
    run_id = task.run_id
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
                "luigiflow.run_id": run_id,
                "luigiflow.upstream": json.dumps(
                    {
                        k[len("luigiflow.upstream.") :]: v
                        for k, v in mlflow.get_run(run_id).data.tags.items()
                        if k.startswith("luigiflow.upstream.")
                    }
                ),
            },
        )
    from luigiflow import _tracking

    _tracking.get_client().set_tag(run_id, MODEL_TAG, info.model_uri)
    return str(info.model_uri)


def resolve_model_uri(target: str) -> str:
    """A model URI as given, or the bundle logged on run `target`."""
    if ":/" in target:
        return target
    from luigiflow import _history

    run = _history.get_run(target)
    uri = run.data.tags.get(MODEL_TAG)
    if uri is None:
        raise ArtifactError(
            f"run {target} has no luigiflow model bundle; serve the run of a task that "
            "calls self.log_model_bundle(), or pass a model URI (models:/NAME/VERSION)"
        )
    return uri


class StrictColumns:
    """ASGI layer in front of MLflow's scoring app: reject payloads whose columns are
    not exactly the signature's (MLflow drops extra columns silently) and empty bodies."""

    def __init__(self, app: Any, columns: list[str]) -> None:
        self.app = app
        self.columns = columns

    def problem(self, body: bytes, content_type: str) -> str | None:
        if not body.strip():
            return 'empty request body; send JSON like {"dataframe_split": {...}}'
        if "json" not in content_type:
            return None  # CSV and other formats: MLflow's own checks apply
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return f"request body is not valid JSON: {exc}"
        if not isinstance(payload, dict):
            return 'request body must be a JSON object such as {"dataframe_split": {...}}'
        names: set[str] | None = None
        if isinstance(payload.get("dataframe_split"), dict):
            names = set(payload["dataframe_split"].get("columns") or [])
        elif isinstance(payload.get("dataframe_records"), list):
            records = payload["dataframe_records"]
            if not records:
                return "dataframe_records is empty; send at least one row"
            names = {k for r in records if isinstance(r, dict) for k in r}
        if names is None:
            return None
        missing = [c for c in self.columns if c not in names]
        extra = sorted(n for n in names if n not in self.columns)
        if not missing and not extra:
            return None
        parts = []
        if missing:
            parts.append(f"missing column(s): {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected column(s): {', '.join(extra)}")
        return "; ".join(parts)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].rstrip("/") == "/invocations"
        ):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        problem = self.problem(body, headers.get("content-type", ""))
        if problem:
            content = json.dumps({"error_code": "BAD_REQUEST", "message": problem}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": content})
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def serve(target: str, host: str, port: int) -> None:
    """Serve a bundle with MLflow's scoring server (local environment), strict on columns."""
    import mlflow
    import uvicorn
    from mlflow.pyfunc import scoring_server

    uri = resolve_model_uri(target)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        raise RunNotFoundError(f"cannot load model {uri}: {type(exc).__name__}: {exc}") from exc
    schema = model.metadata.get_input_schema()
    columns = schema.input_names() if schema is not None else []
    app = scoring_server.init(model)
    print(f"serving {uri} on http://{host}:{port} (POST /invocations, GET /ping)", flush=True)
    uvicorn.run(
        StrictColumns(app, [str(c) for c in columns]), host=host, port=port, log_level="warning"
    )
