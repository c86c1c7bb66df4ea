"""Finding the FINISHED run that makes a task complete, for many tasks at once.

Luigi asks `complete()` task by task. Asking MLflow once per task costs a query each
(~8 ms on SQLite, more over HTTP), so luigiflow answers from a batch: whenever Luigi
is about to ask about a set of tasks (the roots of a build, the dependencies returned
by `deps()`), `prefetch` decides all of them with one query per experiment.

Freshness rule: a "not complete" answer is *single use*: the next `complete()` on that
task consumes it and any later call asks the store again, so a run finished by another
worker is seen at once. A "complete" answer may be reused for RECENT_S seconds (siblings
that share an upstream would otherwise each re-ask about it); after that the store is
asked again, so a run deleted meanwhile stops counting. A task is never run on a stale
answer: `MlflowTask.run` checks the store once more right before creating its run.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from luigiflow import _tracking
from luigiflow._identity import IDENTITY_TAG

if TYPE_CHECKING:
    from mlflow.entities import Run

    from luigiflow._task import MlflowTask

# Below this many tasks in one experiment, one exact query per task beats scanning
# every FINISHED run of the experiment.
SCAN_THRESHOLD = 4
PAGE_SIZE = 10_000

RECENT_S = 2.0

_lock = threading.Lock()
# (uri, experiment, identity) -> (run or None, monotonic time of the answer)
_answers: dict[tuple[str, str, str], tuple[Run | None, float]] = {}


def finished_filter(identity: str) -> str:
    # The identity is a hex digest, so it is safe inside a filter string; user values
    # (which may hold quotes) never are put into filters.
    return f"tags.`{IDENTITY_TAG}` = '{identity}' AND attributes.status = 'FINISHED'"


ORDER_NEWEST_FIRST = ["attributes.start_time DESC", "attributes.run_id ASC"]


# identity -> epoch ms: runs of that identity started earlier do not count. Set by
# `luigiflow run --rerun-changed` (and reproduce --force) to re-execute complete tasks.
_not_before: dict[str, int] = {}


def ignore_runs_before(identities: Iterable[str], epoch_ms: int) -> None:
    """Treat existing runs of these identities as absent (forked workers inherit this)."""
    identities = set(identities)
    _not_before.update(dict.fromkeys(identities, epoch_ms))
    with _lock:
        for key in [k for k in _answers if k[2] in identities]:
            del _answers[key]


def clear_ignored() -> None:
    _not_before.clear()


def _counts(run: Run) -> bool:
    threshold = _not_before.get(run.data.tags.get(IDENTITY_TAG, ""))
    return threshold is None or run.info.start_time >= threshold


def query_finished_run(experiment_id: str, identity: str) -> Run | None:
    """The newest FINISHED, non-deleted run with `identity` (ties broken by run id)."""
    from mlflow.entities import ViewType

    client = _tracking.get_client()
    filter_string = finished_filter(identity)
    if identity in _not_before:
        filter_string += f" AND attributes.start_time >= {int(_not_before[identity])}"
    with _tracking.translate_errors(f"looking up run with identity {identity[:12]}"):
        runs = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1,
            order_by=ORDER_NEWEST_FIRST,
        )
    return runs[0] if runs else None


HEARTBEAT_TAG = "luigiflow.heartbeat"
ABANDONED_TAG = "luigiflow.error"


def heartbeat_interval() -> float:
    """Seconds between heartbeats of a running task (LUIGIFLOW_HEARTBEAT_S, default 30)."""
    return float(os.environ.get("LUIGIFLOW_HEARTBEAT_S", "30"))


def stale_after() -> float:
    """Seconds without heartbeat after which a RUNNING run is abandoned (default 10 beats)."""
    default = max(10 * heartbeat_interval(), 120.0)
    return float(os.environ.get("LUIGIFLOW_STALE_AFTER_S", str(default)))


class Heartbeat:
    """Marks a run alive every few seconds while its task works, from a daemon thread."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        client = _tracking.get_client()
        while not self.done.wait(heartbeat_interval()):
            try:
                client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
            except Exception:  # a missed beat only makes the run look older
                continue

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def is_abandoned(run: Run, now: float | None = None) -> bool:
    """A RUNNING run whose worker has not beaten for `stale_after()` seconds."""
    if run.info.status != "RUNNING":
        return False
    beat = run.data.tags.get(HEARTBEAT_TAG)
    last = float(beat) if beat else run.info.start_time / 1000
    return (now or time.time()) - last > stale_after()


def retire(run: Run) -> None:
    """Mark an abandoned RUNNING run KILLED, saying why; it never counted as complete."""
    client = _tracking.get_client()
    beat = run.data.tags.get(HEARTBEAT_TAG, "never")
    client.set_tag(
        run.info.run_id,
        ABANDONED_TAG,
        f"abandoned: no heartbeat from its worker since {beat} (luigiflow marked it KILLED)",
    )
    client.set_terminated(run.info.run_id, "KILLED")


