"""`luigiflow serve`, `ui` and `plots`: a model server, MLflow's UI, a page of dvc.yaml plots."""

from __future__ import annotations

import os
import sys

import click

from luigiflow._errors import LuigiflowError, mask_credentials
from luigiflow._store import client
from luigiflow.cli._commands import check_store


def serve(target: str, port: int, host: str, max_body_bytes: int) -> None:
    from luigiflow.models.serving import serve as serve_bundle

    check_store()
    serve_bundle(target, host, port, max_body_bytes)


def _port_is_free(host: str, port: int) -> None:
    """One line, before MLflow starts, when the port is taken (MLflow's server would log
    the failure among its start-up lines and exit 0)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As uvicorn binds: a port in TIME_WAIT is free, one with a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise LuigiflowError(
                f"cannot serve the UI on {host}:{port} ({exc.strerror}); another UI or server "
                "may be using it: pass another --port"
            ) from exc


def ui(port: int, host: str) -> None:
    uri = client.tracking_uri()
    if uri.startswith(("http://", "https://")):
        check_store()  # one line when nothing answers there
        raise LuigiflowError(
            f"MLFLOW_TRACKING_URI is the tracking server {uri}: its UI is already there, "
            "open it in a browser (unset MLFLOW_TRACKING_URI for the local store's UI)"
        )
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        # One process: a local UI needs no more, and uvicorn's supervisor of several
        # workers kills and restarts them when a loaded machine answers its pings late.
        "--workers",
        "1",
    ]
    # MLflow's job runner starts eight GenAI worker processes (~2 GB) the UI never needs
    # for tracking; on a small machine they delay the UI by minutes. Set it to keep them.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    _port_is_free(host, port)
    shown = mask_credentials(uri)
    click.echo(f"MLflow UI on http://{host}:{port} for {shown} (Ctrl-C stops it)", err=True)
    sys.stdout.flush()
    # Deprecation warnings from MLflow's own server code (Starlette's is a UserWarning)
    # tell a user nothing they can act on.
    os.environ["PYTHONWARNINGS"] = ",".join(
        [
            "ignore::DeprecationWarning",
            "ignore::FutureWarning",
            "ignore:starlette.middleware.wsgi is deprecated",
        ]
    )
    os.execv(sys.executable, command)


def plots(dvc_path: str, output: str) -> None:
    import pathlib

    from luigiflow._errors import ConfigError
    from luigiflow._ops.stages import plots as _plots

    dvc_yaml = pathlib.Path(dvc_path).resolve()
    if not dvc_yaml.is_file():
        raise ConfigError(f"{dvc_yaml} does not exist; give the dvc.yaml with --dvc")
    page, skipped = _plots.render(dvc_yaml, pathlib.Path(output))
    for why in skipped:
        click.echo(f"not drawn: {why}")
    click.echo(f"plots: {page}")
