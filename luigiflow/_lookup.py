"""Finding the FINISHED run that makes a task complete, for many tasks at once.

Luigi asks `complete()` task by task. Asking MLflow once per task costs a query each
(~8 ms on SQLite, more over HTTP), so luigiflow answers from a batch: whenever Luigi
is about to ask about a set of tasks (the roots of a build, the dependencies returned
by `deps()`), `prefetch` decides all of them with one query per experiment.

Freshness rule: a "not complete" answer is *single use*: the next `complete()` on that
task consumes it and any later call asks the store again, so a run finished by another
worker is seen at once. A "complete" answer may be reused for RECENT_S seconds (siblings
that share an upstream would otherwise each re-ask about it); after that the store is
asked again, so a run deleted meanwhile stops counting. A task is not run on a stale
answer either: right before creating its run, `_recheck` looks for runs other workers
finished since the answer was given.

Two savings keep the number of queries small: `prefetch` skips tasks it answered less
than RECENT_S ago (Luigi asks about a shared upstream once, while each sibling's
`deps()` names it again), and tasks this process has just run are fetched by run id
(the one field MLflow can match with IN) instead of scanning their whole experiment.
"""

from __future__ import annotations

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
Key = tuple[str, str, str]  # (tracking uri, experiment name, identity)
# Answers not yet given to complete(): (run or None, monotonic time, epoch ms asked).
_answers: dict[Key, tuple[Run | None, float, int]] = {}
# "Not complete" answers already given: (monotonic time, epoch ms the store was asked).
_given_negative: dict[Key, tuple[float, int]] = {}
# Runs this process finished, by task: fetched by id when asked about again.
_finished_here: dict[Key, str] = {}


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
        for key in [k for k in _given_negative if k[2] in identities]:
            del _given_negative[key]


def clear_ignored() -> None:
    _not_before.clear()


def counts(run: Run) -> bool:
    """The run is not one `ignore_runs_before` set aside."""
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
        if identity is not None and identity not in newest and counts(run):
            newest[identity] = run  # newest first: the first counting run wins
    return newest


def prefetch(tasks: Iterable[Any]) -> None:
    """Decide completion for many tasks with few queries; answers are single use."""
    from luigiflow._task import MlflowTask

    uri = _tracking.tracking_uri()
    by_experiment: dict[str, list[MlflowTask]] = defaultdict(list)
    seen: set[str] = set()
    with _lock:
        for task in tasks:
            if not isinstance(task, MlflowTask) or task.task_id in seen:
                continue
            seen.add(task.task_id)
            if not _recently_answered((uri, task.get_experiment_name(), task.identity)):
                by_experiment[task.get_experiment_name()].append(task)
    found: dict[Key, Run | None] = {}
    asked_ms = _epoch_ms()
    for name, group in by_experiment.items():
        exp_id = _tracking.experiment_id(name, create=False)
        if exp_id is None:
            found.update(((uri, name, t.identity), None) for t in group)
            continue
        # Runs finished by this process are fetched by id (IN works on run ids), not
        # found by scanning the whole experiment; a deleted one is looked up as usual.
        with _lock:
            mine = {
                t.identity: _finished_here[k]
                for t in group
                if (k := (uri, name, t.identity)) in _finished_here
            }
        fetched = _fetch_finished(exp_id, list(mine.values())) if mine else {}
        known = {identity for identity, run_id in mine.items() if run_id in fetched}
        found.update(((uri, name, identity), fetched[mine[identity]]) for identity in known)
        identities = {t.identity for t in group} - known
        if not identities:
            continue
        if len(identities) < SCAN_THRESHOLD:
            for identity in identities:
                found[(uri, name, identity)] = query_finished_run(exp_id, identity)
        else:
            runs = scan_finished_runs(exp_id)
            for identity in identities:
                found[(uri, name, identity)] = runs.get(identity)
    now = time.monotonic()
    with _lock:
        _answers.update({key: (run, now, asked_ms) for key, run in found.items()})


def _epoch_ms() -> int:
    return int(time.time() * 1000)


def _recently_answered(key: Key) -> bool:
    """An answer is waiting for complete(), or one was given less than RECENT_S ago."""
    entry = _answers.get(key)
    if entry is not None and (entry[0] is None or _fresh_positive(key) is not None):
        return True
    given = _given_negative.get(key)
    return given is not None and time.monotonic() - given[0] < RECENT_S


def _fresh_positive(key: Key) -> Run | None:
    entry = _answers.get(key)
    if (
        entry is not None
        and entry[0] is not None
        and time.monotonic() - entry[1] < RECENT_S
        and counts(entry[0])
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
            if entry is not None and entry[0] is None:  # a single-use "not complete"
                _given_negative[key] = (entry[1], entry[2])
                return None
    asked_ms = _epoch_ms()
    exp_id = _tracking.experiment_id(task.get_experiment_name(), create=False)
    run = None if exp_id is None else query_finished_run(exp_id, task.identity)
    with _lock:
        if run is not None:
            _answers[key] = (run, time.monotonic(), asked_ms)
        else:
            _given_negative[key] = (time.monotonic(), asked_ms)
    return run


def negative_answer_ms(task: MlflowTask) -> int | None:
    """When the store was asked for the "not complete" answer `task` was scheduled on."""
    key = (_tracking.tracking_uri(), task.get_experiment_name(), task.identity)
    with _lock:
        given = _given_negative.get(key)
    return given[1] if given else None


def note_complete(task: MlflowTask, run_id: str) -> None:
    """`task` just got FINISHED run `run_id` here: its "not complete" answer is void."""
    key = (_tracking.tracking_uri(), task.get_experiment_name(), task.identity)
    with _lock:
        _given_negative.pop(key, None)
        _answers.pop(key, None)
        _finished_here[key] = run_id


def _fetch_finished(experiment_id: str, run_ids: list[str]) -> dict[str, Run]:
    """Those of `run_ids` that are FINISHED, not deleted, and count."""
    from mlflow.entities import ViewType

    client = _tracking.get_client()
    result: dict[str, Run] = {}
    for start in range(0, len(run_ids), 500):
        quoted = ", ".join(f"'{r}'" for r in run_ids[start : start + 500] if r.isalnum())
        with _tracking.translate_errors(f"fetching runs of experiment {experiment_id}"):
            runs = client.search_runs(
                [experiment_id],
                filter_string=f"attributes.run_id IN ({quoted}) AND attributes.status = 'FINISHED'",
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=500,
            )
        result.update((r.info.run_id, r) for r in runs if counts(r))
    return result


def oldest_negative_ms() -> int | None:
    """When the store was asked for the oldest "not complete" answer given out."""
    with _lock:
        return min((ms for _, ms in _given_negative.values()), default=None)


def known_complete(task: MlflowTask) -> bool:
    """A fresh "complete" answer is at hand (no query)."""
    key = (_tracking.tracking_uri(), task.get_experiment_name(), task.identity)
    with _lock:
        return _fresh_positive(key) is not None


def forget() -> None:
    """Drop every cached answer."""
    with _lock:
        _answers.clear()
        _given_negative.clear()
        _finished_here.clear()


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
