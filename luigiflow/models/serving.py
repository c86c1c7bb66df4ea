"""Serving a model bundle over HTTP with MLflow's scoring server, strict on columns."""

from __future__ import annotations

import json
from typing import Any

from luigiflow._errors import RunNotFoundError
from luigiflow.models.bundle import resolve_model_uri


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
