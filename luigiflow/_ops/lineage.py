"""Reading what was recorded: runs of a task, a run's provenance tree, and diffs of two trees.

This is what MLflow's compare view cannot do: follow `luigiflow.upstream.*` tags across
experiments, so two results are compared along their whole chains.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from luigiflow._core.identity import decode_value, value_text
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


def _recorded(run: Run) -> dict[str, Any]:
    raw = run.data.tags.get(schema.PARAMS_TAG, "")
    if not raw or raw.startswith("@"):
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


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
    encoded = _recorded(run).get(key)
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
    """One flat record per run: id, start, identity, duplicate flag, params, metrics.

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


@dataclass(frozen=True)
class Failure:
    """Why a run FAILED or was KILLED: the error, where in the user's code, the
    traceback's last lines."""

    error: str
    where: str
    traceback_tail: list[str]


def failure_of(run: Run, tail: int = 8) -> Failure | None:
    """The recorded failure of a FAILED or KILLED run (None for other runs)."""
    if run.info.status not in ("FAILED", "KILLED"):
        return None
    from luigiflow._store.artifacts import local_artifact_path

    tags = run.data.tags
    lines: list[str] = []
    try:
        path = local_artifact_path(run.info.run_id, run.info.artifact_uri, schema.TRACEBACK_FILE)
        lines = path.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    except Exception:  # a run killed before it could store its traceback has none
        lines = []
    return Failure(tags.get(schema.ERROR_TAG, ""), tags.get(schema.ERROR_AT_TAG, ""), lines[-tail:])


def get_run(run_id: str) -> Run:
    """One run by id, or a RunNotFoundError naming it."""
    return current.get_store().get_run(run_id)


def get_runs(run_ids: list[str]) -> dict[str, Run]:
    """Many runs by id, in a few queries (unknown ids are left out)."""
    return current.get_store().get_runs(run_ids)


@dataclass
class LineageNode:
    """A run and the upstream runs it consumed, by upstream name."""

    run: Run
    upstream: dict[str, LineageNode | None] = field(default_factory=dict)

    @property
    def family(self) -> str:
        tags = self.run.data.tags
        return tags.get(schema.FAMILY_TAG) or tags.get(schema.RUN_NAME_TAG) or "?"

    def artifacts(self) -> dict[str, dict[str, Any]]:
        return schema.artifact_records(self.run.data.tags)

    def signature(self) -> str:
        """signed / unsigned / badly signed / signed (not verified: no key)."""
        return signatures.status(self.run)

    def duration_s(self) -> float | None:
        """The run's time; for a run that resumed or warm-started, with the work it took
        over (its recorded duration), as its whole curve cost."""
        info = self.run.info
        recorded = self.run.data.tags.get(schema.DURATION_TAG)
        if self.origin() is not None and recorded:
            return float(recorded)
        if info.end_time and info.start_time:
            return (info.end_time - info.start_time) / 1000
        return None

    def origin(self) -> str | None:
        """`resumed from run X after step K` / `warm-started from run X at step K`."""
        found = schema.origin_of(self.run.data.tags)
        return schema.origin_text(*found) if found else None


def lineage(run_id: str) -> LineageNode:
    """The run and its whole upstream chain, fetched one level at a time in batches."""
    root = LineageNode(get_run(run_id))
    level = [root]
    fetched: dict[str, LineageNode] = {run_id: root}
    store = current.get_store()
    while level:
        wanted = {
            value
            for node in level
            for value in schema.upstream_ids(node.run.data.tags).values()
            if value not in fetched
        }
        runs = store.get_runs(sorted(wanted))
        next_level = []
        for rid, run in runs.items():
            fetched[rid] = LineageNode(run)
            next_level.append(fetched[rid])
        for node in level:
            for name, value in sorted(schema.upstream_ids(node.run.data.tags).items()):
                node.upstream[name] = fetched.get(value)
        level = next_level
    return root


@dataclass
class StepDiff:
    """Differences at one step of two chains (path = upstream names from the result)."""

    path: str
    family_a: str | None
    family_b: str | None
    run_a: str | None
    run_b: str | None
    params: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    # data files (FileParameters) whose content differs: name -> (record A, record B),
    # each {"path", "sha256"} or None
    data: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = field(
        default_factory=dict
    )
    # the task's code fingerprint (task facts) on each side, when they differ
    code: tuple[str | None, str | None] | None = None
    # the store formats on each side, when they differ: the identity formula changed, so
    # code fingerprints and identities are not comparable (and are not reported)
    formats: tuple[int, int] | None = None


@dataclass
class ChainDiff:
    steps: list[StepDiff]
    metrics: dict[str, tuple[float | None, float | None]]
    root_a: LineageNode
    root_b: LineageNode


def _flatten(node: LineageNode, path: str, out: dict[str, LineageNode]) -> None:
    out[path] = node
    for name, child in node.upstream.items():
        if child is not None:
            _flatten(child, f"{path}/{name}", out)


