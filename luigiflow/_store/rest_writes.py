"""A task's run written to an MLflow tracking server over its REST API, without importing
mlflow, in as few round trips as MLflow's API allows.

`import mlflow` costs seconds; a build that executes plain tasks against a server needs
none of MLflow's code. `ServerStore` sends the writes of the store port to the server's
own endpoints (`/api/2.0/mlflow/...`, proxied artifacts under `/api/2.0/mlflow-artifacts`)
through the session of `rest_reads` (same auth, TLS, retries, as MLflow's client), and
reads as `RestStore` does. What only MLflow's client knows (an artifact store the
server does not proxy, e.g. S3 written directly) goes through `MlflowStore`.

Round trips of an executed task, in steady state (docs/benchmarks.md):

- create (every start tag in it), the exactly-once look, the artifact, the dataset
  inputs, one `log-batch` (params, results, metrics), the status;
- the parameters wait for that batch while nothing in the process imported mlflow (no
  user code or autologging can log a parameter then); the moment something does, or a
  heartbeat or another write goes to the run, they are written with it, so a parameter
  of the same name logged later is refused as MLflow refuses it;
- where saved metrics stand against values user code logged is read only when mlflow
  was imported (nothing else logs metrics but luigiflow, which knows its own);
- the compare-and-set read before FINISHED (a run another worker ended is never turned
  FINISHED) is skipped only while this process's own last heartbeat on the run is
  younger than half of `stale_after()` and its beats never paused that long: no worker
  judges such a run abandoned.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import posixpath
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from luigiflow import _settings
from luigiflow._errors import TrackingError
from luigiflow._store import active_run, liveness, mlflow_compat, schema
from luigiflow._store import client as _client
from luigiflow._store.port import DatasetRef, MetricPoint
from luigiflow._store.records import RunData, RunRecord
from luigiflow._store.rest_reads import RestStore, call, request_settings, session

ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
# MLflow's limits on one log-batch request (mlflow.utils.validation).
MAX_PARAMS, MAX_TAGS, MAX_METRICS, MAX_ENTITIES = 100, 100, 1000, 1000
KEEP_WRITTEN = 1000  # runs whose written state is kept (a build's downstream reads them)
INACTIVE = "must be in the 'active' state"


def _json_number(value: float) -> float | str:
    """A metric value as protobuf's JSON writes it (NaN and infinities are strings)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float(value)


def _pairs(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in values.items()]


def artifact_path_of(artifact_uri: str) -> str | None:
    """The path under the server's proxied artifact root of a run's `mlflow-artifacts:`
    URI, or None for any other artifact store (MLflow's client writes those)."""
    parsed = urllib.parse.urlparse(artifact_uri)
    if parsed.scheme != "mlflow-artifacts" or parsed.netloc:
        return None
    return parsed.path.strip("/")


class _Written:
    """A run as this process wrote it: what the server holds while nobody else writes."""

    def __init__(self, run: RunRecord) -> None:
        self.info = run.info
        self.tags = dict(run.data.tags)
        self.params = dict(run.data.params)
        self.metrics: dict[str, tuple[int, int, float]] = {}  # key -> (step, ts, value)

    def log(self, metrics: Sequence[tuple[str, float, int, int]]) -> None:
        # The value a run shows: highest step, then timestamp, then value (as MLflow).
        for key, value, ts, step in metrics:
            seen = self.metrics.get(key)
            if seen is None or (step, ts, value) >= seen:
                self.metrics[key] = (step, ts, value)

    def record(self) -> RunRecord:
        metrics = {k: v for k, (_s, _t, v) in self.metrics.items()}
        return RunRecord(self.info, RunData(dict(self.tags), dict(self.params), metrics))


