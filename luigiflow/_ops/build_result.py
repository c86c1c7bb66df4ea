"""`BuildResult`: what one build did, assembled from its events; the runs of the tasks
it reused, found by following lineage from the top of the graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import luigi

from luigiflow._engine import events as _events
from luigiflow._engine import session as _session
from luigiflow._engine.protocol import bound_run, is_tracked
from luigiflow._ops import elsewhere
from luigiflow._store import schema
from luigiflow._store.port import TagReads
from luigiflow._store.records import ACTIVE, RunRecord
from luigiflow._task import MlflowTask


class BuildResult:
    """What one build did: every task of the graph, its run id, executed or reused.

    `runs` and `reused` are worked out on first access (following lineage tags from the
    top of the graph), so a build whose answer is "all done" costs one query.
    """

    def __init__(
        self,
        tasks: list[luigi.Task],
        roots: list[luigi.Task],
        executed: dict[luigi.Task, str],
        reused_now: dict[luigi.Task, str],
        failed: dict[luigi.Task, BaseException],
        session: _session.Session,
    ) -> None:
        self._session = session
        self.tasks = tasks
        self.roots = roots
        self.executed = list(executed)
        self.failed = failed
        # Each failed task's FAILED run and the file:line in the user's code.
        self.failure_details: dict[luigi.Task, _events.FailureDetail] = {}
        self._known = {**reused_now, **executed}
        self._reused_now = list(reused_now)
        self._runs: dict[luigi.Task, str] | None = None
        self._reused: list[luigi.Task] = []
        self._by_others: list[luigi.Task] | None = None
        # Epoch ms the build started: a reused run that ended since was made by another
        # worker during this build.
        self.started_ms = 0

    def _resolve(self) -> dict[luigi.Task, str]:
        if self._runs is None:
            runs = dict(self._known)
            reused = list(self._reused_now)
            _fill_reused_runs(
                self._session, self.tasks, self.roots, runs, self.executed, reused, self.failed
            )
            self._runs, self._reused = runs, reused
        return self._runs

    @property
    def runs(self) -> dict[luigi.Task, str]:
        """task -> run id, for every task of the graph that has a run."""
        return self._resolve()

    @property
    def reused(self) -> list[luigi.Task]:
        """Tasks whose FINISHED run already existed (not executed by this build); an
        upstream whose consumed run was deleted since has that run in `runs`, but is not
        reused."""
        self._resolve()
        return self._reused

    @property
    def by_other_workers(self) -> list[luigi.Task]:
        """Reused tasks another worker (another machine, another client) built while this
        build ran: the team case, where every client starts the same command."""
        if self._by_others is None:
            reused = self.reused
            records = self._session.store.get_runs([self.runs[t] for t in reused])
            found = {t: records[self.runs[t]] for t in reused if self.runs[t] in records}
            self._by_others = elsewhere.by_other_workers(reused, found, self.started_ms)
        return self._by_others

    def rerun_after_format_change(
        self, read: Mapping[str, RunRecord] | None = None
    ) -> dict[luigi.Task, int]:
        """Executed tasks that had a FINISHED run with the same parameters made by an
        earlier luigiflow (an older store format, whose identity formula differs):
        task -> that run's store format. One read of three tags per experiment (none of
        an experiment made during this build); `read`: runs the caller has read already."""
        new = self._session.completion.new_in_build
        executed = [
            t
            for t in self.executed
            if isinstance(t, MlflowTask) and t.get_experiment_name() not in new
        ]
        if not executed:
            return {}
        store = self._session.store
        ids = [self._known[t] for t in executed if t in self._known]
        new_runs = dict(read or {})
        new_runs.update(store.get_runs([i for i in ids if i not in new_runs]))
        found: dict[luigi.Task, int] = {}
        by_experiment: dict[str, list[MlflowTask]] = {}
        for task in executed:
            by_experiment.setdefault(task.get_experiment_name(), []).append(task)
        keys = (schema.FAMILY_TAG, schema.PARAMS_TAG, schema.STORE_FORMAT_TAG)
        for name, tasks in by_experiment.items():
            exp_id = store.experiment_id(name, create=False)
            if exp_id is None:
                continue
            rows: Iterable[tuple[Any, dict[str, str]]]
            if isinstance(store, TagReads):
                rows = store.finished_tags(exp_id, keys)
            else:
                rows = ((r.info, r.data.tags) for r in store.finished_runs(exp_id))
            older: dict[tuple[str | None, str | None], int] = {}
            for _info, tags in rows:
                fmt = schema.store_format(tags)
                if fmt < schema.STORE_FORMAT:
                    older[(tags.get(schema.FAMILY_TAG), tags.get(schema.PARAMS_TAG))] = fmt
            for task in tasks:
                run = new_runs.get(self._known.get(task, ""))
                if run is None:
                    continue
                key = (task.get_task_family(), run.data.tags.get(schema.PARAMS_TAG))
                if key in older:
                    found[task] = older[key]
        return found

    def has_run(self, task: MlflowTask) -> bool:
        """Whether `task` ended this build with a run (cheap: no lineage walk)."""
        if self._runs is not None:
            return task in self._runs
        return task in self._known or bool(bound_run(task) or task.find_run())

    def plain_complete(self, task: luigi.Task) -> bool:
        """Whether a plain Luigi task of the graph (a WrapperTask, a range tool) is
        complete after the build, as Luigi's complete() says."""
        return not is_tracked(task) and not self.failed.get(task) and bool(task.complete())

    @property
    def success(self) -> bool:
        return not self.failed

    def run_of(self, task: luigi.Task) -> str:
        """The run id recorded for `task` in this build."""
        return self.runs[task]

    def __repr__(self) -> str:
        return (
            f"BuildResult(executed={len(self.executed)}, failed={len(self.failed)}, "
            f"tasks={len(self.tasks)})"
        )