def diff(run_a: str, run_b: str) -> ChainDiff:
    """What differs between two results along their whole upstream chains."""
    root_a, root_b = lineage(run_a), lineage(run_b)
    steps_a: dict[str, LineageNode] = {}
    steps_b: dict[str, LineageNode] = {}
    _flatten(root_a, root_a.family, steps_a)
    _flatten(root_b, root_a.family, steps_b)  # align both on A's name for the root
    steps = []
    for path in sorted(set(steps_a) | set(steps_b), key=lambda p: (p.count("/"), p)):
        a, b = steps_a.get(path), steps_b.get(path)
        if a is not None and b is not None and a.run.info.run_id == b.run.info.run_id:
            continue  # the same run: nothing differs here
        step = StepDiff(
            path,
            a.family if a else None,
            b.family if b else None,
            a.run.info.run_id if a else None,
            b.run.info.run_id if b else None,
        )
        if a is not None and b is not None:
            pa, pb = a.run.data.params, b.run.data.params
            for key in sorted(set(pa) | set(pb)):
                if pa.get(key) != pb.get(key):
                    step.params[key] = (pa.get(key), pb.get(key))
            da, db = schema.data_of(a.run.data.tags), schema.data_of(b.run.data.tags)
            for key in sorted(set(da) | set(db)):
                if da.get(key) != db.get(key):
                    step.data[key] = (da.get(key), db.get(key))
            fa = schema.task_facts(a.run.data.tags).get("code_fingerprint")
            fb = schema.task_facts(b.run.data.tags).get("code_fingerprint")
            format_a = schema.store_format(a.run.data.tags)
            format_b = schema.store_format(b.run.data.tags)
            if format_a != format_b:
                step.formats = (format_a, format_b)
            elif fa != fb:
                step.code = (fa, fb)
            if (
                not step.params
                and not step.data
                and step.code is None
                and step.formats is None
                and step.family_a == step.family_b
            ):
                continue  # other run, same parameters and data: the difference lies upstream
        steps.append(step)
    ma, mb = root_a.run.data.metrics, root_b.run.data.metrics
    metrics = {k: (ma.get(k), mb.get(k)) for k in sorted(set(ma) | set(mb))}
    return ChainDiff(steps, metrics, root_a, root_b)


def _matches(params: dict[str, str], conditions: dict[str, Any]) -> bool:
    return all(params.get(k) == value_text(v) for k, v in conditions.items())


def find_runs(
    task: Any,
    where: dict[str, Any] | None = None,
    upstream: dict[str, dict[str, Any]] | None = None,
) -> list[Run]:
    """FINISHED runs of `task`, newest first, filtered on its params and its chain's.

    `task` is a task class, a task family or an experiment name; `where` holds its own
    parameter values; `upstream` maps a task family anywhere up the chain to the
    parameter values that step must have had. This is the "newest coherent chain":

        lf.find_runs(Evaluate, upstream={"Train": {"algorithm": "rf"},
                                         "Process": {"logic": "plain"}})[0]
    """
    if isinstance(task, str):
        name, candidates = task, runs_of(task, None)
    else:  # a class's runs live in its experiment; none yet is an empty answer
        experiment = task.get_experiment_name()
        exists = current.get_store().experiment_id(experiment, create=False) is not None
        name, family = task.get_task_family(), task.get_task_family()
        # Classes may share one experiment (experiment_name): keep this family's runs.
        candidates = [
            r
            for r in (runs_of(experiment, None) if exists else [])
            if r.data.tags.get(schema.FAMILY_TAG, family) == family
        ]
    known = {k for r in candidates for k in r.data.params}
    for key in where or {}:
        if candidates and key not in known:
            raise _no_such_param(name, key, known)
    candidates = [r for r in candidates if _matches(r.data.params, where or {})]
    if not upstream:
        return candidates
    # Walk every candidate's chain together, one batched fetch per level.
    ancestors: dict[str, list[Run]] = {r.info.run_id: [] for r in candidates}
    frontier: dict[str, set[str]] = {
        r.info.run_id: set(schema.upstream_ids(r.data.tags).values()) for r in candidates
    }
    cache: dict[str, Run] = {}
    store = current.get_store()
    while any(frontier.values()):
        wanted = sorted({rid for ids in frontier.values() for rid in ids if rid not in cache})
        cache.update(store.get_runs(wanted))
        next_frontier: dict[str, set[str]] = {}
        for root, ids in frontier.items():
            found = [cache[i] for i in ids if i in cache]
            ancestors[root].extend(found)
            next_frontier[root] = {
                v for run in found for v in schema.upstream_ids(run.data.tags).values()
            }
        frontier = next_frontier

    def coherent(run: Run) -> bool:
        chain = ancestors[run.info.run_id]
        return all(
            any(
                a.data.tags.get(schema.FAMILY_TAG) == family and _matches(a.data.params, conditions)
                for a in chain
            )
            for family, conditions in upstream.items()
        )

    return [r for r in candidates if coherent(r)]
