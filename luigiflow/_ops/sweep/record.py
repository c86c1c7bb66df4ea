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

from luigiflow._core import redaction
from luigiflow._core.suggest import did_you_mean
from luigiflow._engine import session as _session
from luigiflow._errors import ConfigError
from luigiflow._ops import lineage
from luigiflow._ops.sweep.plots import plot
from luigiflow._store import artifacts, current, schema
from luigiflow._store.records import FAILED, FINISHED, RunRecord

if TYPE_CHECKING:
    import pandas as pd

    from luigiflow._ops.build import BuildResult
    from luigiflow._ops.sweep.config import ExperimentConfig

SWEEP_EXPERIMENT = "sweeps"


def results_frame(config: ExperimentConfig, result: BuildResult) -> pd.DataFrame:
    """One row per combination: swept values, run id and the leaf run's metrics."""
    return _results(config, result)[0]


def _results(
    config: ExperimentConfig, result: BuildResult
) -> tuple[pd.DataFrame, dict[str, RunRecord]]:
    import pandas as pd

    assert config.sweep is not None
    tasks = config.tasks()
    run_ids = [result.runs[t] for t in tasks]
    runs = current.get_store().get_runs(run_ids)
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
    if metric and metric not in frame:
        # Known only once the runs exist; they are kept, so fixing the name reuses them.
        logged = sorted({m for r in runs.values() for m in r.data.metrics})
        raise ConfigError(
            f"{config.path}: sweep metric {metric!r} was logged by none of the "
            f"{len(run_ids)} runs (they logged: {', '.join(logged) or 'no metrics'})"
            f"{did_you_mean(metric, logged)} Fix `metric` and run again: every run is reused"
        )
    if metric and metric in frame:
        frame = frame.sort_values(metric, ascending=config.sweep.goal == "min", ignore_index=True)
    return frame, runs


def record(config: ExperimentConfig, result: BuildResult) -> tuple[str, pd.DataFrame, pathlib.Path]:
    """Find or create the sweep's record; returns (run id, table, local plots folder)."""
    assert config.sweep is not None
    frame, runs = _results(config, result)
    leaves = list(frame["run_id"])
    store = current.get_store()
    # Trials a pruner stopped are no results, but runs of this search all the same.
    stopped = list(dict.fromkeys(config.sweep.pruned_runs))
    pruned = store.get_runs(stopped) if stopped else {}
    identity = hashlib.sha256(
        json.dumps(
            {"config": str(config.path.read_text(encoding="utf-8")), "leaves": sorted(leaves)}
        ).encode()
    ).hexdigest()
    exp_id = store.experiment_id(SWEEP_EXPERIMENT, create=True)
    assert exp_id is not None
    existing = _session.current().completion.query(exp_id, identity)
    if existing is not None:
        link_points(existing.info.run_id, exp_id, {**runs, **pruned})  # a record left half-linked
        folder = artifacts.local_artifact_path(
            existing.info.run_id, existing.info.artifact_uri, "plots"
        )
        return existing.info.run_id, frame, folder

    leaves_json = json.dumps(leaves)
    tags = {
        schema.IDENTITY_TAG: identity,
        schema.FAMILY_TAG: schema.SWEEP_FAMILY,
        schema.SWEEP_CONFIG_TAG: str(config.path.resolve()),
        schema.SWEEP_TASK_TAG: config.task_class.get_task_family(),
    }
    if len(leaves_json) <= schema.MAX_TAG_LENGTH:
        tags[schema.SWEEP_LEAVES_TAG] = leaves_json
    run = store.create_run(exp_id, f"sweep-{identity[:8]}", tags)
    run_id = run.info.run_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = pathlib.Path(tmp)
            shown = frame.copy()
            for column in [c for c in shown.columns if redaction.looks_secret(str(c))]:
                shown[column] = redaction.REDACTED  # a swept secret stays out of the store
            shown.to_csv(folder / "results.csv", index=False)
            (folder / "leaf_runs.json").write_text(leaves_json)
            (folder / "config.toml").write_text(_recorded_config(config))
            plots = folder / "plots"
            plots.mkdir()
            metric = config.sweep.metric
            if metric and metric in frame and config.sweep.swept:
                plot(frame, config.sweep.swept, metric, plots, config.sweep.log_scaled)
            store.log_artifacts(run_id, str(folder))
        best = {}
        if config.sweep.metric and config.sweep.metric in frame:
            best = {f"best_{config.sweep.metric}": float(frame[config.sweep.metric].iloc[0])}
        store.log_batch(
            run_id,
            params={
                "kind": config.sweep.kind,
                "size": str(len(leaves)),
                "swept": ",".join(config.sweep.swept),
                "metric": config.sweep.metric or "",
            },
            metrics=best,
            tags={
                schema.SWEEP_BEST_TAG: str(frame["run_id"].iloc[0]),
                schema.NOTE_TAG: _sweep_description(config, run_id, leaves, runs, pruned),
            },
            timestamp_ms=0,
        )
        store.terminate(run_id, FINISHED)
    except BaseException:
        store.terminate(run_id, FAILED)
        raise
    link_points(run_id, exp_id, {**runs, **pruned})
    folder = artifacts.local_artifact_path(run_id, run.info.artifact_uri, "plots")
    return run_id, frame, folder


