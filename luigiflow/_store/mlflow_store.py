"""`MlflowStore`: the store port answered through MLflow's client (any backend).

Every query that lists runs is paged here, once; run ids, the one field MLflow's
filters match with IN, are fetched in chunks here, once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from luigiflow._errors import RunNotFoundError
from luigiflow._store import client as _client
from luigiflow._store import liveness, mlflow_compat, schema
from luigiflow._store.port import DatasetRef, ExperimentRecord, MetricPoint, chunks
from luigiflow._store.records import RunData, RunRecord, from_mlflow

if TYPE_CHECKING:
    from mlflow import MlflowClient

PAGE_SIZE = 10_000
ID_CHUNK = 500
METRICS_PER_BATCH = 1000  # MLflow's limit on the metrics of one log_batch
ORDER_NEWEST_FIRST = ["attributes.start_time DESC", "attributes.run_id ASC"]


class MlflowStore:
    """The store port over `MlflowClient` for one tracking URI."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._experiment_ids: dict[str, str] = {}

    @property
    def client(self) -> MlflowClient:
        return _client.get_client(self.uri)

    def _search(
        self,
        experiment_ids: list[str],
        filter_string: str,
        doing: str,
        deleted_too: bool = False,
        max_results: int = PAGE_SIZE,
        order_newest: bool = True,
        page_token: str | None = None,
    ) -> Any:
        from mlflow.entities import ViewType

        view = ViewType.ALL if deleted_too else ViewType.ACTIVE_ONLY
        with _client.translate_errors(doing, self.uri):
            return self.client.search_runs(
                experiment_ids,
                filter_string=filter_string,
                run_view_type=view,
                max_results=max_results,
                order_by=ORDER_NEWEST_FIRST if order_newest else None,
                page_token=page_token,
            )

    def _paged(
        self, experiment_ids: list[str], filter_string: str, doing: str, deleted_too: bool = False
    ) -> Iterator[RunRecord]:
        token = None
        while True:
            page = self._search(experiment_ids, filter_string, doing, deleted_too, page_token=token)
            for run in page:
                yield from_mlflow(run)
            token = page.token
            if not token:
                return

    # ----- reads --------------------------------------------------------------------
    def experiment_id(
        self, name: str, create: bool = False, absent: bool = False, fresh: bool = False
    ) -> str | None:
        # Asked to create (a run is about to be made in it) or fresh, the name is resolved
        # afresh: a user may have deleted the experiment since it was cached.
        cached = self._experiment_ids.get(name)
        if cached is not None and not create and not fresh:
            return cached
        with _client.translate_errors(f"looking up experiment {name!r}", self.uri):
            exp_id = self._created(name) if create and absent else None
            if exp_id is None:
                exp_id = self._resolve(name, create)
        if exp_id is not None:
            self._experiment_ids[name] = exp_id
        return exp_id

    def _resolve(self, name: str, create: bool) -> str | None:
        """The active experiment holding `name`'s runs, following deleted ones.

        A deleted experiment is never restored (restoring it restores the runs a user
        deleted); its name stays held until MLflow purges it, so the runs go on in a
        successor experiment named by `schema.successor_experiment`, found the same way
        by every reader.
        """
        current = name
        while True:
            exp = self._experiment_by_name(current)
            if exp is None:
                return self._create_experiment(current) if create else None
            if exp.lifecycle_stage != "deleted":
                return str(exp.experiment_id)
            current = schema.successor_experiment(name, exp.experiment_id)

    def _created(self, name: str) -> str | None:
        """A new experiment `name` made without a lookup first, or None: look it up (the
        name may be taken, by another worker's create or a deleted experiment). A store
        whose lookups cost a round trip makes it here (see ServerStore)."""
        return None

    def _experiment_by_name(self, name: str) -> ExperimentRecord | None:
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            return None
        return ExperimentRecord(str(exp.experiment_id), exp.name, exp.lifecycle_stage)

    def _create_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return str(
                self.client.create_experiment(
                    name, tags={schema.EXPERIMENT_KIND_TAG: schema.EXPERIMENT_KIND}
                )
            )
        except MlflowException:
            # Another worker created it between our lookup and our create.
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return str(exp.experiment_id)

    def experiments(self) -> list[ExperimentRecord]:
        from mlflow.entities import ViewType

        with _client.translate_errors("listing experiments", self.uri):
            found = self.client.search_experiments(view_type=ViewType.ALL, max_results=50_000)
        return [ExperimentRecord(str(e.experiment_id), e.name, e.lifecycle_stage) for e in found]

    def find_finished(
        self, experiment_id: str, identity: str, not_before_ms: int | None = None
    ) -> RunRecord | None:
        filter_string = schema.finished_with_identity(identity)
        if not_before_ms is not None:
            filter_string += f" AND attributes.start_time >= {int(not_before_ms)}"
        runs = self._search(
            [experiment_id],
            filter_string,
            f"looking up run with identity {identity[:12]}",
            max_results=1,
        )
        return from_mlflow(runs[0]) if runs else None

    def finished_runs(
        self,
        experiment_id: str,
        ended_since_ms: int | None = None,
        not_worker: str | None = None,
    ) -> Iterator[RunRecord]:
        filter_string = "attributes.status = 'FINISHED'"
        if ended_since_ms is not None:
            filter_string += f" AND attributes.end_time >= {int(ended_since_ms)}"
        if not_worker is not None:
            filter_string += " AND " + schema.not_from_worker(not_worker)
        return self._paged(
            [experiment_id], filter_string, f"listing finished runs of experiment {experiment_id}"
        )

    def fetch_finished(self, experiment_id: str, run_ids: Sequence[str]) -> list[RunRecord]:
        found: list[RunRecord] = []
        for chunk in chunks([r for r in run_ids if r.isalnum()], ID_CHUNK):
            quoted = ", ".join(f"'{r}'" for r in chunk)
            found.extend(
                from_mlflow(r)
                for r in self._search(
                    [experiment_id],
                    f"attributes.run_id IN ({quoted}) AND attributes.status = 'FINISHED'",
                    f"fetching runs of experiment {experiment_id}",
                    max_results=len(chunk),
                )
            )
        return found

    def runs_with_identity(self, experiment_id: str, identity: str, limit: int) -> list[RunRecord]:
        runs = self._search(
            [experiment_id],
            schema.with_identity(identity),
            f"checking runs with identity {identity[:12]}",
            max_results=limit,
        )
        return [from_mlflow(r) for r in runs]

    def running_runs(self, experiment_id: str, not_worker: str | None = None) -> list[RunRecord]:
        filter_string = "attributes.status = 'RUNNING'"
        if not_worker is not None:
            filter_string += " AND " + schema.not_from_worker(not_worker)
        runs = self._search(
            [experiment_id],
            filter_string,
            f"listing running runs of experiment {experiment_id}",
            max_results=1000,
        )
        return [from_mlflow(r) for r in runs]

    def all_runs(self, experiment_id: str) -> Iterator[RunRecord]:
        return self._paged(
            [experiment_id], "", f"listing runs of experiment {experiment_id}", deleted_too=True
        )

    def get_run(self, run_id: str) -> RunRecord:
        """One run by id, or by the unique start of its id (tables show 8 characters)."""
        from mlflow.exceptions import MlflowException

        if schema.is_short_run_id(run_id):
            run_id = self._complete_run_id(run_id)
        try:
            with _client.translate_errors(f"reading run {run_id}", self.uri):
                return from_mlflow(self.client.get_run(run_id))
        except MlflowException as exc:
            raise RunNotFoundError(
                f"run {run_id!r} does not exist in {self.uri}; "
                "copy a run id from `luigiflow runs` or the MLflow UI"
            ) from exc

    def _complete_run_id(self, prefix: str) -> str:
        experiment_ids = [e.experiment_id for e in self.experiments()]
        found: list[str] = []
        for chunk in chunks(experiment_ids, 100):
            page = self._search(
                list(chunk),
                f"attributes.run_id LIKE '{prefix.lower()}%'",
                f"looking up run {prefix}",
                True,
                max_results=2,
            )
            found.extend(r.info.run_id for r in page)
        if len(found) == 1:
            return found[0]
        if found:
            raise RunNotFoundError(
                f"run id {prefix!r} is ambiguous in {self.uri}; give more of it "
                "(luigiflow runs --full shows whole ids)"
            )
        return prefix  # get_run reports it as not found

    def get_runs(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        result: dict[str, RunRecord] = {}
        ids = [r for r in dict.fromkeys(run_ids) if r.isalnum()]
        if not ids:
            return result
        experiments = [e.experiment_id for e in self.experiments()]
        for chunk in chunks(ids, ID_CHUNK):
            quoted = ", ".join(f"'{rid}'" for rid in chunk)
            for run in self._search(
                experiments,
                f"attributes.run_id IN ({quoted})",
                "fetching runs by id",
                deleted_too=True,
                max_results=len(chunk),
                order_newest=False,
            ):
                result[run.info.run_id] = from_mlflow(run)
        return result

    def metric_history(self, run_id: str) -> list[MetricPoint]:
        with _client.translate_errors(f"reading the metric history of run {run_id}", self.uri):
            keys = sorted(self.get_run(run_id).data.metrics)
            return [
                MetricPoint(m.key, m.value, m.timestamp, m.step)
                for key in keys
                for m in self.client.get_metric_history(run_id, key)
            ]

    # ----- writes -------------------------------------------------------------------
    def log_metric_points(self, run_id: str, points: Sequence[MetricPoint]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(p.key, p.value, p.timestamp_ms, p.step) for p in points]
        with _client.translate_errors(f"recording metric history of run {run_id}", self.uri):
            for start in range(0, len(metrics), METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=metrics[start : start + METRICS_PER_BATCH])

    def _experiment_label(self, experiment_id: str) -> str:
        """`'name' (id 3)` when this store resolved the name (messages name experiments as
        users know them: a denied permission is asked for by name), else the id."""
        names = [n for n, i in self._experiment_ids.items() if i == experiment_id]
        return f"{names[0]!r} (id {experiment_id})" if names else experiment_id

    def create_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str],
        start_time: int | None = None,
        params: Mapping[str, str] | None = None,
    ) -> RunRecord:
        doing = f"creating a run in experiment {self._experiment_label(experiment_id)}"
        with _client.translate_errors(doing, self.uri):
            run = self.client.create_run(
                experiment_id, start_time=start_time, tags=dict(tags), run_name=run_name
            )
        record = from_mlflow(run)
        if params:
            self.log_batch(run.info.run_id, params=params)
            record = RunRecord(record.info, RunData(record.data.tags, dict(params), {}))
        return record

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
        from mlflow.entities import Metric, RunTag

        # Compare-and-set on status as far as MLflow's API allows (it has none): the run is
        # read right before its results are written, and one another worker ended (KILLED:
        # it judged this worker dead) is never turned FINISHED.
        with _client.translate_errors(f"reading run {run_id}", self.uri):
            run = self.client.get_run(run_id)
        if run.info.status in liveness.ENDED_BY_OTHERS:
            reason = run.data.tags.get(schema.ERROR_TAG)
            raise liveness.stopped_error(run_id, run.info.status, reason)
        if inputs:
            self.log_inputs(run_id, inputs)
        # Each saved value goes above any the run already has for its key (user code's
        # `mlflow.log_metric`, autologging), so it is the value the run shows.
        with _client.translate_errors(f"reading metrics of run {run_id}", self.uri):
            latest = (
                mlflow_compat.latest_metric_positions(self.client, run_id, run) if metrics else {}
            )
        placed = []
        for key, value in metrics.items():
            step, ts = steps.get(key, 0), timestamp_ms
            if key in latest:
                step, ts = max(step, latest[key][0]), max(ts, latest[key][1] + 1)
            placed.append(Metric(key, value, ts, step))
        with _client.translate_errors(f"recording results of run {run_id}", self.uri):
            self.client.log_batch(
                run_id, metrics=placed, tags=[RunTag(k, v) for k, v in tags.items()]
            )
        self.terminate(run_id, status)

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
        import time

        from mlflow.entities import Metric, Param, RunTag

        now = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        with _client.translate_errors(f"recording results of run {run_id}", self.uri):
            self.client.log_batch(
                run_id,
                metrics=[
                    Metric(k, v, now, (steps or {}).get(k, step))
                    for k, v in (metrics or {}).items()
                ],
                params=[Param(k, v) for k, v in (params or {}).items()],
                tags=[RunTag(k, v) for k, v in (tags or {}).items()],
            )

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        with _client.translate_errors(f"tagging run {run_id}", self.uri):
            self.client.set_tag(run_id, key, value)

    def log_inputs(self, run_id: str, inputs: Sequence[DatasetRef]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        datasets = [
            DatasetInput(
                # MLflow caps a dataset digest at 36 characters
                Dataset(
                    name=d.name, digest=d.digest[:36], source_type=d.source_type, source=d.source
                ),
                tags=[InputTag(schema.INPUT_CONTEXT_TAG, d.context)],
            )
            for d in inputs
        ]
        with _client.translate_errors(f"recording the inputs of run {run_id}", self.uri):
            for attempt in range(5):
                try:
                    self.client.log_inputs(run_id, datasets=datasets)
                    return
                except Exception as exc:
                    # Two runs recording one new dataset at once: MLflow checks, then
                    # inserts, so one insert loses the race. The dataset exists now; the
                    # next attempt links it.
                    if attempt == 4 or not _lost_insert_race(exc):
                        raise

    def terminate(self, run_id: str, status: str) -> None:
        with _client.translate_errors(f"ending run {run_id}", self.uri):
            mlflow_compat.terminate(self.client, run_id, status)

    def delete_run(self, run_id: str) -> None:
        with _client.translate_errors(f"deleting run {run_id}", self.uri):
            self.client.delete_run(run_id)

    def log_metric(self, run_id: str, key: str, value: float, step: int = 0) -> None:
        with _client.translate_errors(f"logging metric {key!r} of run {run_id}", self.uri):
            self.client.log_metric(run_id, key, value, step=step)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        with _client.translate_errors(f"writing {path} of run {run_id}", self.uri):
            self.client.log_text(run_id, text, path)

    def log_artifacts(self, run_id: str, folder: str) -> None:
        with _client.translate_errors(f"uploading artifacts of run {run_id}", self.uri):
            self.client.log_artifacts(run_id, folder)

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str) -> None:
        with _client.translate_errors(f"uploading {local_path} to run {run_id}", self.uri):
            self.client.log_artifact(run_id, local_path, artifact_path)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[Any]:
        with _client.translate_errors(f"listing artifacts of run {run_id}", self.uri):
            return list(self.client.list_artifacts(run_id, path))

    def download_artifacts(self, run_id: str, path: str, dest: str) -> str:
        with (
            _client.translate_errors(f"downloading {path} of run {run_id}", self.uri),
            mlflow_compat.no_progress_bars(),
        ):
            return str(self.client.download_artifacts(run_id, path, dest))


def _lost_insert_race(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "unique constraint" in text or "duplicate key" in text or "integrityerror" in text
