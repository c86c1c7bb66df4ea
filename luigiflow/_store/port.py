"""The store port: every question and write the engine and the operations put to a
tracking store. `MlflowStore` answers through MLflow's client; `MemoryStore` answers
from memory for the fast unit tier. Both pass one contract suite (tests/store)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from luigiflow._store.records import RunInfo, RunRecord


@dataclass(frozen=True)
class ExperimentRecord:
    experiment_id: str
    name: str
    lifecycle_stage: str


@dataclass(frozen=True)
class DatasetRef:
    """Something a run read, shown as a dataset input in MLflow's UI: an upstream
    artifact (source type `mlflow_run`), or a data file of a FileParameter (`local`)."""

    name: str
    digest: str
    source: str
    source_type: str = "mlflow_run"
    context: str = "upstream"  # MLflow's mlflow.data.context: what the input was used for


@dataclass(frozen=True)
class MetricPoint:
    """One logged value of a metric, as MLflow keeps it in a run's history."""

    key: str
    value: float
    timestamp_ms: int
    step: int


class RunStore(Protocol):
    """What luigiflow asks of a tracking store (runs come back newest first)."""

    uri: str

    # ----- reads --------------------------------------------------------------------
    def experiment_id(
        self, name: str, create: bool = False, absent: bool = False, fresh: bool = False
    ) -> str | None:
        """The active experiment holding `name`'s runs (created when `create`); `absent`:
        the caller just found none, so a create may be tried before a lookup; `fresh`:
        looked up even when known (it may have been deleted since)."""
        ...

    def experiments(self) -> list[ExperimentRecord]: ...

    def find_finished(
        self, experiment_id: str, identity: str, not_before_ms: int | None = None
    ) -> RunRecord | None: ...

    def finished_runs(
        self,
        experiment_id: str,
        ended_since_ms: int | None = None,
        not_worker: str | None = None,
    ) -> Iterator[RunRecord]: ...

    def fetch_finished(self, experiment_id: str, run_ids: Sequence[str]) -> list[RunRecord]: ...

    def runs_with_identity(
        self, experiment_id: str, identity: str, limit: int
    ) -> list[RunRecord]: ...

    def running_runs(
        self, experiment_id: str, not_worker: str | None = None
    ) -> list[RunRecord]: ...

    def all_runs(self, experiment_id: str) -> Iterator[RunRecord]: ...

    def get_run(self, run_id: str) -> RunRecord: ...

    def get_runs(self, run_ids: Sequence[str]) -> dict[str, RunRecord]: ...

    def metric_history(self, run_id: str) -> list[MetricPoint]:
        """Every value every metric of the run was logged with (its charts' points)."""
        ...

    # ----- writes -------------------------------------------------------------------
    def log_metric_points(self, run_id: str, points: Sequence[MetricPoint]) -> None:
        """Add these points to the run's history, each at its own step and time."""
        ...

    def create_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str],
        start_time: int | None = None,
        params: Mapping[str, str] | None = None,
    ) -> RunRecord: ...

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
        """The run's inputs, metrics (each at its step in `steps`, else 0, and above any
        value the run already has for the key: it is the value the run shows) and tags,
        then its final status: everything a task's run records when its work is done."""

    def log_batch(
        self,
        run_id: str,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
        timestamp_ms: int | None = None,
        steps: Mapping[str, int] | None = None,
    ) -> None: ...

    def set_tag(self, run_id: str, key: str, value: str) -> None: ...

    def log_inputs(self, run_id: str, inputs: Sequence[DatasetRef]) -> None: ...

    def terminate(self, run_id: str, status: str) -> None: ...

    def delete_run(self, run_id: str) -> None: ...


@runtime_checkable
class IdentityReads(Protocol):
    """Reads by identity that a store may answer without reading every run of the
    experiment (the SQL path on SQLite does). In an experiment of 100,000 runs, asking
    about 1,000 tasks must not build 100,000 runs with their tags; a store without
    these is read through `finished_runs`, with the same answers."""

    def finished_runs_of(
        self, experiment_id: str, identities: Collection[str]
    ) -> Iterator[RunRecord]:
        """`finished_runs(experiment_id)`, only the runs whose identity is one of these."""
        ...

    def finished_counts(self, experiment_id: str, identities: Collection[str]) -> dict[str, int]:
        """identity -> how many runs of `finished_runs(experiment_id)` carry it (absent: 0)."""
        ...


@runtime_checkable
class TagReads(Protocol):
    """A few tags of every FINISHED run of an experiment, without building the runs'
    params, metrics and other tags (the SQL path on SQLite does): `plan` explaining a new
    task of a family of 100,000 runs reads three tags of each. A store without it is read
    through `finished_runs`, with the same answers."""

    def finished_tags(
        self, experiment_id: str, keys: Collection[str]
    ) -> Iterator[tuple[RunInfo, dict[str, str]]]:
        """`finished_runs(experiment_id)` as (info, the run's tags among `keys`)."""
        ...


def chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    """Run ids in groups of `size` (MLflow matches IN lists of bounded length)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
