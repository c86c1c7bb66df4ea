"""MLflow models as declared task outputs: logged with their flavour, recorded with a
checksum on the run, verified and loaded back by name in downstream tasks.

    class Fit(lf.MlflowTask):
        models = {"model": "sklearn"}          # output name -> MLflow flavour

        def run_task(self):
            self.save({"model": LinearRegression().fit(X, y)})

    class Predict(lf.MlflowTask):
        def run_task(self):
            model = self.load("fit", "model")  # mlflow.sklearn.load_model, verified
"""

from __future__ import annotations

import contextlib
import importlib
import pathlib
import shutil
import tempfile
from typing import Any

from luigiflow import _settings
from luigiflow._core import hashing
from luigiflow._errors import ArtifactError
from luigiflow._store import mlflow_compat, schema
from luigiflow._store.records import RunRecord


def _flavour(flavour: str) -> Any:
    return importlib.import_module(f"mlflow.{flavour}")


def log_model(family: str, name: str, flavour: str, model: Any) -> dict[str, Any]:
    """Log `model` with `mlflow.<flavour>.log_model` on the active run; its record
    (flavour, model URI, sha256 of the model folder) for the run's tags."""
    import mlflow

    try:
        info = _flavour(flavour).log_model(model, name=name)
    except Exception as exc:
        raise ArtifactError(
            f"{family}: logging model output {name!r} with mlflow.{flavour}.log_model "
            f"failed: {type(exc).__name__}: {exc}"
        ) from exc
    with (
        tempfile.TemporaryDirectory(prefix="luigiflow-model-") as tmp,
        mlflow_compat.no_progress_bars(),
    ):
        local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp)
        digest = hashing.file_digest(pathlib.Path(local))
    return {"flavour": flavour, "uri": info.model_uri, "sha256": digest}


def load_model(family: str, run: RunRecord, name: str, flavour: str | None = None) -> Any:
    """The model output `name` of `run`, checked against its recorded sha256 and loaded
    with its own flavour's loader (or `flavour`, e.g. "pyfunc")."""
    record = schema.model_records(run.data.tags).get(name)
    run_id = run.info.run_id
    if not record or not record.get("uri"):
        raise ArtifactError(
            f"{family} run {run_id} has no model output {name!r} recorded; "
            f"re-run the task (luigiflow run ... --rerun {family})"
        )
    folder = _settings.cache_dir() / "models" / run_id / name
    digest = _fetched_digest(record["uri"], folder)
    if digest != record.get("sha256"):  # a stale or edited cached copy: fetch it again
        shutil.rmtree(folder, ignore_errors=True)
        digest = _fetched_digest(record["uri"], folder)
    if digest != record.get("sha256"):
        raise ArtifactError(
            f"model output {name!r} of {family} run {run_id} ({record['uri']}) does not match "
            f"the checksum recorded when the run finished ({record.get('sha256')} != {digest}); "
            f"it was modified: re-run the task (luigiflow run ... --rerun {family})"
        )
    return _flavour(flavour or record["flavour"]).load_model(str(folder))


def _fetched_digest(uri: str, folder: pathlib.Path) -> str:
    """sha256 of the model folder, downloaded into `folder` unless it is already there."""
    import mlflow

    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=".dl-", dir=folder.parent))
        with mlflow_compat.no_progress_bars():
            local = mlflow.artifacts.download_artifacts(uri, dst_path=str(staging))
        with contextlib.suppress(OSError):  # another process put it there first
            pathlib.Path(local).rename(folder)
        shutil.rmtree(staging, ignore_errors=True)
    return hashing.file_digest(folder)
