"""Reads of an MLflow tracking server over its public REST API, without importing mlflow.

`import mlflow` costs about 2 s; a no-op build, `plan`, `runs` and `show` only read.
`RestStore` sends the read questions of the store port to the server's own REST
endpoints (`/api/2.0/mlflow/...`), with the very filter strings, orderings and paging
`MlflowStore` gives MLflow's client (it overrides only the calls that go on the wire),
and leaves writes to `MlflowStore`, which imports mlflow on first use. The differential
test in tests/store/test_rest_reads.py compares every answer with MLflow's client
against a real `mlflow server`.

The requests carry what MLflow's own client would send for the same settings: basic
auth from `MLFLOW_TRACKING_USERNAME`/`PASSWORD` (or ~/.mlflow/credentials), else a
bearer `MLFLOW_TRACKING_TOKEN`; `MLFLOW_TRACKING_INSECURE_TLS`,
`MLFLOW_TRACKING_SERVER_CERT_PATH`, `MLFLOW_TRACKING_CLIENT_CERT_PATH`, `MLFLOW_WORKSPACE`;
MLflow's retry and timeout variables, with luigiflow's bounded retry defaults. A store
whose requests need what only MLflow's client can add (an auth plugin
`MLFLOW_TRACKING_AUTH`, AWS SigV4, an installed request-header plugin) is read through
MLflow's client instead (`usable`).
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from luigiflow import _settings
from luigiflow._errors import ConfigError, RunNotFoundError, TrackingError
from luigiflow._store import client as _client
from luigiflow._store import schema
from luigiflow._store.mlflow_store import ID_CHUNK, ORDER_NEWEST_FIRST, PAGE_SIZE, MlflowStore
from luigiflow._store.port import ExperimentRecord, chunks
from luigiflow._store.records import RunData, RunInfo, RunRecord

if TYPE_CHECKING:
    import requests

API = "/api/2.0/mlflow"
# A live server accepts a TCP connection within milliseconds on any network; waiting
# longer only delays the "cannot reach" line (a read may take MLflow's full timeout).
CONNECT_TIMEOUT_S = 5.0
# MLflow's retried answers (mlflow.utils.request_utils._TRANSIENT_FAILURE_RESPONSE_CODES).
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
FIRST_PAGE = 1_000  # runs in the first page of a listing (Completion.SCAN_FIRST)
RETRY_AFTER = "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER"
_TRUE, _FALSE = ("true", "1"), ("false", "0", "")


def usable(uri: str) -> bool:
    """The URI names an http(s) server this module can read as MLflow's client would."""
    if not uri.startswith(("http://", "https://")):
        return False
    if os.environ.get("MLFLOW_TRACKING_AUTH") or _flag("MLFLOW_TRACKING_AWS_SIGV4"):
        return False
    from importlib.metadata import entry_points

    # A plugin may add headers (auth) to every request of MLflow's client.
    return not entry_points(group="mlflow.request_header_provider")


def _flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE
    raise ConfigError(
        f"{name}={os.environ[name]!r} is not true or false; set {name}=true or unset it"
    )


def _number(name: str, kind: type[int] | type[float], default: float | None = None) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{name}={raw!r} is not a number of at least 0; set e.g. {name}=2")
    return value


def request_settings() -> dict[str, Any]:
    """Headers, TLS and retry settings of MLflow's client for the current environment."""
    _settings.bound_http_retries()
    headers = {"User-Agent": "luigiflow"}
    user, password = _client.credentials()
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        pair = base64.standard_b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    workspace = (os.environ.get("MLFLOW_WORKSPACE") or "").strip()
    if workspace:
        headers["X-MLFLOW-WORKSPACE"] = workspace
    server_cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None
    insecure = _flag("MLFLOW_TRACKING_INSECURE_TLS")
    if insecure and server_cert:
        raise ConfigError(
            "MLFLOW_TRACKING_INSECURE_TLS=true and MLFLOW_TRACKING_SERVER_CERT_PATH are both "
            "set; unset one (verify with the certificate, or not at all)"
        )
    return {
        "headers": headers,
        "verify": False if insecure else (server_cert or True),
        "cert": os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH") or None,
        "retries": _number(_settings.HTTP_MAX_RETRIES, int, 2),
        "backoff": _number(_settings.HTTP_BACKOFF_FACTOR, float, 1.0),
        "jitter": _number(_settings.HTTP_BACKOFF_JITTER, float, 0.5),
        "timeout": _number("MLFLOW_HTTP_REQUEST_TIMEOUT", float, 120.0),
        "retry_after": _flag(RETRY_AFTER) if os.environ.get(RETRY_AFTER) else True,
    }


_sessions: dict[tuple[int, int, str], requests.Session] = {}


