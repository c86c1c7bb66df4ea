"""`lf.runs(Task, where=...)`: the FINISHED runs of a task as a pandas DataFrame, with
the parameters of every upstream step joined as `<upstream>.<param>` columns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from luigiflow._ops.lineage import find_runs
from luigiflow._store import current, schema
from luigiflow._store.records import RunRecord

if TYPE_CHECKING:
    import pandas as pd


def runs(task: Any, where: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per FINISHED run of `task` (class, family or experiment), newest first.

    Columns: run_id, start_time, identity, the task's params, its metrics (prefixed
    `metric.` only where a parameter has the same name), and `<upstream path>.<param>`
    for each step of the chain the run consumed. Example::

        lf.runs(Evaluate, where={"algorithm": "rf"}).sort_values("roc_auc")
    """
    import pandas as pd

    found = find_runs(task, where)
    chains = _upstream_params(found)
    rows = []
    for run in found:
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "start_time": pd.Timestamp(run.info.start_time, unit="ms"),
            "identity": run.data.tags.get(schema.IDENTITY_TAG, ""),
        }
        row.update(run.data.params)
        # A metric named like a parameter keeps both: the metric as `metric.<name>`.
        row.update({(f"metric.{k}" if k in row else k): v for k, v in run.data.metrics.items()})
        row.update(chains.get(run.info.run_id, {}))
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["run_id", "start_time", "identity"])


def _upstream_params(found: list[RunRecord]) -> dict[str, dict[str, str]]:
    """run id -> {"<path>.<param>": value} along the chain of upstream runs it consumed."""
    store = current.get_store()
    joined: dict[str, dict[str, str]] = {r.info.run_id: {} for r in found}
    # (root run id, path, run id of the step) per level; one batched fetch per level.
    frontier = [
        (r.info.run_id, name, rid)
        for r in found
        for name, rid in schema.upstream_ids(r.data.tags).items()
    ]
    fetched: dict[str, RunRecord] = {}
    while frontier:
        fetched.update(store.get_runs(sorted({rid for _, _, rid in frontier} - set(fetched))))
        next_frontier: list[tuple[str, str, str]] = []
        for root, path, rid in frontier:
            step = fetched.get(rid)
            if step is None:
                continue
            for key, value in step.data.params.items():
                joined[root].setdefault(f"{path}.{key}", value)
            next_frontier.extend(
                (root, f"{path}.{name}", up)
                for name, up in schema.upstream_ids(step.data.tags).items()
            )
        frontier = next_frontier
    return joined
