"""`lf.runs(Task, where=...)`: the FINISHED runs of a task as a pandas DataFrame, with
the parameters of every upstream step joined as `<upstream>.<param>` columns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from luigiflow._core.identity import value_text
from luigiflow._core.suggest import did_you_mean, listing
from luigiflow._errors import ParameterError
from luigiflow._ops.lineage import find_runs
from luigiflow._store import current, schema
from luigiflow._store.records import RunRecord

if TYPE_CHECKING:
    import pandas as pd


def runs(task: Any, where: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per FINISHED run of `task` (class, family or experiment), newest first.

    Columns: run_id, start_time, identity, code (the short fingerprint of the code
    that made the run, as `luigiflow runs` shows it; `code_fingerprint` where a
    parameter is named `code`), the task's params, its metrics (prefixed `metric.` only
    where a parameter has the same name), and `<upstream path>.<param>` for each step
    of the chain the run consumed. Example::

        lf.runs(Evaluate, where={"algorithm": "rf"}).sort_values("roc_auc")
    """
    import pandas as pd

    where = dict(where or {})
    # `<upstream>.<param>` keys filter on the chain columns the frame shows.
    chain_where = {k: where.pop(k) for k in list(where) if "." in k}
    found = find_runs(task, where)
    chains = _upstream_params(found)
    if chain_where and found:
        columns = {c for joined in chains.values() for c in joined}
        for key in chain_where:
            if key not in columns:
                raise ParameterError(
                    f"runs of {_name(task)} have no upstream column {key!r}"
                    f"{did_you_mean(key, columns)} (upstream columns: {listing(columns)})"
                )
        found = [
            r
            for r in found
            if all(chains[r.info.run_id].get(k) == value_text(v) for k, v in chain_where.items())
        ]
    families = {run.data.tags.get(schema.FAMILY_TAG, "") for run in found}
    rows = []
    for run in found:
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "start_time": pd.Timestamp(run.info.start_time, unit="ms"),
            "identity": run.data.tags.get(schema.IDENTITY_TAG, ""),
        }
        # Runs of one identity may differ in code (it is not in the identity).
        code = schema.code_fingerprint_of(run.data.tags)[: schema.SHORT_CODE]
        row["code_fingerprint" if "code" in run.data.params else "code"] = code
        if len(families) > 1:  # an experiment shared by task classes: say whose run
            row["task"] = run.data.tags.get(schema.FAMILY_TAG, "")
        row.update(run.data.params)
        # A metric named like a parameter keeps both: the metric as `metric.<name>`.
        row.update({(f"metric.{k}" if k in row else k): v for k, v in run.data.metrics.items()})
        row.update(chains.get(run.info.run_id, {}))
        rows.append(row)
    empty = ["run_id", "start_time", "identity", "code"]
    return pd.DataFrame(rows, columns=None if rows else empty)


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


def _name(task: Any) -> str:
    return task if isinstance(task, str) else task.get_task_family()