def session(settings: Mapping[str, Any]) -> requests.Session:
    """A keep-alive session with these settings, one per process and thread."""
    key = (os.getpid(), threading.get_ident(), repr(sorted(settings.items())))
    found = _sessions.get(key)
    if found is not None:
        return found
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util import Retry

    retries = settings["retries"]
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        redirect=retries,
        status=retries,
        status_forcelist=TRANSIENT,
        allowed_methods=None,  # every method, as MLflow's client (writes: rest_writes)
        backoff_factor=settings["backoff"],
        backoff_jitter=settings["jitter"],
        raise_on_status=False,
        respect_retry_after_header=settings["retry_after"],
    )
    made = requests.Session()
    made.mount("http://", HTTPAdapter(max_retries=retry))
    made.mount("https://", HTTPAdapter(max_retries=retry))
    made.headers.update(settings["headers"])
    _sessions[key] = made
    return made


def send(
    uri: str,
    method: str,
    endpoint: str,
    doing: str,
    params: Mapping[str, Any] | None = None,
    body: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
) -> requests.Response:
    """One request to the server, any answer; failing to get one is one TrackingError line."""
    import requests

    settings = request_settings()
    timeout = timeout_s or settings["timeout"]
    with _client.translate_errors(doing, uri):  # its "cannot reach" line, as for MLflow's client
        try:
            reply = session(settings).request(
                method,
                uri.rstrip("/") + endpoint,
                params=params,
                json=body,
                timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout),
                # Per request, as MLflow passes them: a session's `verify` loses to
                # REQUESTS_CA_BUNDLE in the environment.
                verify=settings["verify"],
                cert=settings["cert"],
            )
            if reply.status_code < 500:
                # A server that answers: a later outage of it is ridden out (_settings).
                _settings.ride_out_outages()
            return reply
        except requests.exceptions.SSLError as exc:
            raise TrackingError(
                f"TLS with the MLflow tracking server at {_client.shown_uri(uri)} failed "
                f"while {doing} "
                f"({type(exc).__name__}); set MLFLOW_TRACKING_SERVER_CERT_PATH to its CA "
                "bundle, or MLFLOW_TRACKING_INSECURE_TLS=true to skip verification"
            ) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            raise
        except requests.exceptions.RequestException as exc:
            raise TrackingError(
                f"cannot send {method} {endpoint} to the MLflow tracking server at "
                f"{_client.shown_uri(uri)} "
                f"while {doing} ({type(exc).__name__}: {exc}); check MLFLOW_TRACKING_URI"
            ) from exc


def call(
    uri: str,
    method: str,
    endpoint: str,
    doing: str,
    params: Mapping[str, Any] | None = None,
    body: Mapping[str, Any] | None = None,
    missing_ok: bool = False,
) -> dict[str, Any] | None:
    """One request to the server's REST API; its JSON answer, or None for a missing
    resource when `missing_ok`. Any failure is one TrackingError line naming the server."""
    reply = send(uri, method, endpoint, doing, params, body)
    if reply.status_code in (401, 403):  # the basic-auth app answers them in plain text
        named = _client.status_error(reply.status_code, "", "", _client.shown_uri(uri), doing)
        if named is not None:
            raise named
    try:
        answer = reply.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise TrackingError(
            f"the server at {_client.shown_uri(uri)} answered {method} {endpoint} with HTTP "
            f"{reply.status_code} "
            f"and no MLflow JSON while {doing}; check that MLFLOW_TRACKING_URI is an MLflow "
            "tracking server"
        )
    if reply.ok:
        return answer
    code = answer.get("error_code", "")
    if missing_ok and code in (NOT_FOUND, "INVALID_PARAMETER_VALUE"):
        return None
    message = (str(answer.get("message") or "").splitlines() or [""])[0]
    named = _client.status_error(reply.status_code, code, message, _client.shown_uri(uri), doing)
    if named is not None:
        raise named
    raise TrackingError(
        f"the MLflow tracking server at {_client.shown_uri(uri)} refused {doing} (HTTP "
        f"{reply.status_code} "
        f"{code}: {message}); see the server's log"
    )


def _metric(value: Any) -> float:
    return float(value)  # NaN and infinities come as the strings "NaN", "Infinity"


def record(run: Mapping[str, Any]) -> RunRecord:
    """A run of MLflow's REST JSON, as `records.from_mlflow` makes it from MLflow's `Run`."""
    info, data = run["info"], run.get("data", {})
    end = int(info.get("end_time") or 0)
    return RunRecord(
        RunInfo(
            run_id=info.get("run_id") or info["run_uuid"],
            experiment_id=str(info.get("experiment_id", "")),
            status=info.get("status", "RUNNING"),
            start_time=int(info.get("start_time") or 0),
            end_time=end or None,  # MLflow reads an absent or zero end time as None
            artifact_uri=info.get("artifact_uri") or "",
            lifecycle_stage=info.get("lifecycle_stage", ""),
            run_name=info.get("run_name") or "",
        ),
        RunData(
            {t["key"]: t.get("value", "") for t in data.get("tags", [])},
            {p["key"]: p.get("value", "") for p in data.get("params", [])},
            {m["key"]: _metric(m.get("value", 0.0)) for m in data.get("metrics", [])},
        ),
    )


class _Page(list[RunRecord]):
    """One page of a search, as MLflow's `PagedList` (its `token` names the next page)."""

    token: str | None = None


