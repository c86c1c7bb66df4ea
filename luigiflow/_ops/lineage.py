"""Reading what was recorded: a run's provenance tree, diffs of two trees, coherent chains.

This is what MLflow's compare view cannot do: follow `luigiflow.upstream.*` tags across
experiments, so two results are compared along their whole chains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from luigiflow._core.identity import value_text
from luigiflow._ops.run_listing import _no_such_param, runs_of
from luigiflow._store import current, schema, signatures
from luigiflow._store.records import RunRecord as Run


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
