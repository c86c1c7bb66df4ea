"""Serving a model bundle over HTTP: MLflow's scoring server behind luigiflow's strict front
(see `scoring`)."""

from __future__ import annotations

from luigiflow._errors import RunNotFoundError
from luigiflow.models.bundle import resolve_model_uri
from luigiflow.models.scoring import ScoringApp

DEFAULT_MAX_BODY_BYTES = 32 * 2**20


def serve(target: str, host: str, port: int, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
    """Serve a bundle with MLflow's scoring server (local environment) behind a strict front.

    Example::

        serve("models:/tabular-model/1", "127.0.0.1", 5001, max_body_bytes=32 * 2**20)
    """
    import mlflow
    import uvicorn
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    uri = resolve_model_uri(target)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        raise RunNotFoundError(f"cannot load model {uri}: {type(exc).__name__}: {exc}") from exc
    app = ScoringApp(model, max_body_bytes, float(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()))
    print(f"serving {uri} on http://{host}:{port} (POST /invocations, GET /ping)", flush=True)
    # h11: after an early answer (413) it discards the rest of the body the client sends,
    # so the client reads the answer; the tests pin this behaviour.
    uvicorn.run(app, host=host, port=port, log_level="warning", http="h11")