class RestStore(MlflowStore):
    """The store port with reads over MLflow's REST API; writes through MLflow's client."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        # Experiments whose runs or names this store has read. Runs never change
        # experiment: `get_runs` looks for ids there first (one request, where listing
        # every experiment first takes two) and in the others only for ids not found.
        self._seen: set[str] = set()

    def _call(self, method: str, endpoint: str, doing: str, **kwargs: Any) -> Any:
        return call(self.uri, method, API + endpoint, doing, **kwargs)

    # MlflowStore's reads call these; the records come back in MLflow's `Run` shape,
    # which `from_mlflow` copies as it converts a real `Run`.
    def _search(
        self,
        experiment_ids: list[str],
        filter_string: str,
        doing: str,
        deleted_too: bool = False,
        max_results: int = PAGE_SIZE,
        order_newest: bool = True,
        page_token: str | None = None,
    ) -> _Page:
        body: dict[str, Any] = {
            "experiment_ids": experiment_ids,
            "filter": filter_string,
            "run_view_type": "ALL" if deleted_too else "ACTIVE_ONLY",
            "max_results": max_results,
        }
        if order_newest:
            body["order_by"] = ORDER_NEWEST_FIRST
        if page_token:
            body["page_token"] = page_token
        answer = self._call("POST", "/runs/search", doing, body=body)
        page = _Page(record(r) for r in answer.get("runs", []))
        page.token = answer.get("next_page_token") or None
        self._seen.update(r.info.experiment_id for r in page)
        return page

    def _paged(
        self, experiment_ids: list[str], filter_string: str, doing: str, deleted_too: bool = False
    ) -> Iterator[RunRecord]:
        # A small first page: a completion scan answered by the newest runs stops after
        # it (see `Completion.scan`), before the server serialises thousands of runs.
        token, size = None, FIRST_PAGE
        while True:
            page = self._search(
                experiment_ids, filter_string, doing, deleted_too, size, page_token=token
            )
            yield from page
            token, size = page.token, PAGE_SIZE
            if not token:
                return

    def _experiment_by_name(self, name: str) -> ExperimentRecord | None:
        answer = self._call(
            "GET",
            "/experiments/get-by-name",
            f"looking up experiment {name!r}",
            params={"experiment_name": name},
            missing_ok=True,
        )
        if answer is None:
            return None
        exp = answer["experiment"]
        self._seen.add(str(exp["experiment_id"]))
        return ExperimentRecord(str(exp["experiment_id"]), exp["name"], exp["lifecycle_stage"])

    def experiments(self) -> list[ExperimentRecord]:
        found: list[ExperimentRecord] = []
        token = None
        while True:
            body: dict[str, Any] = {"view_type": "ALL", "max_results": 50_000}
            if token:
                body["page_token"] = token
            answer = self._call("POST", "/experiments/search", "listing experiments", body=body)
            found += [
                ExperimentRecord(str(e["experiment_id"]), e["name"], e["lifecycle_stage"])
                for e in answer.get("experiments", [])
            ]
            token = answer.get("next_page_token")
            if not token:
                self._seen.update(e.experiment_id for e in found)
                return found

    def get_run(self, run_id: str) -> RunRecord:
        """One run by id, or by the unique start of its id (tables show 8 characters)."""
        if schema.is_short_run_id(run_id):
            run_id = self._complete_run_id(run_id)
        answer = self._call(
            "GET", "/runs/get", f"reading run {run_id}", params={"run_id": run_id}, missing_ok=True
        )
        if answer is None:
            raise RunNotFoundError(
                f"run {run_id!r} does not exist in {self.uri}; "
                "copy a run id from `luigiflow runs` or the MLflow UI"
            )
        return self._seen_run(answer["run"])

    def _seen_run(self, run: Mapping[str, Any]) -> RunRecord:
        found = record(run)
        self._seen.add(found.info.experiment_id)
        return found

    def get_runs(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        ids = [r for r in dict.fromkeys(run_ids) if r.isalnum()]
        if not ids:
            return {}
        if len(ids) == 1:  # one request, where a search needs the experiment list too
            found = self._call(
                "GET",
                "/runs/get",
                "fetching runs by id",
                params={"run_id": ids[0]},
                missing_ok=True,
            )
            return {} if found is None else {ids[0]: self._seen_run(found["run"])}
        seen = sorted(self._seen.copy())  # a copy is atomic: other threads may add
        result = self._runs_by_id(seen, ids)
        missing = [r for r in ids if r not in result]
        if missing:
            others = [e.experiment_id for e in self.experiments() if e.experiment_id not in seen]
            result.update(self._runs_by_id(others, missing))
        return result

    def _runs_by_id(self, experiments: list[str], ids: list[str]) -> dict[str, RunRecord]:
        result: dict[str, RunRecord] = {}
        if not experiments:
            return result
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
                result[run.info.run_id] = run
        return result


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in one line now when the server does not answer its health check."""
    send(uri, "GET", "/health", "checking that it answers", timeout_s=timeout_s)
