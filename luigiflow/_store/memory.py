"""`MemoryStore`: the store port answered from memory, for fast tests of the engine.

It keeps MLflow's semantics where the engine depends on them: runs listed newest first
(ties by run id), deleted runs hidden from searches but readable by id, experiments
created on demand, FINISHED/FAILED/KILLED set by `terminate` with an end time.
It never imports mlflow.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence

from luigiflow._errors import RunNotFoundError
from luigiflow._store import liveness, schema
from luigiflow._store.port import DatasetRef, ExperimentRecord, MetricPoint
from luigiflow._store.records import ACTIVE, DELETED, FINISHED, RUNNING, RunData, RunInfo, RunRecord


class MemoryStore:
    """An in-memory tracking store (one per test)."""

    def __init__(self, uri: str = "memory://") -> None:
        self.uri = uri
        self._lock = threading.Lock()
        self._experiments: dict[str, ExperimentRecord] = {}
        self._runs: dict[str, RunRecord] = {}
        self._clock = itertools.count(int(time.time() * 1000))
        self.calls: list[str] = []  # every method called, for tests that count questions
        self.inputs: dict[str, list[DatasetRef]] = {}
        self.history: dict[str, list[MetricPoint]] = {}  # points added by log_metric_points

    def _now(self) -> int:
        return next(self._clock)

    def _newest_first(self, runs: list[RunRecord]) -> list[RunRecord]:
        return sorted(runs, key=lambda r: (-r.info.start_time, r.info.run_id))

    def _active_in(self, experiment_id: str) -> list[RunRecord]:
        return self._newest_first(
            [
                r
                for r in self._runs.values()
                if r.info.experiment_id == experiment_id and r.info.lifecycle_stage == ACTIVE
            ]
        )

    # ----- reads --------------------------------------------------------------------
    def experiment_id(
        self, name: str, create: bool = False, absent: bool = False, fresh: bool = False
    ) -> str | None:
        self.calls.append("experiment_id")
        with self._lock:
            current = name
            while True:  # deleted experiments are followed, never restored (as MlflowStore)
                found = [e for e in self._experiments.values() if e.name == current]
                if not found:
                    break
                if found[0].lifecycle_stage == ACTIVE:
                    return found[0].experiment_id
                current = schema.successor_experiment(name, found[0].experiment_id)
            if not create:
                return None
            exp_id = str(len(self._experiments) + 1)
            self._experiments[exp_id] = ExperimentRecord(exp_id, current, ACTIVE)
            return exp_id

    def delete_experiment(self, experiment_id: str) -> None:
        """As a user deleting it in the MLflow UI: the experiment and its runs."""
        with self._lock:
            exp = self._experiments[experiment_id]
            self._experiments[experiment_id] = ExperimentRecord(
                exp.experiment_id, exp.name, DELETED
            )
            for run in [r for r in self._runs.values() if r.info.experiment_id == experiment_id]:
                self._runs[run.info.run_id] = RunRecord(
                    dataclasses.replace(run.info, lifecycle_stage=DELETED), run.data
                )

    def experiments(self) -> list[ExperimentRecord]:
        self.calls.append("experiments")
        return list(self._experiments.values())

    def find_finished(
        self, experiment_id: str, identity: str, not_before_ms: int | None = None
    ) -> RunRecord | None:
        self.calls.append("find_finished")
        for run in self._active_in(experiment_id):
            if (
                run.info.status == FINISHED
                and run.data.tags.get(schema.IDENTITY_TAG) == identity
                and (not_before_ms is None or run.info.start_time >= not_before_ms)
            ):
                return run
        return None

    def finished_runs(
        self,
        experiment_id: str,
        ended_since_ms: int | None = None,
        not_worker: str | None = None,
    ) -> Iterator[RunRecord]:
        self.calls.append("finished_runs")
        for run in self._active_in(experiment_id):
            if run.info.status != FINISHED:
                continue
            if ended_since_ms is not None and (run.info.end_time or 0) < ended_since_ms:
                continue
            if not_worker is not None and run.data.tags.get(schema.WORKER_TAG) == not_worker:
                continue
            yield run

    def fetch_finished(self, experiment_id: str, run_ids: Sequence[str]) -> list[RunRecord]:
        self.calls.append("fetch_finished")
        wanted = set(run_ids)
        return [
            r
            for r in self._active_in(experiment_id)
            if r.info.run_id in wanted and r.info.status == FINISHED
        ]

    def runs_with_identity(self, experiment_id: str, identity: str, limit: int) -> list[RunRecord]:
        self.calls.append("runs_with_identity")
        runs = self._active_in(experiment_id)
        return [r for r in runs if r.data.tags.get(schema.IDENTITY_TAG) == identity][:limit]

    def running_runs(self, experiment_id: str, not_worker: str | None = None) -> list[RunRecord]:
        self.calls.append("running_runs")
        return [
            r
            for r in self._active_in(experiment_id)
            if r.info.status == RUNNING
            and (not_worker is None or r.data.tags.get(schema.WORKER_TAG) != not_worker)
        ]

    def all_runs(self, experiment_id: str) -> Iterator[RunRecord]:
        self.calls.append("all_runs")
        runs = [r for r in self._runs.values() if r.info.experiment_id == experiment_id]
        yield from self._newest_first(runs)

    def get_run(self, run_id: str) -> RunRecord:
        self.calls.append("get_run")
        if schema.is_short_run_id(run_id):
            matches = [r for r in self._runs if r.startswith(run_id.lower())]
            run_id = matches[0] if len(matches) == 1 else run_id
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(f"run {run_id!r} does not exist in {self.uri}")
        return run

    def get_runs(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        self.calls.append("get_runs")
        return {r: self._runs[r] for r in run_ids if r in self._runs}

    def metric_history(self, run_id: str) -> list[MetricPoint]:
        self.calls.append("metric_history")
        return list(self.history.get(run_id, []))

    # ----- writes -------------------------------------------------------------------
    def log_metric_points(self, run_id: str, points: Sequence[MetricPoint]) -> None:
        self.calls.append("log_metric_points")
        with self._lock:
            self.history.setdefault(run_id, []).extend(points)

    def create_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str],
        start_time: int | None = None,
        params: Mapping[str, str] | None = None,
    ) -> RunRecord:
        self.calls.append("create_run")
        run_id = uuid.uuid4().hex
        run = RunRecord(
            RunInfo(
                run_id,
                experiment_id,
                RUNNING,
                start_time if start_time is not None else self._now(),
                artifact_uri=f"memory://{run_id}",
                run_name=run_name,
            ),
            RunData(tags=dict(tags), params=dict(params or {})),
        )
        with self._lock:
            self._runs[run_id] = run
        return run

    def finish_run(
        self,
        run_id: str,
        status: str,
        metrics: Mapping[str, float],
        steps: Mapping[str, int],
        timestamp_ms: int,
        tags: Mapping[str, str],
        inputs: Sequence[DatasetRef],
    ) -> None:
        run = self.get_run(run_id)
        if run.info.status in liveness.ENDED_BY_OTHERS:  # compare-and-set, as the SQL path
            reason = run.data.tags.get(schema.ERROR_TAG)
            raise liveness.stopped_error(run_id, run.info.status, reason)
        if inputs:
            self.log_inputs(run_id, inputs)
        self.log_batch(run_id, metrics=metrics, tags=tags, steps=steps, timestamp_ms=timestamp_ms)
        self.terminate(run_id, status)

    def _replace(
        self, run_id: str, info: RunInfo | None = None, data: RunData | None = None
    ) -> None:
        with self._lock:
            run = self.get_run(run_id)
            self._runs[run_id] = RunRecord(info or run.info, data or run.data)

    def log_batch(
        self,
        run_id: str,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
        timestamp_ms: int | None = None,
        steps: Mapping[str, int] | None = None,
    ) -> None:
        self.calls.append("log_batch")
        data = self.get_run(run_id).data
        self._replace(
            run_id,
            data=RunData(
                {**data.tags, **(tags or {})},
                {**data.params, **(params or {})},
                {**data.metrics, **(metrics or {})},
            ),
        )

    def log_inputs(self, run_id: str, inputs: Sequence[DatasetRef]) -> None:
        self.calls.append("log_inputs")
        self.inputs.setdefault(run_id, []).extend(inputs)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.log_batch(run_id, tags={key: value})

    def terminate(self, run_id: str, status: str) -> None:
        self.calls.append("terminate")
        info = self.get_run(run_id).info
        self._replace(run_id, info=dataclasses.replace(info, status=status, end_time=self._now()))

    def delete_run(self, run_id: str) -> None:
        self.calls.append("delete_run")
        info = self.get_run(run_id).info
        self._replace(run_id, info=dataclasses.replace(info, lifecycle_stage=DELETED))
