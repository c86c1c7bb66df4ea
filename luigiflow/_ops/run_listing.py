"""Listing the runs of a task: `luigiflow runs` and `lf.runs`' rows, filtered and sorted.

A `--where` value is read with the type its parameter was recorded with; `--limit` reads
only the head of the store's listing, so a listing's memory stays flat with the store.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from luigiflow._core.identity import decode_value
from luigiflow._core.suggest import did_you_mean, listing
from luigiflow._errors import ParameterError, RunNotFoundError
from luigiflow._store import current, schema, signatures
from luigiflow._store.port import ExperimentRecord, IdentityReads, RunStore
from luigiflow._store.records import ACTIVE
from luigiflow._store.records import RunRecord as Run

STATUSES: dict[str, tuple[str, ...]] = {
    "finished": ("FINISHED",),
    "failed": ("FAILED",),
    "killed": ("KILLED",),
    "all": ("FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED"),
}


def runs_of(name: str, where: dict[str, str] | None = None, status: str = "finished") -> list[Run]:
    """Runs of a task family or experiment `name`, newest first, filtered on params.

    `status` is finished (the default), failed, killed or all (deleted runs never).
    Each `where` value is read with the type its parameter was recorded with (so
    `lowercase=false`, `ratio=1` and `day=2026-01-05` match a bool, a float and a
    date), and compared in Python, so quotes and unicode in values need no escaping;
    a parameter no run has is an error, not an empty answer.
    """
    store = current.get_store()
    exp_id = store.experiment_id(name, create=False)
    runs: list[Run] = []
    if exp_id is not None:
        runs = list(_listed(store, exp_id, status))
    else:
        names = []
        for exp in store.experiments():
            if exp.lifecycle_stage != "active":
                continue
            names.append(exp.name)
            runs.extend(_listed(store, exp.experiment_id, status, family=name))
        runs.sort(key=lambda r: r.info.start_time, reverse=True)
        if not runs:
            _refuse_if_deleted(name, store.experiments(), store.uri)
            raise RunNotFoundError(
                f"no experiment and no task family named {name!r} in {store.uri}"
                f"{did_you_mean(name, names)} (luigiflow runs takes the experiment or the "
                f"task class name; experiments: {listing(names)})"
            )
    known = {k for r in runs for k in r.data.params}
    for key, value in (where or {}).items():
        if runs and key not in known:
            raise _no_such_param(name, key, known)
        runs = [r for r in runs if _param_matches(r, key, value)]
    return runs


def _no_such_param(name: str, key: str, known: set[str]) -> ParameterError:
    return ParameterError(
        f"runs of {name} have no parameter {key!r}{did_you_mean(key, known)} "
        f"(parameters: {listing(known)})"
    )


def _listed(store: RunStore, exp_id: str, status: str, family: str | None = None) -> Iterator[Run]:
    """Runs of one experiment with a status `runs_of` lists (of one family), newest first."""
    wanted = STATUSES[status]
    if wanted == ("FINISHED",):
        runs: Iterator[Run] = store.finished_runs(exp_id)
    else:
        runs = (
            r
            for r in store.all_runs(exp_id)
            if r.info.status in wanted and r.info.lifecycle_stage == "active"
        )
    if family is None:
        return runs
    return (r for r in runs if r.data.tags.get(schema.FAMILY_TAG) == family)


def run_listing(
    name: str,
    where: dict[str, str] | None = None,
    status: str = "finished",
    sort_by: str | None = None,
    ascending: bool = False,
    limit: int | None = None,
    linked: set[str] | None = None,
) -> list[dict[str, Any]]:
    """The rows `luigiflow runs` shows (see `runs_of` and `run_rows`): only the runs with
    ids in `linked` (a sweep's) if given, sorted by metric `sort_by` (missing last), at
    most `limit`. With a limit, no more than `limit` runs are held whole at a time."""
    if limit:
        quick = not where and not sort_by and linked is None
        rows = _newest_rows(name, status, limit) if quick else None
        if rows is None:
            rows = _streamed_rows(name, where or {}, status, sort_by, ascending, limit, linked)
        if rows is not None:
            return rows
    found = runs_of(name, where, status)
    if linked is not None:
        found = [r for r in found if r.info.run_id in linked]
    if sort_by:
        check_metric(name, sort_by, found)
    rows = run_rows(found)
    if sort_by:
        missing = [r for r in rows if sort_by not in r["metrics"]]
        present = [r for r in rows if sort_by in r["metrics"]]
        present.sort(key=lambda r: r["metrics"][sort_by], reverse=not ascending)
        rows = present + missing
    return rows[:limit] if limit else rows


def _merged(store: RunStore, name: str, status: str) -> tuple[Iterator[Run], list[str], bool]:
    """What `runs_of` lists before its filters, as one stream newest first; the ids of the
    experiments read; whether `name` is a family (no experiment has that name)."""
    exp_id = store.experiment_id(name, create=False)
    if exp_id is not None:
        return _listed(store, exp_id, status), [exp_id], False
    exp_ids = [e.experiment_id for e in store.experiments() if e.lifecycle_stage == "active"]
    streams = [_listed(store, e, status, name) for e in exp_ids]
    # Stable like runs_of's sort: equal start times keep the experiments' order.
    merged = heapq.merge(*streams, key=lambda r: r.info.start_time, reverse=True)
    return merged, exp_ids, True


def _newest_rows(name: str, status: str, limit: int) -> list[dict[str, Any]] | None:
    """The newest `limit` rows of `runs_of(name, None, status)`, read from the head of the
    store's listing, with duplicates counted by the store: `runs --limit 20` in an
    experiment of 100,000 runs builds 20 runs, not 100,000. None: a store that cannot
    count runs by identity (`IdentityReads`), or nothing to list (`runs_of` says why)."""
    store = current.get_store()
    if not isinstance(store, IdentityReads):
        return None
    merged, exp_ids, family = _merged(store, name, status)
    runs = list(itertools.islice(merged, limit))
    if not runs and family:
        return None
    counts: dict[str, int] = {}
    if "FINISHED" in STATUSES[status]:
        # An identity names one family (it is hashed in): counting by identity in each
        # experiment counts what runs_of would list.
        identities = {i for r in runs if (i := r.data.tags.get(schema.IDENTITY_TAG, ""))}
        for e in exp_ids if identities else []:
            for identity, count in store.finished_counts(e, identities).items():
                counts[identity] = counts.get(identity, 0) + count
    return run_rows(runs, counts)


def _streamed_rows(
    name: str,
    where: dict[str, str],
    status: str,
    sort_by: str | None,
    ascending: bool,
    limit: int,
    linked: set[str] | None,
) -> list[dict[str, Any]] | None:
    """`run_listing` with a limit, in one pass over the store's listing: the rows (and
    errors) of filtering and sorting the whole listing, holding at most `limit` runs
    whole, plus a metric value per run for a sort and an identity per FINISHED run for
    the duplicate counts. None: nothing to list (`runs_of` says why)."""
    store = current.get_store()
    merged, _, family = _merged(store, name, status)
    keys = list(where)
    known: set[str] = set()  # parameters of every listed run (runs_of's `known`)
    reached = [False] * len(keys)  # reached[k]: a run passed the filters before keys[k]
    metrics: set[str] = set()  # metrics of the runs kept (check_metric's `known`)
    counts: dict[str, int] = {}  # identity -> FINISHED runs kept (run_rows' `seen`)
    listed = found = False
    head: list[Run] = []  # unsorted: the first `limit` runs kept
    present: list[tuple[str, float]] = []  # sorted: (run id, value), in listing order
    missing: list[Run] = []  # sorted: the first `limit` runs without the metric
    for run in merged:
        listed = True
        known.update(run.data.params)
        passed = True
        for k, key in enumerate(keys):
            reached[k] = True
            if not _param_matches(run, key, where[key]):
                passed = False
                break
        if not passed or (linked is not None and run.info.run_id not in linked):
            continue
        found = True
        metrics.update(run.data.metrics)
        if run.info.status == "FINISHED":  # retries of a failed task are no duplicates
            identity = run.data.tags.get(schema.IDENTITY_TAG, "")
            counts[identity] = counts.get(identity, 0) + 1
        if sort_by is None:
            if len(head) < limit:
                head.append(run)
        elif sort_by in run.data.metrics:
            present.append((run.info.run_id, run.data.metrics[sort_by]))
        elif len(missing) < limit:
            missing.append(run)
    if not listed and family:
        return None
    for k, key in enumerate(keys):
        if reached[k] and key not in known:
            raise _no_such_param(name, key, known)
    if sort_by is not None:
        if found and sort_by not in metrics:
            raise _no_such_metric(name, sort_by, metrics)
        # The same sort as run_listing's over the same values in the same order (NaN
        # included): the same runs come first. Only those are read again, whole.
        present.sort(key=lambda p: p[1], reverse=not ascending)
        ids = [run_id for run_id, _ in present[:limit]]
        fetched = store.get_runs(ids) if ids else {}
        head = [fetched[i] for i in ids if i in fetched] + missing[: limit - len(ids)]
    return run_rows(head, counts)


def _refuse_if_deleted(name: str, experiments: list[ExperimentRecord], uri: str) -> None:
    """Say so when `name` is an experiment a user deleted (its runs went with it) and no
    run has made its successor yet (a build would: see `schema.successor_experiment`)."""
    by_name = {e.name: e for e in experiments}
    deleted, current = None, name
    while current in by_name and by_name[current].lifecycle_stage != ACTIVE:
        deleted = by_name[current]
        current = schema.successor_experiment(name, deleted.experiment_id)
    if deleted is None:
        return
    exp_id = deleted.experiment_id
    raise RunNotFoundError(
        f"experiment {deleted.name!r} (id {exp_id}) was deleted in {uri}, with its runs: "
        f"they are never reused, and the next run of {name} goes to a new experiment "
        f"{current!r}; to see its runs: mlflow runs list --experiment-id {exp_id} "
        f"--view deleted_only (mlflow experiments restore --experiment-id {exp_id} brings "
        "them back)"
    )


def check_metric(name: str, metric: str, runs: list[Run]) -> None:
    """A metric to sort by must exist on some run: a misspelt one is an error."""
    known = {k for r in runs for k in r.data.metrics}
    if runs and metric not in known:
        raise _no_such_metric(name, metric, known)


def _no_such_metric(name: str, metric: str, known: set[str]) -> ParameterError:
    return ParameterError(
        f"runs of {name} have no metric {metric!r}{did_you_mean(metric, known)} "
        f"(metrics: {listing(known)})"
    )


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _parse_as(kind: str, text: str) -> Any:
    """`text` read as a value of the recorded kind (see `_core.identity.encode_value`)."""
    if kind == "bool":
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError("expected true or false")
        return word in _TRUE
    parsers: dict[str, Any] = {
        "int": int,
        "float": float,
        "decimal": Decimal,
        "date": dt.date.fromisoformat,
        "datetime": dt.datetime.fromisoformat,
        "time": dt.time.fromisoformat,
    }
    return parsers[kind](text.strip())


def _param_matches(run: Run, key: str, text: str) -> bool:
    encoded = schema.encoded_params(run.data.tags).get(key)
    kind = encoded[0] if isinstance(encoded, list) and encoded else None
    if kind == "enum" and isinstance(encoded, list):
        return bool(encoded[2] == text)
    if kind not in ("bool", "int", "float", "decimal", "date", "datetime", "time"):
        return run.data.params.get(key) == text  # text as MLflow shows it
    try:
        wanted = _parse_as(kind, text)
    except (ValueError, ArithmeticError) as exc:
        raise ParameterError(
            f"--where {key}={text}: {key} is recorded as a {kind} and {text!r} is not one ({exc})"
        ) from None
    return bool(decode_value(encoded) == wanted)


def run_rows(
    runs: list[Run], finished_counts: Mapping[str, int] | None = None
) -> list[dict[str, Any]]:
    """One flat record per run: id, start, identity, duplicate flag, code fingerprint,
    params, metrics.

    A run is a duplicate when its identity has more than one FINISHED run: among `runs`,
    or as `finished_counts` (identity -> FINISHED runs) says when `runs` are only a part.
    """
    seen: dict[str, int] = dict(finished_counts or {})
    for run in runs if finished_counts is None else []:
        if run.info.status != "FINISHED":  # retries of a failed task are no duplicates
            continue
        identity = run.data.tags.get(schema.IDENTITY_TAG, "")
        seen[identity] = seen.get(identity, 0) + 1
    rows = []
    for run in runs:
        identity = run.data.tags.get(schema.IDENTITY_TAG, "")
        rows.append(
            {
                "run_id": run.info.run_id,
                "status": run.info.status,
                "start_time": run.info.start_time,
                "identity": identity,
                "duplicate": bool(identity) and seen.get(identity, 0) > 1,
                # code is not in the identity: duplicates may differ in code
                "code": schema.code_fingerprint_of(run.data.tags),
                "signed": SIGNED_MARK[signatures.status(run)],
                "task": run.data.tags.get(schema.FAMILY_TAG, ""),
                "params": dict(run.data.params),
                "metrics": dict(run.data.metrics),
                "error": run.data.tags.get(schema.ERROR_TAG, ""),
            }
        )
    return rows


# How `runs` marks a run's signature: without a key "yes" means "carries one" (unchecked).
SIGNED_MARK = {
    signatures.SIGNED: "yes",
    signatures.UNCHECKED: "yes",
    signatures.UNSIGNED: "no",
    signatures.BAD: "bad",
}