def recheck_before_run(experiment_id: str, identity: str) -> Run | None:
    """Right before creating a run: a FINISHED run of `identity`, if one appeared.

    One query returns the newest runs of the identity in any state; RUNNING ones whose
    worker died (no heartbeat) are retired on the way.
    """
    from mlflow.entities import ViewType

    client = _tracking.get_client()
    filter_string = f"tags.`{IDENTITY_TAG}` = '{identity}'"
    with _tracking.translate_errors(f"checking runs with identity {identity[:12]}"):
        runs = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=RECHECK_WINDOW,
            order_by=ORDER_NEWEST_FIRST,
        )
    now = time.time()
    for run in runs:
        if is_abandoned(run, now):
            retire(run)
    finished = [r for r in runs if r.info.status == "FINISHED" and _counts(r)]
    if finished:
        return finished[0]
    if len(runs) == RECHECK_WINDOW:  # many failed attempts: ask exactly
        return query_finished_run(experiment_id, identity)
    return None


RECHECK_WINDOW = 50


def scan_finished_runs_all(experiment_id: str, extra_filter: str = "") -> list[Run]:
    """Every FINISHED, non-deleted run of one experiment, newest first."""
    from mlflow.entities import ViewType

    client = _tracking.get_client()
    runs: list[Run] = []
    token = None
    filter_string = "attributes.status = 'FINISHED'" + (
        f" AND {extra_filter}" if extra_filter else ""
    )
    with _tracking.translate_errors(f"listing finished runs of experiment {experiment_id}"):
        while True:
            page = client.search_runs(
                [experiment_id],
                filter_string=filter_string,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=PAGE_SIZE,
                order_by=ORDER_NEWEST_FIRST,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs


def scan_finished_runs(experiment_id: str) -> dict[str, Run]:
    """identity -> newest counting FINISHED run, for every luigiflow run of one experiment."""
    newest: dict[str, Run] = {}
    for run in scan_finished_runs_all(experiment_id):
        identity = run.data.tags.get(IDENTITY_TAG)
        if identity is not None and identity not in newest and _counts(run):
            newest[identity] = run  # newest first: the first counting run wins
    return newest


def prefetch(tasks: Iterable[Any]) -> None:
    """Decide completion for many tasks with few queries; answers are single use."""
    from luigiflow._task import MlflowTask

    uri = _tracking.tracking_uri()
    by_experiment: dict[str, list[MlflowTask]] = defaultdict(list)
    seen: set[str] = set()
    for task in tasks:
        if not isinstance(task, MlflowTask) or task.task_id in seen:
            continue
        seen.add(task.task_id)
        if _fresh_positive((uri, task.get_experiment_name(), task.identity)) is None:
            by_experiment[task.get_experiment_name()].append(task)
    found: dict[tuple[str, str, str], Run | None] = {}
    for name, group in by_experiment.items():
        exp_id = _tracking.experiment_id(name, create=False)
        if exp_id is None:
            found.update(((uri, name, t.identity), None) for t in group)
            continue
        identities = {t.identity for t in group}
        if len(identities) < SCAN_THRESHOLD:
            for identity in identities:
                found[(uri, name, identity)] = query_finished_run(exp_id, identity)
        else:
            runs = scan_finished_runs(exp_id)
            for identity in identities:
                found[(uri, name, identity)] = runs.get(identity)
    now = time.monotonic()
    with _lock:
        _answers.update({key: (run, now) for key, run in found.items()})


def _fresh_positive(key: tuple[str, str, str]) -> Run | None:
    entry = _answers.get(key)
    if (
        entry is not None
        and entry[0] is not None
        and time.monotonic() - entry[1] < RECENT_S
        and _counts(entry[0])
    ):
        return entry[0]
    return None


def find_finished_run(task: MlflowTask, fresh: bool = False) -> Run | None:
    """The FINISHED run that makes `task` complete, or None (see the freshness rule)."""
    key = (_tracking.tracking_uri(), task.get_experiment_name(), task.identity)
    if not fresh:
        with _lock:
            run = _fresh_positive(key)
            if run is not None:
                return run
            entry = _answers.pop(key, None)
            if entry is not None and entry[0] is None:
                return None  # a single-use "not complete" answer
    exp_id = _tracking.experiment_id(task.get_experiment_name(), create=False)
    if exp_id is None:
        return None
    run = query_finished_run(exp_id, task.identity)
    if run is not None:
        with _lock:
            _answers[key] = (run, time.monotonic())
    return run


def forget() -> None:
    """Drop every cached answer."""
    with _lock:
        _answers.clear()


def get_runs(run_ids: Sequence[str]) -> dict[str, Run]:
    """Fetch many runs by id in a few queries (run ids are the one field IN works on)."""
    from mlflow.entities import ViewType

    client = _tracking.get_client()
    result: dict[str, Run] = {}
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        return result
    experiments = [e.experiment_id for e in _all_experiments()]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        quoted = ", ".join(f"'{rid}'" for rid in chunk if rid.isalnum())
        if not quoted:
            continue
        with _tracking.translate_errors("fetching runs by id"):
            for run in client.search_runs(
                experiments,
                filter_string=f"attributes.run_id IN ({quoted})",
                run_view_type=ViewType.ALL,
                max_results=len(chunk),
            ):
                result[run.info.run_id] = run
    return result


def _all_experiments() -> list[Any]:
    from mlflow.entities import ViewType

    client = _tracking.get_client()
    with _tracking.translate_errors("listing experiments"):
        return list(client.search_experiments(view_type=ViewType.ALL, max_results=50_000))
