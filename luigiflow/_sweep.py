"""The record of a sweep: one run in the `sweeps` experiment linking every leaf run,
with a results table (CSV) and plots (PNG) of the metric against what was swept.

The record has an identity too (its config and its leaf runs): rebuilding an unchanged
sweep reuses the record; a sweep whose leaves changed gets a new one.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import tempfile
from typing import TYPE_CHECKING, Any

from luigiflow import _lookup, _tracking
from luigiflow._identity import IDENTITY_TAG

if TYPE_CHECKING:
    import pandas as pd

    from luigiflow._build import BuildResult
    from luigiflow._config import ExperimentConfig

SWEEP_EXPERIMENT = "sweeps"
LEAVES_TAG = "luigiflow.sweep.leaf_runs"


def results_frame(config: ExperimentConfig, result: BuildResult) -> pd.DataFrame:
    """One row per combination: swept values, run id and the leaf run's metrics."""
    import pandas as pd

    assert config.sweep is not None
    tasks = config.tasks()
    run_ids = [result.runs[t] for t in tasks]
    runs = _lookup.get_runs(run_ids)
    rows = []
    for combo, run_id in zip(config.sweep.combinations, run_ids, strict=True):
        row: dict[str, Any] = {}
        for key in config.sweep.swept:
            value = combo[key]
            row[key] = value if isinstance(value, int | float | str) else str(value)
        row["run_id"] = run_id
        row.update(runs[run_id].data.metrics)
        rows.append(row)
    frame = pd.DataFrame(rows)
    metric = config.sweep.metric
    if metric and metric in frame:
        frame = frame.sort_values(metric, ascending=config.sweep.goal == "min", ignore_index=True)
    return frame


def plot(frame: pd.DataFrame, swept: list[str], metric: str, folder: pathlib.Path) -> list[str]:
    """PNG files: the metric against each swept parameter, and parallel coordinates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = []
    for key in swept:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        if frame[key].dtype.kind in "if":
            ax.scatter(frame[key], frame[metric])
        else:
            categories = sorted(frame[key].astype(str).unique())
            positions = frame[key].astype(str).map({c: i for i, c in enumerate(categories)})
            jitter = (np.arange(len(frame)) % 5 - 2) * 0.04
            ax.scatter(positions + jitter, frame[metric])
            ax.set_xticks(range(len(categories)), categories)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} by {key}")
        ax.grid(alpha=0.3)
        name = f"{metric}_by_{key}.png"
        fig.tight_layout()
        fig.savefig(folder / name)
        plt.close(fig)
        names.append(name)

    axes = [*swept, metric]
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(axes)), 4.5), dpi=100)
    scaled = {}
    for key in axes:
        column = frame[key]
        if column.dtype.kind not in "if":
            categories = sorted(column.astype(str).unique())
            column = column.astype(str).map({c: i for i, c in enumerate(categories)})
            ticks = categories
        else:
            ticks = None
        low, high = float(column.min()), float(column.max())
        scaled[key] = (column - low) / (high - low) if high > low else column * 0 + 0.5
        if ticks:
            for i, label in enumerate(ticks):
                y = i / (len(ticks) - 1) if len(ticks) > 1 else 0.5
                ax.annotate(label, (axes.index(key), y), fontsize=7, ha="left")
        else:
            ax.annotate(f"{high:.4g}", (axes.index(key), 1.0), fontsize=7)
            ax.annotate(f"{low:.4g}", (axes.index(key), 0.0), fontsize=7)
    colors = plt.get_cmap("viridis")(scaled[metric].to_numpy(dtype=float))
    for i in range(len(frame)):
        ax.plot(range(len(axes)), [scaled[k].iloc[i] for k in axes], color=colors[i], alpha=0.8)
    ax.set_xticks(range(len(axes)), axes)
    ax.set_yticks([])
    ax.set_title(f"parallel coordinates (colour: {metric})")
    fig.tight_layout()
    fig.savefig(folder / "parallel_coordinates.png")
    plt.close(fig)
    names.append("parallel_coordinates.png")
    return names


def record(config: ExperimentConfig, result: BuildResult) -> tuple[str, pd.DataFrame, pathlib.Path]:
    """Find or create the sweep's record; returns (run id, table, local plots folder)."""
    from mlflow.entities import Param, RunTag

    from luigiflow import _artifacts

    assert config.sweep is not None
    frame = results_frame(config, result)
    leaves = list(frame["run_id"])
    identity = hashlib.sha256(
        json.dumps(
            {"config": str(config.path.read_text(encoding="utf-8")), "leaves": sorted(leaves)}
        ).encode()
    ).hexdigest()
    exp_id = _tracking.experiment_id(SWEEP_EXPERIMENT, create=True)
    assert exp_id is not None
    existing = _lookup.query_finished_run(exp_id, identity)
    if existing is not None:
        folder = _artifacts.local_artifact_path(
            existing.info.run_id, existing.info.artifact_uri, "plots"
        )
        return existing.info.run_id, frame, folder

    client = _tracking.get_client()
    leaves_json = json.dumps(leaves)
    tags = {
        IDENTITY_TAG: identity,
        "luigiflow.task_family": "Sweep",
        "luigiflow.sweep.config": str(config.path.resolve()),
        "luigiflow.sweep.task": config.task_class.get_task_family(),
    }
    if len(leaves_json) <= 8000:
        tags[LEAVES_TAG] = leaves_json
    run = client.create_run(exp_id, tags=tags, run_name=f"sweep-{identity[:8]}")
    run_id = run.info.run_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = pathlib.Path(tmp)
            frame.to_csv(folder / "results.csv", index=False)
            (folder / "leaf_runs.json").write_text(leaves_json)
            (folder / "config.toml").write_text(config.path.read_text(encoding="utf-8"))
            plots = folder / "plots"
            plots.mkdir()
            metric = config.sweep.metric
            if metric and metric in frame and config.sweep.swept:
                plot(frame, config.sweep.swept, metric, plots)
            client.log_artifacts(run_id, str(folder))
        best = {}
        if config.sweep.metric and config.sweep.metric in frame:
            best = {f"best_{config.sweep.metric}": float(frame[config.sweep.metric].iloc[0])}
        from mlflow.entities import Metric

        client.log_batch(
            run_id,
            params=[
                Param("kind", config.sweep.kind),
                Param("size", str(len(leaves))),
                Param("swept", ",".join(config.sweep.swept)),
                Param("metric", config.sweep.metric or ""),
            ],
            metrics=[Metric(k, v, 0, 0) for k, v in best.items()],
            tags=[RunTag("luigiflow.sweep.best_run", str(frame["run_id"].iloc[0]))],
        )
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    finished = client.get_run(run_id)
    folder = _artifacts.local_artifact_path(run_id, finished.info.artifact_uri, "plots")
    return run_id, frame, folder


def leaf_runs(sweep_run_id: str) -> list[str]:
    """The leaf run ids a sweep record links (for `luigiflow runs --sweep`)."""
    from luigiflow import _artifacts, _history

    run = _history.get_run(sweep_run_id)
    raw = run.data.tags.get(LEAVES_TAG)
    if raw is None:
        path = _artifacts.local_artifact_path(
            run_id=sweep_run_id, artifact_uri=run.info.artifact_uri, filename="leaf_runs.json"
        )
        raw = path.read_text()
    leaves: list[str] = json.loads(raw)
    return leaves
