"""What a finished run records of where it came from: its description (links to the
upstream runs' pages, the run it resumed from), the lineage file of a wide fan-in, and
its inputs as MLflow datasets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from luigiflow._core import redaction
from luigiflow._engine.protocol import TrackedTask
from luigiflow._engine.run_facts import run_name
from luigiflow._store import schema
from luigiflow._store.port import DatasetRef
from luigiflow._store.records import RunRecord


def description(
    task: TrackedTask,
    run_id: str,
    upstream: Mapping[str, RunRecord],
    tags: Mapping[str, str] | None = None,
    experiment_id: str = "",
    fits: bool = False,
) -> str:
    """The run's MLflow description (Markdown): what made it, links to the upstream runs'
    pages and to the run it resumed or warm-started from, and the command that shows
    the whole chain. With `fits`, the upstream links that fit MLflow's limit on a tag
    (which MLflow would cut, with a warning), then where the others are listed."""
    title = (tags or {}).get(schema.RUN_NAME_TAG) or run_name(task)  # the run's own name
    lines = [f"**{title}**, recorded by luigiflow.", ""]
    origin = schema.origin_of(tags or {})
    if origin is not None:
        kind, record = origin
        # the run it came from is a run of the same task: same experiment
        page = f"#/experiments/{experiment_id}/runs/{record['run_id']}"
        text = schema.origin_text(kind, record).replace(
            f"run {record['run_id']}", f"run [{record['run_id']}]({page})"
        )
        lines += [text[0].upper() + text[1:] + ": its metric history up to that step is here.", ""]
    tail = f"The whole chain: `luigiflow show {run_id}`"
    if upstream:
        lines.append("Upstream runs:")
        links = []
        for name, run in sorted(upstream.items()):
            page = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
            label = run.info.run_name or run.info.run_id
            links.append(f"- {name}: [{label}]({page})")
        if fits:
            more = (
                f"- ... and {{}} more: all {len(links)} upstream runs are listed in "
                f"`{schema.LINEAGE_FILE}` among this run's artifacts"
            )
            room = schema.MAX_TAG_LENGTH - len("\n".join([*lines, more, "", tail])) - 8
            shown = 0
            while shown < len(links) and len(links[shown]) + 1 <= room:
                room -= len(links[shown]) + 1
                shown += 1
            links = [*links[:shown], more.format(len(links) - shown)]
        lines += [*links, ""]
    lines.append(tail)
    return "\n".join(lines)


def lineage_json(upstream: Mapping[str, RunRecord]) -> str:
    """Every upstream run the task consumed, by its name in requires()."""
    return json.dumps(
        {
            name: {
                "run_id": run.info.run_id,
                "experiment_id": run.info.experiment_id,
                "run_name": run.info.run_name,
            }
            for name, run in sorted(upstream.items())
        },
        indent=1,
    )


def data_inputs(tags: Mapping[str, str]) -> list[DatasetRef]:
    """Each data file the run read (as recorded when it started), as an MLflow dataset
    input; redacted ones are left out."""
    return [
        DatasetRef(record["path"], str(record["sha256"]), record["path"], "local", name)
        for name, record in sorted(schema.data_of(tags).items())
        if record.get("path") not in (None, redaction.REDACTED)
    ]


def dataset_inputs(upstream: Mapping[str, RunRecord]) -> list[DatasetRef]:
    """Each upstream artifact this run consumed, as an MLflow dataset input."""
    refs = []
    for name, run in sorted(upstream.items()):
        for artifact, record in sorted(schema.artifact_records(run.data.tags).items()):
            digest = str(record.get("sha256") or run.info.run_id)[:16]
            source = f"runs:/{run.info.run_id}/{record.get('file', artifact)}"
            refs.append(DatasetRef(f"{name}.{artifact}", digest, source))
    return refs