class ServerStore(RestStore):
    """The store port over a tracking server's REST API, reads and writes."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self._lock = threading.Lock()
        # run id -> params not written yet (see the module's docstring)
        self._pending: dict[str, dict[str, str]] = {}
        # run id -> the heartbeat (epoch s, this process's clock) it last wrote on the run
        self._beats: dict[str, float] = {}
        # runs whose beats had a gap another worker may have judged abandoned (a paused
        # process: its heartbeat thread beats again on resume, before the task finishes)
        self._gapped: set[str] = set()
        self._artifact_uris: dict[str, str] = {}
        self._shared: set[str] = set()  # content-addressed files this process uploaded
        # run id -> the run as this process wrote it, while nothing else can have written
        # to it (mlflow not imported: see `written_run`)
        self._written: dict[str, _Written] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Travels to spawned workers (inside the build's session): the runs this
        # process writes stay here, the worker writes its own.
        state = dict(self.__dict__)
        state.update(_lock=None, _pending={}, _beats={}, _gapped=set(), _artifact_uris={})
        state.update(_shared=set(), _written={})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _post(self, endpoint: str, doing: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._call("POST", endpoint, doing, body=body) or {}
        except TrackingError as exc:
            if INACTIVE in str(exc):
                # Callers follow a deleted experiment to its successor on MLflow's error.
                raise mlflow_compat.invalid(str(exc)) from None
            raise

    def written_run(self, run_id: str) -> RunRecord | None:
        """Run `run_id` as it is on the server, known without asking it: this process
        created, wrote and ended it, and nothing in the process imported mlflow meanwhile
        (user code could have logged through MLflow's client). None otherwise."""
        with self._lock:
            written = self._written.get(run_id)
            return None if written is None or active_run.mlflow_imported() else written.record()

    def _wrote(
        self,
        run_id: str,
        tags: Mapping[str, str] = {},
        params: Mapping[str, str] = {},
        metrics: Sequence[tuple[str, float, int, int]] = (),
    ) -> None:
        with self._lock:
            written = self._written.get(run_id)
            if written is not None:
                written.tags.update(tags)
                written.params.update(params)
                written.log(metrics)

    def _noted(self, run_id: str, tags: Mapping[str, str]) -> None:
        beat = tags.get(schema.HEARTBEAT_TAG)
        if beat is not None:
            with contextlib.suppress(ValueError):  # not a time: never counted as one
                now = float(beat)
                before = self._beats.get(run_id)
                if before is not None and now - before >= _settings.stale_after() / 2:
                    self._gapped.add(run_id)
                self._beats[run_id] = now

    def _take_pending(self, run_id: str) -> dict[str, str]:
        with self._lock:
            return self._pending.pop(run_id, {})

    def write_all_pending_params(self) -> None:
        """Write every run's parameters now: mlflow was just imported, so user code or
        autologging may log parameters of the same names from here on (and lose to ours,
        as when they were written at creation). One that fails waits for the final batch."""
        with self._lock:
            waiting = list(self._pending)
        for run_id in waiting:
            params = self._take_pending(run_id)
            if not params:
                continue
            try:
                self._log_batch(run_id, params=params)
            except Exception:
                with self._lock:
                    self._pending.setdefault(run_id, {}).update(params)
                raise

    # ----- experiments --------------------------------------------------------------
    def _created(self, name: str) -> str | None:
        # The build's completion question found no such experiment: one request instead
        # of a lookup and a create. Refused (the name is taken meanwhile, or deleted and
        # held): resolved as usual, which names any other refusal.
        try:
            return self._post_experiment(name)
        except TrackingError:
            return None

    def _create_experiment(self, name: str) -> str:
        try:
            return self._post_experiment(name)
        except TrackingError:
            # Another worker created it between our lookup and our create.
            exp = self._experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _post_experiment(self, name: str) -> str:
        body = {"name": name, "tags": _pairs({schema.EXPERIMENT_KIND_TAG: schema.EXPERIMENT_KIND})}
        answer = self._post("/experiments/create", f"creating experiment {name!r}", body)
        return str(answer["experiment_id"])

    # ----- runs ---------------------------------------------------------------------
    def create_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str],
        start_time: int | None = None,
        params: Mapping[str, str] | None = None,
    ) -> RunRecord:
        body = {
            "experiment_id": experiment_id,
            "user_id": tags.get(active_run.USER_TAG, "unknown"),
            "run_name": run_name,
            "start_time": start_time if start_time is not None else int(time.time() * 1000),
            "tags": _pairs(tags),
        }
        doing = f"creating a run in experiment {self._experiment_label(experiment_id)}"
        answer = self._post("/runs/create", doing, body)
        made = self._seen_run(answer["run"])
        run_id = made.info.run_id
        self._artifact_uris[run_id] = made.info.artifact_uri
        self._noted(run_id, tags)
        with self._lock:
            if len(self._written) >= KEEP_WRITTEN:  # the oldest first (dicts keep order)
                del self._written[next(iter(self._written))]
            self._written[run_id] = _Written(made)
        if params:
            if active_run.mlflow_imported():
                self._log_batch(run_id, params=params)  # user code may log some too
            else:
                with self._lock:
                    self._pending[run_id] = dict(params)
                active_run.call_when_imported(self.write_all_pending_params)
            made = RunRecord(made.info, RunData(made.data.tags, dict(params), {}))
            self._wrote(run_id, params=params)
        return made

    def _log_batch(
        self,
        run_id: str,
        metrics: Sequence[tuple[str, float, int, int]] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """One `log-batch` request, or several where MLflow's limits on one are passed;
        values checked and cut as MLflow's client would."""
        params, tags = dict(params or {}), dict(tags or {})
        checked = mlflow_compat.validated_batch(metrics, params, tags)
        if checked is not None:
            params, tags = checked
        doing = f"recording results of run {run_id}"
        rows = [
            {"key": k, "value": _json_number(v), "timestamp": ts, "step": step}
            for k, v, ts, step in metrics
        ]
        param_rows, tag_rows = _pairs(params), _pairs(tags)
        # Params first: a refused one (write-once) fails the batch before anything else.
        while param_rows or tag_rows or rows:
            body: dict[str, Any] = {"run_id": run_id}
            room = MAX_ENTITIES
            for name, pending, most in (
                ("params", param_rows, MAX_PARAMS),
                ("tags", tag_rows, MAX_TAGS),
                ("metrics", rows, MAX_METRICS),
            ):
                take = min(most, room, len(pending))
                if take:
                    body[name] = pending[:take]
                    del pending[:take]
                    room -= take
            self._post("/runs/log-batch", doing, body)
        self._noted(run_id, tags)
        self._wrote(run_id, tags, params, metrics)

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
        now = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        rows = [(k, v, now, (steps or {}).get(k, step)) for k, v in (metrics or {}).items()]
        self._log_batch(run_id, rows, {**self._take_pending(run_id), **(params or {})}, tags)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        pending = self._take_pending(run_id)
        if pending:  # one request for both: the heartbeat carries the parameters
            self._log_batch(run_id, params=pending, tags={key: value})
            return
        body = {"run_id": run_id, "run_uuid": run_id, "key": key, "value": value}
        self._post("/runs/set-tag", f"tagging run {run_id}", body)
        self._noted(run_id, {key: value})
        self._wrote(run_id, {key: value})

    def log_metric(self, run_id: str, key: str, value: float, step: int = 0) -> None:
        self._log_batch(run_id, [(key, value, int(time.time() * 1000), step)])

    def log_metric_points(self, run_id: str, points: Sequence[MetricPoint]) -> None:
        self._log_batch(run_id, [(p.key, p.value, p.timestamp_ms, p.step) for p in points])

    def log_inputs(self, run_id: str, inputs: Sequence[DatasetRef]) -> None:
        datasets = [
            {
                "tags": _pairs({schema.INPUT_CONTEXT_TAG: d.context}),
                "dataset": {
                    "name": d.name,
                    "digest": d.digest[:36],  # MLflow caps a dataset digest at 36 characters
                    "source_type": d.source_type,
                    "source": d.source,
                },
            }
            for d in inputs
        ]
        # Two runs recording one new dataset at once lose an insert race inside the
        # server (HTTP 500); the session retries it, and the dataset exists by then.
        body = {"run_id": run_id, "datasets": datasets}
        self._post("/runs/log-inputs", f"recording the inputs of run {run_id}", body)

    def terminate(self, run_id: str, status: str) -> None:
        end_ms = int(time.time() * 1000)
        body = {"run_id": run_id, "run_uuid": run_id, "status": status, "end_time": end_ms}
        answer = self._post("/runs/update", f"ending run {run_id}", body)
        with self._lock:
            self._pending.pop(run_id, None)
            self._beats.pop(run_id, None)
            self._gapped.discard(run_id)
            written = self._written.get(run_id)
            if written is not None:
                info = answer.get("run_info") or {}
                end = int(info.get("end_time") or end_ms)
                written.info = replace(written.info, status=status, end_time=end)

    def delete_run(self, run_id: str) -> None:
        self._post("/runs/delete", f"deleting run {run_id}", {"run_id": run_id})

    def _beating_recently(self, run_id: str) -> bool:
        """No worker can have judged the run abandoned: this process wrote its heartbeat
        less than half the staleness window ago (the other half covers clock skew)."""
        beat = self._beats.get(run_id)
        if beat is None or run_id in self._gapped:
            return False  # a paused worker's first beat after resuming proves nothing
        return 0 <= time.time() - beat < _settings.stale_after() / 2

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
        latest: dict[str, tuple[int, int]] = {}
        user_logged = active_run.mlflow_imported()
        if user_logged or not self._beating_recently(run_id):
            # The compare-and-set as far as MLflow's API allows (see MlflowStore), and,
            # where user code could log through MLflow, where its metrics stand.
            answer = self._call(
                "GET", "/runs/get", f"reading run {run_id}", params={"run_id": run_id}
            )
            run = answer["run"]
            found = self._seen_run(run)
            if found.info.status in liveness.ENDED_BY_OTHERS:
                reason = found.data.tags.get(schema.ERROR_TAG)
                raise liveness.stopped_error(run_id, found.info.status, reason)
            for m in run.get("data", {}).get("metrics", []):
                latest[m["key"]] = (int(m.get("step") or 0), int(m.get("timestamp") or 0))
        if inputs:
            self.log_inputs(run_id, inputs)
        placed = []
        for key, value in metrics.items():
            step, ts = steps.get(key, 0), timestamp_ms
            if key in latest:
                step, ts = max(step, latest[key][0]), max(ts, latest[key][1] + 1)
            placed.append((key, value, ts, step))
        self._log_batch(run_id, placed, self._take_pending(run_id), tags)
        self.terminate(run_id, status)

    # ----- artifacts ----------------------------------------------------------------
    def _artifact_root(self, run_id: str) -> str | None:
        uri = self._artifact_uris.get(run_id)
        if uri is None:
            uri = self.get_run(run_id).info.artifact_uri
            self._artifact_uris[run_id] = uri
        return artifact_path_of(uri)

    def put_file(self, root: str, local_path: str, artifact_path: str) -> None:
        """Upload one file to `root/artifact_path` under the server's artifact root."""
        target = posixpath.join(root, artifact_path) if artifact_path else root
        endpoint = ARTIFACTS_API + "/" + urllib.parse.quote(target)
        kind = mimetypes.guess_type(local_path)[0] or "application/octet-stream"
        doing = f"uploading artifact {target}"
        settings = request_settings()
        with _client.translate_errors(doing, self.uri), open(local_path, "rb") as body:
            reply = session(settings).put(
                self.uri.rstrip("/") + endpoint,
                data=body,
                headers={"Content-Type": kind},
                timeout=settings["timeout"],
                verify=settings["verify"],
                cert=settings["cert"],
            )
        if not reply.ok:
            text = reply.text.strip().splitlines()[:1]
            named = _client.status_error(
                reply.status_code, "", reply.text, _client.shown_uri(self.uri), doing
            )
            raise named or TrackingError(
                f"the MLflow tracking server at {_client.shown_uri(self.uri)} refused "
                f"{doing} (HTTP {reply.status_code}: {text[0][:200] if text else ''}); "
                "check that it serves artifacts (mlflow server --artifacts-destination)"
            )

    def share_text(self, run_id: str, text: str, folder: str) -> str | None:
        """The `mlflow-artifacts:` URI of `text` as `folder/<sha256>.txt` in the artifact
        folder of the run's experiment, uploaded once per content and process; None where
        the run's artifacts are not proxied by the server (the caller writes a copy)."""
        root = self._artifact_root(run_id)
        tail = f"/{run_id}/artifacts"
        if root is None or not root.endswith(tail):
            return None
        experiment_root = root[: -len(tail)]
        name = f"{folder}/{hashlib.sha256(text.encode('utf-8')).hexdigest()}.txt"
        target = f"{experiment_root}/{name}" if experiment_root else name
        if target not in self._shared:
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, posixpath.basename(name))
                with open(local, "w", encoding="utf-8") as f:
                    f.write(text)
                self.put_file(experiment_root, local, name)
            self._shared.add(target)
        return f"mlflow-artifacts:/{target}"

    def download_artifact(self, artifact_uri: str, relpath: str, dest: str) -> bool:
        """Download `relpath` (a file or a folder) of a run's proxied artifacts into folder
        `dest` (as `dest/relpath`), streamed by the server: no run lookup first. False where
        the artifacts are not proxied by this server (MLflow's client reads those)."""
        root = artifact_path_of(artifact_uri)
        if root is None:
            return False
        self._fetch(posixpath.join(root, relpath), os.path.join(dest, relpath))
        return True

    def _fetch(self, target: str, local: str) -> None:
        import requests

        url = self.uri.rstrip("/") + ARTIFACTS_API + "/" + urllib.parse.quote(target)
        settings = request_settings()
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        # First as a file, not retried: the server answers a folder with an error (500),
        # which a retried request would ask again with backoff. Anything but the file
        # goes on to the listing, whose requests are retried and report failures.
        try:
            reply = session(dict(settings, retries=0)).get(
                url,
                stream=True,
                timeout=settings["timeout"],
                verify=settings["verify"],
                cert=settings["cert"],
            )
        except requests.RequestException:
            reply = None
        if reply is not None and reply.ok:
            with open(local, "wb") as f:
                for chunk in reply.iter_content(chunk_size=1 << 20):
                    f.write(chunk)
            return
        if reply is not None:
            reply.close()  # its connection goes back to the pool
        doing = f"downloading {target}"
        listed = call(self.uri, "GET", ARTIFACTS_API, doing, params={"path": target}) or {}
        entries = listed.get("files", [])
        if not entries:  # not a folder: the file itself, asked again with retries
            with _client.translate_errors(doing, self.uri):
                again = session(settings).get(
                    url,
                    stream=True,
                    timeout=settings["timeout"],
                    verify=settings["verify"],
                    cert=settings["cert"],
                )
            if not again.ok:
                raise _client.status_error(
                    again.status_code, "", again.text, _client.shown_uri(self.uri), doing
                ) or TrackingError(
                    f"the MLflow tracking server at {_client.shown_uri(self.uri)} has no "
                    f"artifact {target} (HTTP {again.status_code})"
                )
            with open(local, "wb") as f:
                for chunk in again.iter_content(chunk_size=1 << 20):
                    f.write(chunk)
            return
        self._fetch_folder(target, local, entries)

    def _fetch_folder(self, target: str, local: str, entries: list[Any] | None = None) -> None:
        if entries is None:
            doing = f"listing {target}"
            entries = (
                call(self.uri, "GET", ARTIFACTS_API, doing, params={"path": target}) or {}
            ).get("files", [])
        os.makedirs(local, exist_ok=True)
        for entry in entries:
            name = posixpath.basename(str(entry["path"]))
            if name in ("", ".", ".."):
                continue  # never outside the folder asked for
            child = posixpath.join(target, name)
            if entry.get("is_dir"):
                self._fetch_folder(child, os.path.join(local, name))
            else:
                self._fetch(child, os.path.join(local, name))

    def log_artifacts(self, run_id: str, folder: str) -> None:
        root = self._artifact_root(run_id)
        if root is None:
            super().log_artifacts(run_id, folder)
            return
        for here, _dirs, files in os.walk(folder):
            relative = os.path.relpath(here, folder)
            for name in sorted(files):
                path = name if relative == "." else posixpath.join(relative, name)
                self.put_file(root, os.path.join(here, name), path.replace(os.sep, "/"))

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str) -> None:
        root = self._artifact_root(run_id)
        if root is None:
            super().log_artifact(run_id, local_path, artifact_path)
            return
        name = os.path.basename(local_path)
        target = posixpath.join(artifact_path, name) if artifact_path else name
        self.put_file(root, local_path, target)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        root = self._artifact_root(run_id)
        if root is None:
            super().log_text(run_id, text, path)
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, posixpath.basename(path))
            with open(local, "w", encoding="utf-8") as f:
                f.write(text)
            self.put_file(root, local, path)