def link_points(sweep_run_id: str, sweep_experiment_id: str, runs: dict[str, RunRecord]) -> None:
    """Nest each point run under the sweep run in the MLflow UI (its parent), with a tag
    naming the sweep and a link in its description. Done here, by the process that
    recorded the sweep, once every point exists: whichever worker or machine ran a
    point, it is linked the same way. A point an earlier sweep already linked keeps
    that sweep as its parent (a run has one); this sweep lists it all the same."""
    store = current.get_store()
    page = f"#/experiments/{sweep_experiment_id}/runs/{sweep_run_id}"
    line = f"Point of sweep [{sweep_run_id}]({page}) (`luigiflow show {sweep_run_id}`)."
    for run_id, run in runs.items():
        tags = run.data.tags
        if schema.SWEEP_RUN_TAG in tags:
            continue
        new = {schema.SWEEP_RUN_TAG: sweep_run_id}
        if schema.PARENT_RUN_TAG not in tags:  # nested under a run of the user's: kept
            new[schema.PARENT_RUN_TAG] = sweep_run_id
        note = tags.get(schema.NOTE_TAG, "")
        described = f"{note}\n\n{line}" if note else line
        if len(described) <= schema.MAX_TAG_LENGTH:
            new[schema.NOTE_TAG] = described
        store.log_batch(run_id, tags=new)


def _sweep_description(
    config: ExperimentConfig,
    run_id: str,
    leaves: list[str],
    runs: dict[str, RunRecord],
    pruned: dict[str, RunRecord],
) -> str:
    """The sweep run's description: what was swept and a link to each point's run, as
    many as fit MLflow's limit on a tag (leaf_runs.json lists them all)."""
    assert config.sweep is not None
    family = config.task_class.get_task_family()
    points = list(dict.fromkeys(leaves))  # a repeated combination is one run
    head = (
        f"**Sweep** ({config.sweep.kind}) of {family} over "
        f"{', '.join(config.sweep.swept) or 'nothing'}: {len(points)} point run(s), each "
        f"naming this run as its parent; `luigiflow runs {family} --sweep {run_id}` "
        "lists them.\n"
    )
    if pruned:
        head += f"{len(pruned)} trial(s) pruned (listed last, marked pruned).\n"
    listed = [(leaf, runs[leaf], "") for leaf in points]
    listed += [(r_id, run, " (pruned)") for r_id, run in pruned.items()]
    lines, size = [], len(head) + 200
    for index, (leaf, run, mark) in enumerate(listed):
        item = f"- [{leaf}](#/experiments/{run.info.experiment_id}/runs/{leaf}){mark}"
        if size + len(item) + 1 > schema.MAX_TAG_LENGTH:
            lines.append(f"- ... {len(listed) - index} more (leaf_runs.json lists every point)")
            break
        lines.append(item)
        size += len(item) + 1
    return head + "\n".join(lines)


def leaf_runs(sweep_run_id: str) -> list[str]:
    """The leaf run ids a sweep record links (for `luigiflow runs --sweep`)."""
    run = lineage.get_run(sweep_run_id)
    raw = run.data.tags.get(schema.SWEEP_LEAVES_TAG)
    if raw is None:
        path = artifacts.local_artifact_path(
            run_id=sweep_run_id, artifact_uri=run.info.artifact_uri, filename="leaf_runs.json"
        )
        raw = path.read_text()
    leaves: list[str] = json.loads(raw)
    return leaves


def _recorded_config(config: ExperimentConfig) -> str:
    """The config file as recorded: values of secret-looking keys redacted, and the
    secret parameter values scrubbed wherever else they appear in it."""
    text = redaction.redact_config_text(config.path.read_text(encoding="utf-8"))
    secrets = [str(v) for k, v in config.params.items() if redaction.looks_secret(k)]
    return redaction.scrub(text, secrets + redaction.secret_values())