def assemble(
    session: _session.Session,
    graph: list[luigi.Task],
    roots: list[luigi.Task],
    events: list[_events.TaskEvent],
    failures_by_id: dict[str, BaseException],
) -> BuildResult:
    by_id = {t.task_id: t for t in graph}
    failed = {by_id[i]: exc for i, exc in failures_by_id.items() if i in by_id}
    executed: dict[luigi.Task, str] = {}
    reused_now: dict[luigi.Task, str] = {}
    for event in events:
        task = by_id.get(event.task_id)
        if task is None or event.kind in ("started", "present"):
            continue
        (executed if event.kind == "executed" else reused_now)[task] = event.run_id
    return BuildResult(graph, roots, executed, reused_now, failed, session)


def _fill_reused_runs(
    session: _session.Session,
    graph: list[luigi.Task],
    roots: list[luigi.Task],
    runs: dict[luigi.Task, str],
    executed: list[luigi.Task],
    reused: list[luigi.Task],
    failed: dict[luigi.Task, BaseException],
) -> None:
    """Run ids of tasks this build did not execute, following lineage from the top.

    A reused task's upstream runs are the ones its run consumed (lineage tags), which
    is the truthful answer even when duplicates of an identity exist.
    """
    pending = [t for t in graph if is_tracked(t) and t not in runs]
    if not pending:
        return
    store = session.store
    known: dict[str, RunRecord] = store.get_runs(list(runs.values()))
    # Tasks nothing downstream in this graph consumed (the roots) are looked up in one
    # batch; everything below them follows from lineage tags.
    session.completion.prefetch(t for t in roots if t in pending and not bound_run(t))
    for task in reversed(graph):  # downstream first: a run names the runs it consumed
        if not isinstance(task, MlflowTask) or task in failed:
            continue
        if task not in runs:
            # The run Luigi's complete() found during this build, else a lookup.
            found = bound_run(task) or session.completion.find_finished_run(task)
            if found is None:
                continue
            runs[task] = found.info.run_id
            known[found.info.run_id] = found
            reused.append(task)
        run = known.get(runs[task])
        if run is None:
            run = store.get_runs([runs[task]]).get(runs[task])
            if run is None:
                continue
            known[runs[task]] = run
        deps = task.requires_dict()
        consumed = schema.upstream_ids(run.data.tags)
        missing_ids = [
            consumed[name] for name, dep in deps.items() if dep not in runs and name in consumed
        ]
        known.update(store.get_runs(missing_ids))
        for name, dep in deps.items():
            tag = consumed.get(name)
            if dep not in runs and tag and tag in known:
                runs[dep] = tag
                # A run deleted since it was consumed is named (lineage), not reused.
                if known[tag].info.lifecycle_stage == ACTIVE:
                    reused.append(dep)
