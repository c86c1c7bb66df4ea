"""What the commands share: the store check, the store line, the user's module, the tasks
named on the command line. The commands themselves: `_build` (run, reproduce), `_plan`
(plan, a task's --help), `_store_admin` (gc, upgrade), `_serve` (serve, ui, plots) and
`_inspect` (runs, show, diff). Thin: call the library, render with rich; no decisions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import click

from luigiflow import _settings
from luigiflow._errors import LuigiflowError, TrackingError
from luigiflow._store import client, sqlite_file


def check_store(existing: bool = False) -> None:
    """Fail fast, in one line, on a malformed variable or an unreachable tracking server;
    `existing`: a command that only reads refuses to create an embedded store."""
    _settings.validate()
    uri = client.tracking_uri()
    db = sqlite_file.sqlite_path(uri)
    if existing and db is not None and not db.exists():
        raise TrackingError(
            f"no tracking store at {db} (from "
            + ("MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "this folder")
            + "): run this command in the project folder, or set MLFLOW_TRACKING_URI to the "
            "store the runs are in"
        )
    # MLflow's HTTP client retries for minutes by default; a CLI should answer now.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    if uri.startswith(("http://", "https://")):
        from luigiflow._store import rest_reads  # a local store needs no HTTP client

        # With MLflow's TLS settings, on the connection the reads will go on to use.
        rest_reads.check_reachable(uri)


def store_line() -> str:
    """The store a command used, in one short line (a password in the URI masked)."""
    import urllib.parse

    uri = client.tracking_uri()
    db = sqlite_file.sqlite_path(uri)
    if db is not None:
        return f"store: {db}" + ("" if db.exists() else " (none yet: plan creates nothing)")
    parts = urllib.parse.urlsplit(uri)
    if parts.password:
        host = parts.netloc.rpartition("@")[2]
        uri = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    return f"store: {uri}"


def use_module(module: str | None) -> str | None:
    """Import the user's module; say which dotted name a file path was imported as."""
    # Here, not at the top: `runs`/`show` import this module (check_store) and must not
    # pay for Luigi, which `_ops.modules` imports.
    from luigiflow._ops.modules import import_module

    dotted = import_module(module)
    if module and dotted != module:
        click.echo(f"luigiflow: {module} imported as module {dotted}", err=True)
    return dotted


def _roots(
    module: str | None,
    task_words: Sequence[str],
    config_path: str | None,
    pipeline_path: str | None = None,
    dvc_path: str | None = None,
) -> tuple[list[Any], Any]:
    """The tasks to build: from TASK words, a config file (one per sweep point), or the
    stages of a pipeline file or dvc.yaml."""
    if dvc_path and config_path and not (pipeline_path or module or task_words):
        from luigiflow._ops.sweep import config as _config

        # `--dvc dvc.yaml --config sweep.toml`: the config sweeps that dvc.yaml's keys.
        config = _config.load(config_path, dvc=dvc_path)
        return config.tasks(), config
    if pipeline_path or dvc_path:
        from luigiflow._ops import stages

        if sum(x is not None for x in (pipeline_path, dvc_path, config_path, module)) > 1:
            raise LuigiflowError("give one of --pipeline, --dvc, --config or --module")
        kind, path = ("dvc", dvc_path) if dvc_path else ("pipeline", pipeline_path)
        # STAGE [--name value]..., or only --name value for every stage built
        stage = task_words[0] if task_words and not task_words[0].startswith("-") else None
        words = task_words[1:] if stage is not None else task_words
        if kind == "dvc":  # values go into the params files: --set train.n_est=60
            from luigiflow._ops.stages.dvc_overrides import parse_overrides

            pipeline = stages.load(kind, str(path), parse_overrides(words))
            return pipeline.roots(stage), pipeline
        pipeline = stages.load(kind, str(path))
        return pipeline.roots(stage, words), pipeline
    if config_path is None:
        from luigiflow._ops.modules import build_task

        return [build_task(use_module(module), task_words)], None
    if task_words or module:
        raise LuigiflowError("give either --config or --module TASK [--param value], not both")
    from luigiflow._ops.sweep import config as _config

    config = _config.load(config_path)
    return config.tasks(), config
