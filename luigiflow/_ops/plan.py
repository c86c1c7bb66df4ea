"""Why each task will run — or which run it will reuse — without writing to the store.

`make_plan` mirrors what Luigi will do: a complete task is reused and its upstream is
not needed; an incomplete one runs, and the reason is worked out against the nearest
earlier FINISHED run of the same task (fewest differing parameters, newest first).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import luigi

from luigiflow._command.task import CommandTask
from luigiflow._core import provenance, redaction
from luigiflow._core.labels import task_label
from luigiflow._engine import checkpoints, execution
from luigiflow._engine import session as _session
from luigiflow._errors import TaskNotFoundError
from luigiflow._ops import recorded as _recorded
from luigiflow._ops.graph import walk_graph
from luigiflow._ops.recorded import (
    DataChange,
    ParamChange,
    _encoded_version,
    _environment_changes,
    _param_changes,
    _short,
    _show_version,
    code_changes,
    recorded_params,
)
from luigiflow._store import schema, signatures
from luigiflow._store.port import RunStore, TagReads
from luigiflow._store.records import RunData
from luigiflow._store.records import RunRecord as Run
from luigiflow._task import MlflowTask

REUSED = "reused"
WILL_RUN = "will run"
NOT_NEEDED = "not needed"


@dataclass
class PlanEntry:
    """The decision for one task of the graph."""

    task: luigi.Task
    status: str
    run_id: str | None = None
    reasons: list[str] = field(default_factory=list)
    changed: list[ParamChange] = field(default_factory=list)
    code_changed: bool = False
    code_changes: list[str] = field(default_factory=list)  # "file: name" pieces edited
    # Reused although not the newest run of its identity: under --rerun-changed, an older
    # run whose code matches the current code (or that consumed the upstream runs reused).
    older_match: bool = False
    data_changes: list[DataChange] = field(default_factory=list)
    environment_changes: list[str] = field(default_factory=list)  # informational
    upstream: dict[str, PlanEntry] = field(default_factory=dict)

    def walk(self) -> Iterable[PlanEntry]:
        yield self
        for child in self.upstream.values():
            yield from child.walk()

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": repr(self.task),
            "family": self.task.get_task_family(),
            "identity": self.task.identity if isinstance(self.task, MlflowTask) else None,
            "status": self.status,
            "run_id": self.run_id,
            "reasons": self.reasons,
            "changed_params": [
                {"name": c.name, "old": _jsonable(c.old), "new": _jsonable(c.new)}
                for c in self.changed
            ],
            "code_changed": self.code_changed,
            "code_changes": self.code_changes,
            "older_match": self.older_match,
            "data_changes": [vars(c) for c in self.data_changes],
            "environment_changes": self.environment_changes,
            "upstream": {k: v.to_dict() for k, v in self.upstream.items()},
        }


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


# Early cutoff (_engine/cutoff): what a re-run upstream produces is known only after it
# ran, so plan says both outcomes.
_CUTOFF = " (reused instead if their outputs come out byte-identical)"


class _Planner:
    def __init__(self, store: RunStore, rerun_changed: bool, rerun: frozenset[str]) -> None:
        self.store = store
        self.rerun_changed = rerun_changed
        self.rerun = rerun
        self.found: dict[luigi.Task, Run | None] = {}
        self.entries: dict[tuple[str, bool], PlanEntry] = {}
        self.family_runs: dict[tuple[str, str], list[_Past]] = {}
        self.stale: dict[luigi.Task, bool] = {}
        # Tasks reused with an older run than the newest, and why (see `_stale`).
        self.older: dict[luigi.Task, str] = {}
        # Tasks whose newest run consumed another run of an upstream than the one reused
        # now, with no older run that consumed it: those upstream names.
        self.moved: dict[luigi.Task, list[str]] = {}

    def decide(self, task: luigi.Task, needed: bool) -> PlanEntry:
        key = (task.task_id, needed)
        if key in self.entries:
            return self.entries[key]
        if not isinstance(task, MlflowTask):
            entry = self._decide_plain(task, needed)
            self.entries[key] = entry
            return entry
        is_stale = self._stale(task)  # may choose an older run of the task: first
        run = self.found.get(task)
        code_changed = run is not None and _recorded.code_changed(task, run)
        changes = code_changes(task, run) if code_changed and run is not None else []
        what = f": {', '.join(changes)}" if changes else ""
        if run is not None and not is_stale:
            entry = PlanEntry(task, REUSED, run.info.run_id, code_changed=code_changed)
            entry.code_changes = changes
            if task in self.older:
                entry.older_match = True
                entry.reasons.append(self.older[task])
            elif code_changed:
                entry.reasons.append(_recorded.changed_reason(changes))
            elif provenance.code_fingerprint(type(task)) == provenance.UNKNOWN and (
                # a stage made from a file has no class source, but its command and
                # scripts are in its identity: an edit is seen
                task._identity_code() in (None, provenance.UNKNOWN)
            ):
                entry.reasons.append(
                    "code unknown: the source of this class cannot be found, so a code "
                    "change would not be seen"
                )
            entry.environment_changes = _environment_changes(run)
            if entry.environment_changes:
                entry.reasons.append(
                    "installed packages differ from this run (informational): "
                    + ", ".join(entry.environment_changes)
                )
            for name, dep in task.requires_dict().items():
                entry.upstream[name] = self.decide(dep, needed=False)
        elif not needed:
            entry = PlanEntry(task, NOT_NEEDED, reasons=["its downstream task is reused"])
        else:
            entry = PlanEntry(task, WILL_RUN)
            for name, dep in task.requires_dict().items():
                entry.upstream[name] = self.decide(dep, needed=True)
            if run is not None and task.get_task_family() in self.rerun:
                entry.reasons.append(
                    f"--rerun {task.get_task_family()}: re-executed although run "
                    f"{run.info.run_id} completes it"
                )
            elif run is not None and getattr(task, "always_changed", False):
                entry.reasons.append(
                    f"always_changed: re-executed in every build although run "
                    f"{run.info.run_id} completes it"
                )
            elif run is not None and code_changed and self.rerun_changed:
                entry.code_changed = True
                entry.code_changes = changes
                entry.reasons.append(f"code changed since run {run.info.run_id}{what}")
            elif run is not None and task in self.moved:
                entry.reasons.append(
                    f"run {run.info.run_id} consumed other runs of {', '.join(self.moved[task])} "
                    "than those reused now, and no run of this task consumed those"
                )
            elif run is not None:  # complete, but an upstream is re-run
                stale = [n for n, e in entry.upstream.items() if e.status == WILL_RUN]
                entry.reasons.append(f"upstream will run: {', '.join(stale)}{_CUTOFF}")
            else:
                self._explain(task, entry)
            start = checkpoints.starting_point(task, self.store)
            if start:  # a training that continues another run's checkpoint
                entry.reasons.append(start)
        self.entries[key] = entry
        return entry

    def _decide_plain(self, task: luigi.Task, needed: bool) -> PlanEntry:
        # A plain Luigi task (a WrapperTask, a range tool, any luigi.Task) is decided as
        # Luigi decides it, by its complete(); the luigiflow tasks below it are shown
        # too, since Luigi walks into an incomplete task's requirements.
        complete = task.complete()
        entry = PlanEntry(task, REUSED if complete else WILL_RUN)
        for name, dep in _named_requirements(task).items():
            entry.upstream[name] = self.decide(dep, needed=needed and not complete)
        if complete:
            entry.reasons.append("complete (a plain Luigi task)")
        elif isinstance(task, luigi.WrapperTask) or not luigi.task.flatten(task.output()):
            pending = [n for n, e in entry.upstream.items() if e.status == WILL_RUN]
            entry.reasons.append(
                f"its requirements will run: {', '.join(pending)}"
                if pending
                else "its Luigi complete() is false"
            )
        else:
            entry.reasons.append("its Luigi output does not exist")
        return entry

    def _stale(self, task: luigi.Task) -> bool:
        """Complete, but re-run: named by --rerun, or its code changed under
        --rerun-changed, or one of these is upstream of it.

        Under --rerun-changed, a task whose code changed since its newest run, or whose
        newest run consumed another run of an upstream than the one reused now, is
        reused with an older run of its identity made by the current code on the
        upstream runs reused now, when there is one (reuse after a revert): it becomes
        the task's run in `found`."""
        if not isinstance(task, MlflowTask):
            return False
        if task in self.stale:
            return self.stale[task]
        run = self.found.get(task)
        deps = task.requires_dict()
        upstream_stale = [self._stale(d) for d in deps.values()]  # each decided first
        result = run is not None and (
            task.get_task_family() in self.rerun
            or getattr(task, "always_changed", False)  # DVC's always_changed stages
            or any(upstream_stale)
        )
        if run is not None and not result and self.rerun_changed:
            changed = _recorded.code_changed(task, run)
            moved = self._moved_upstream(task, run)
            if changed or moved:
                older = self._older_match(task)
                if older is None:
                    result = True
                    if not changed:
                        self.moved[task] = moved
                else:
                    self.found[task] = older
                    self.older[task] = f"reused run {older.info.run_id} " + (
                        "(its code matches the current code)"
                        if changed
                        else "(it consumed the upstream runs reused now)"
                    )
        self.stale[task] = result
        return result

    def _moved_upstream(self, task: MlflowTask, run: Run) -> list[str]:
        """Upstream names whose run reused now was chosen older than the newest (see
        `_stale`) and is not the one `run` consumed."""
        consumed = schema.upstream_ids(run.data.tags)
        return [
            name
            for name, dep in task.requires_dict().items()
            if dep in self.older
            and (chosen := self.found.get(dep)) is not None
            and consumed.get(name) != chosen.info.run_id
        ]

    def _older_match(self, task: MlflowTask) -> Run | None:
        """An older run of the task made by the current code on the upstream runs reused
        now (see `_stale`)."""
        upstream = {
            name: found.info.run_id
            for name, dep in task.requires_dict().items()
            if (found := self.found.get(dep)) is not None
        }
        return _recorded.run_of_current_code(self.store, task, upstream)

    def _explain(self, task: MlflowTask, entry: PlanEntry) -> None:
        running = [n for n, e in entry.upstream.items() if e.status == WILL_RUN]
        if running:
            entry.reasons.append(f"upstream will run: {', '.join(running)}{_CUTOFF}")
        same = [p.run_id for p in self._runs_of_family(task) if p.identity == task.identity]
        fetched = self.store.get_runs(same) if same else {}
        ignored = [fetched[i] for i in same if i in fetched and not signatures.trusted(fetched[i])]
        for run in ignored:  # with a team key: runs of this identity not signed with it
            kind = signatures.status(run)
            entry.reasons.append(
                f"{kind} run ignored: {run.info.run_id} "
                "(only runs signed with the team key are reused)"
            )
        if ignored and not running:
            return
        nearest = self._nearest_run(task)
        if nearest is None:
            if not running:
                entry.reasons.append("no run of this task yet")
            return
        entry.changed = _param_changes(task, nearest)
        prefix = f"differs from nearest run {nearest.info.run_id}: "
        for change in entry.changed:
            entry.reasons.append(
                f"{prefix}parameter {change.name} changed: {change.old} -> {change.new}"
            )
        facts = schema.task_facts(nearest.data.tags)
        old_version = json.dumps(facts["version"]) if "version" in facts else None
        new_version = json.dumps(_encoded_version(task))
        if old_version is not None and old_version != new_version:
            entry.reasons.append(
                f"{prefix}version changed: {_show_version(old_version)} -> {task.version!r}"
            )
        old_data = schema.data_of(nearest.data.tags)
        for name, (path, digest) in execution.data_files(task).items():
            if redaction.looks_secret(name):
                continue  # recorded redacted: not comparable; the identity still tells
            before = old_data.get(name, {}).get("sha256")
            if before != digest:
                entry.data_changes.append(DataChange(name, path, before, digest))
                entry.reasons.append(
                    f"{prefix}data changed: {path} (hash {_short(before)} -> {_short(digest)})"
                )
        old_format = schema.store_format(nearest.data.tags)
        if old_format < schema.STORE_FORMAT:
            entry.reasons.append(f"{prefix}{schema.format_change(old_format)}")
        elif (
            not entry.changed
            and not entry.data_changes
            and not running
            and old_version == new_version
        ):
            if task.code_in_identity and _recorded.code_changed(task, nearest):
                entry.code_changed = True
                entry.code_changes = code_changes(task, nearest)
                what = ", ".join(entry.code_changes) or "the task's code"
                entry.reasons.append(f"{prefix}code changed (code_in_identity is on): {what}")
            else:
                moved = [
                    n
                    for n, e in entry.upstream.items()
                    if e.run_id
                    and nearest.data.tags.get(schema.upstream_tag(n)) not in (None, e.run_id)
                ]
                changes = (
                    task.changes_since(nearest.data.tags) if isinstance(task, CommandTask) else []
                )
                what = (
                    f"upstream result changed: {', '.join(moved)}"
                    if moved
                    else "; ".join(changes) or "identity"
                )
                entry.reasons.append(f"{prefix}{what}")

    def _nearest_run(self, task: MlflowTask) -> Run | None:
        pasts = self._runs_of_family(task)
        if not pasts:
            return None
        # Fewest differing parameters wins (counted as `_param_changes` lists them); the
        # newest among equals (runs are newest first). Only the winner is read whole.
        new = task.encoded_params()
        names = [name for name, param in task.get_params() if param.significant]

        def changes(past: _Past) -> int:
            old = past.params
            return sum(
                1
                for n in names
                if old.get(n) != redaction.REDACTED_ENCODED and old.get(n) != new.get(n)
            )

        nearest = min(pasts, key=changes).run_id
        return self.store.get_runs([nearest]).get(nearest)

    def _runs_of_family(self, task: MlflowTask) -> list[_Past]:
        key = (task.get_experiment_name(), task.get_task_family())
        if key not in self.family_runs:
            exp_id = self.store.experiment_id(key[0], create=False)
            pasts: list[_Past] = []
            if exp_id is not None:
                runs: Iterable[Run] = ()
                if isinstance(self.store, TagReads):  # only the tags read below
                    tags = (schema.FAMILY_TAG, schema.IDENTITY_TAG, schema.PARAMS_TAG)
                    runs = (
                        Run(info, RunData(only, {}, {}))
                        for info, only in self.store.finished_tags(exp_id, tags)
                    )
                else:
                    runs = self.store.finished_runs(exp_id)
                pasts = [
                    _Past(
                        r.info.run_id,
                        r.data.tags.get(schema.IDENTITY_TAG, ""),
                        recorded_params(r) or {},
                    )
                    for r in runs
                    if r.data.tags.get(schema.FAMILY_TAG) == key[1]
                ]
            self.family_runs[key] = pasts
        return self.family_runs[key]


