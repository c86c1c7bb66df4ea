"""Right before a task runs: did another worker finish the same identity meanwhile?

Luigi scheduled the task on a "not complete" answer that may be minutes old. Asking
the store again for every task would cost a query per run; instead each process
watches each experiment it runs tasks in. At most every `recheck_interval()` seconds
one query lists the runs that *other* workers FINISHED since the last look (by
`end_time`, less a clock-skew margin); a task whose identity shows up there reuses
that run instead of computing again. Both the exact check (the first task of an
experiment in a process) and each look mark KILLED the RUNNING runs whose worker died
(no heartbeat).

What this gives up, knowingly: a run another worker finishes less than one interval
before ours starts may be computed twice. It is never wrongly *reused*: a candidate
is confirmed with an exact query, which sees deletions.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from luigiflow import _liveness, _lookup, _tracking
from luigiflow._identity import IDENTITY_TAG

if TYPE_CHECKING:
    from mlflow.entities import Run

# Clocks of workers on different machines disagree a little; end times are theirs.
SKEW_MS = 5_000


def recheck_interval() -> float:
    """Seconds between looks at other workers' runs (LUIGIFLOW_RECHECK_S, default 1)."""
    return _liveness.env_seconds("LUIGIFLOW_RECHECK_S", 1.0)


@dataclass
class _Watch:
    covered_from_ms: int  # runs that ended after this (less skew) have been looked at
    next_from_ms: int  # where the next look starts
    looked_at: float = float("-inf")  # monotonic time of the last look
    finished: set[str] = field(default_factory=set)  # identities others finished


_lock = threading.Lock()
_watches: dict[tuple[str, str], _Watch] = {}


def existing_run(experiment_id: str, identity: str, asked_ms: int | None) -> Run | None:
    """A FINISHED run of `identity` that appeared since `asked_ms`, or None.

    `asked_ms` is when the store said the task was not complete; None (the task was
    never asked about, e.g. `run()` called directly) means one exact query. The first
    task of an experiment in a process is also checked exactly (a forked worker runs
    just one); the watch serves the tasks after it.
    """
    key = (_tracking.tracking_uri(), experiment_id)
    with _lock:
        watch = _watches.get(key)
        if watch is None:
            if asked_ms is not None:
                # From the oldest answer this process still acts on: every task it
                # will run was asked about after that.
                start = min(asked_ms, _lookup.oldest_negative_ms() or asked_ms) - SKEW_MS
                _watches[key] = _Watch(covered_from_ms=start, next_from_ms=start)
        elif asked_ms is not None and asked_ms - SKEW_MS >= watch.covered_from_ms:
            if time.monotonic() - watch.looked_at >= recheck_interval():
                _look(experiment_id, watch)
            if identity not in watch.finished:
                return None
    # No watch yet, asked before the watch began, or another worker finished this
    # identity (confirm it: newest first, deletions and --force seen).
    return _exact(experiment_id, identity)


def _exact(experiment_id: str, identity: str) -> Run | None:
    """The newest counting FINISHED run of `identity`; dead RUNNING ones are retired.

    One query returns the newest runs of the identity in any state.
    """
    from mlflow.entities import ViewType

    client = _tracking.get_client()
    with _tracking.translate_errors(f"checking runs with identity {identity[:12]}"):
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{IDENTITY_TAG}` = '{identity}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=WINDOW,
            order_by=_lookup.ORDER_NEWEST_FIRST,
        )
    _liveness.retire_abandoned(runs)
    finished = [r for r in runs if r.info.status == "FINISHED" and _lookup.counts(r)]
    if finished:
        return finished[0]
    if len(runs) == WINDOW:  # many failed attempts: ask exactly
        return _lookup.query_finished_run(experiment_id, identity)
    return None


WINDOW = 50


def _look(experiment_id: str, watch: _Watch) -> None:
    from mlflow.entities import ViewType

    now_ms = int(time.time() * 1000)
    not_mine = f"tags.`{_liveness.WORKER_TAG}` != '{_liveness.worker_token()}'"
    finished = _lookup.scan_finished_runs_all(
        experiment_id, f"attributes.end_time >= {watch.next_from_ms} AND {not_mine}"
    )
    watch.finished.update(
        r.data.tags[IDENTITY_TAG] for r in finished if IDENTITY_TAG in r.data.tags
    )
    # Dead workers' runs (no heartbeat) are marked KILLED on the way; alive ones and
    # our own are left alone.
    with _tracking.translate_errors(f"listing running runs of experiment {experiment_id}"):
        running = _tracking.get_client().search_runs(
            [experiment_id],
            filter_string=f"attributes.status = 'RUNNING' AND {not_mine}",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
        )
    _liveness.retire_abandoned(running)
    watch.next_from_ms = now_ms - SKEW_MS
    watch.looked_at = time.monotonic()


def forget() -> None:
    """Drop every watch (at the end of a build)."""
    with _lock:
        _watches.clear()