@dataclass(frozen=True)
class _Past:
    """What the plan keeps of one FINISHED run of a family to explain why a task will run:
    not the run with all its tags (a family can hold 100,000 runs; the plan's memory
    stays small), only what picks the nearest run and the runs of the task's identity."""

    run_id: str
    identity: str
    params: dict[str, Any]  # as recorded (encoded); {} for a run that recorded none


def _named_requirements(task: luigi.Task) -> dict[str, luigi.Task]:
    """A plain Luigi task's requirements by name: the dict's keys, else the task label."""
    required = task.requires()
    if isinstance(required, dict):
        return {str(k): t for k, v in required.items() for t in luigi.task.flatten(v)}
    return {task_label(t): t for t in luigi.task.flatten(required)}


def make_plan(
    roots: Iterable[luigi.Task],
    rerun_changed: bool = False,
    session: _session.Session | None = None,
    rerun: Iterable[str] = (),
) -> list[PlanEntry]:
    """One entry tree per root; creates nothing in the store.

    `rerun` names task families to re-execute even though complete (with everything
    downstream of them); `rerun_changed` does the same for tasks whose code changed.
    """
    roots = list(roots)
    graph = walk_graph(roots)
    rerun = frozenset(rerun)
    families = {t.get_task_family() for t in graph}
    unknown = sorted(rerun - families)
    if unknown:
        raise TaskNotFoundError(
            f"--rerun {', '.join(unknown)}: no such task in the graph of "
            f"{', '.join(map(repr, roots))}; its tasks: {', '.join(sorted(families))}"
        )
    session = session or _session.current()
    planner = _Planner(session.store, rerun_changed, rerun)
    mlflow_tasks = [t for t in graph if isinstance(t, MlflowTask)]
    session.completion.prefetch(mlflow_tasks)
    for task in mlflow_tasks:
        planner.found[task] = session.completion.find_finished_run(task)
    return [planner.decide(root, needed=True) for root in roots]


def tasks_to_force(plan: list[PlanEntry]) -> list[MlflowTask]:
    """Complete tasks a --rerun / --rerun-changed plan re-runs, with their downstream."""
    forced = []
    for root in plan:
        for entry in root.walk():
            if (
                entry.status == WILL_RUN
                and isinstance(entry.task, MlflowTask)
                and entry.task not in forced
            ):
                forced.append(entry.task)
    return forced


def runs_to_reuse(plan: list[PlanEntry]) -> dict[MlflowTask, str]:
    """Tasks a --rerun-changed plan reuses with an older run than the newest of their
    identity (`build(reuse=...)` completes them with it), and that run."""
    return {
        entry.task: entry.run_id
        for root in plan
        for entry in root.walk()
        if entry.older_match and entry.run_id and isinstance(entry.task, MlflowTask)
    }
