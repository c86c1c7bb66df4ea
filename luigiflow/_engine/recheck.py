"""Right before a task runs: did another worker finish the same identity meanwhile?

Luigi scheduled the task on a "not complete" answer that may be minutes old. Asking
the store again for every task would cost a query per run; instead each process
watches each experiment it runs tasks in. At most every `recheck_interval()` seconds
one query lists the runs that *other* workers FINISHED since the last look (by
`end_time`, less a clock-skew margin); a task whose identity shows up there reuses
that run instead of computing again. Both the exact check (the first task of an
experiment in a process) and each look mark KILLED the RUNNING runs whose worker died
(no heartbeat).

A watch whose look saw no run of another worker waits twice as long before the next
(up to QUIET_FACTOR intervals): a build alone on a tracking server looks a handful of
times, not every second (two requests a look); any run of another worker seen brings
it back to one interval.

What this gives up, knowingly: a run another worker finishes less than one interval
(while alone, up to QUIET_FACTOR) before ours starts is found only by the look after
our create (`claim`), which reuses it and marks ours KILLED. A run a look listed less
than RECENT_S ago is reused as listed (a "complete" answer is kept that long too; a
client reusing the tasks of three others asks nothing more per task); an older
candidate is confirmed with an exact query, which sees deletions.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from luigiflow import _settings
from luigiflow._engine import claim
from luigiflow._engine.completion import RECENT_S, Completion
from luigiflow._store import liveness, schema
from luigiflow._store.port import RunStore
from luigiflow._store.records import FINISHED, RunRecord

# Clocks of workers on different machines disagree a little; end times are theirs.
SKEW_MS = 5_000
# Newest runs of one identity read by the exact check before falling back to a query.
WINDOW = 50
QUIET_FACTOR = 16  # a watch alone waits up to this many intervals between looks


@dataclass
class _Watch:
    covered_from_ms: int  # runs that ended after this (less skew) have been looked at
    next_from_ms: int  # where the next look starts
    looked_at: float = float("-inf")  # monotonic time of the last look
    finished: set[str] = field(default_factory=set)  # identities others finished
    # identity -> the newest FINISHED run of another worker the last look listed (the
    # exact query's order: latest start, then smallest run id)
    listed: dict[str, RunRecord] = field(default_factory=dict)
    backoff: int = 1  # intervals until the next look (doubled by each look that saw no one)


class Recheck:
    """The watches of one build, per experiment."""

    def __init__(
        self, store: RunStore, completion: Completion, sightings: claim.Sightings | None = None
    ) -> None:
        self.store = store
        self.completion = completion
        # Holders seen by the looks here, for a wait that begins after one (see claim).
        self.sightings: claim.Sightings = sightings if sightings is not None else {}
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        # Identities another worker's live RUNNING run held at the last look (with that
        # run's id), per experiment: a task among them waits for that lease before
        # creating a run.
        self._held: dict[str, dict[str, str]] = {}
        # Whether this build has seen another worker's run of its identities (a look, an
        # exact check or a wait): then a create is preceded by one more look (`crowded`).
        self.crowded = False
        # When this process first heard "not complete" (the watches begin there): a run of
        # another worker started after it was started by a build running beside ours.
        self._first_asked_ms: int | None = None
        # The FINISHED run a wait's own exact look just found, answered once (see wait_ended).
        self._found: dict[tuple[str, str], tuple[RunRecord, float]] = {}
        # run id -> when (monotonic) a run handed out without a query of its own was read
        # (by a wait's look or the last look): its "complete" answer dates from then.
        self._read_at: dict[str, float] = {}

    def held_elsewhere(self, experiment_id: str, identity: str) -> str | None:
        """The id of another worker's live RUNNING run of `identity` when last seen."""
        with self._lock:
            return self._held.get(experiment_id, {}).get(identity)

    def wait_ended(self, experiment_id: str, identity: str, finished: RunRecord | None) -> None:
        """A wait for another worker's run of `identity` saw it end, with the `finished`
        run its exact look found (or None: the holder failed or died). The next re-check
        of the identity answers that run once, else asks the store exactly, whatever the
        last look said."""
        with self._lock:
            self.crowded = True
            self._held.get(experiment_id, {}).pop(identity, None)
            if finished is not None:
                self._found[(experiment_id, identity)] = (finished, time.monotonic())
            watch = self._watches.get(experiment_id)
            if watch is not None:
                watch.finished.add(identity)

    def _note_held(self, experiment_id: str, runs: list[RunRecord], replace: bool) -> None:
        me = liveness.worker_token()
        holders = {
            r.data.tags[schema.IDENTITY_TAG]: r
            for r in sorted(runs, key=claim.order, reverse=True)  # the earliest holder wins
            if r.data.tags.get(schema.WORKER_TAG) != me
            and schema.IDENTITY_TAG in r.data.tags
            and claim.alive(r)
        }
        now = time.monotonic()
        self.sightings.update(((experiment_id, i), (now, r)) for i, r in holders.items())
        live = {identity: run.info.run_id for identity, run in holders.items()}
        if replace:
            self._held[experiment_id] = live
        else:
            self._held.setdefault(experiment_id, {}).update(live)

    def existing_run(
        self, experiment_id: str, identity: str, asked_ms: int | None
    ) -> RunRecord | None:
        """A FINISHED run of `identity` that appeared since `asked_ms`, or None.

        `asked_ms` is when the store said the task was not complete; None (the task was
        never asked about, e.g. `run()` called directly) means one exact query. The first
        task of an experiment in a process is also checked exactly (a forked worker runs
        just one); the watch serves the tasks after it.
        """
        with self._lock:
            found = self._found.pop((experiment_id, identity), None)
            if found is not None and time.monotonic() - found[1] < RECENT_S:
                self._read_at[found[0].info.run_id] = found[1]
                return found[0]  # else Luigi ran other tasks since: ask again
            watch = self._watches.get(experiment_id)
            if watch is None:
                if asked_ms is not None:
                    # From the oldest answer this process still acts on: every task it
                    # will run was asked about after that.
                    oldest = min(asked_ms, self.completion.oldest_negative_ms() or asked_ms)
                    self._first_asked_ms = min(oldest, self._first_asked_ms or oldest)
                    start = oldest - SKEW_MS
                    self._watches[experiment_id] = _Watch(start, start)
            elif asked_ms is not None and asked_ms - SKEW_MS >= watch.covered_from_ms:
                wait = _settings.recheck_interval() * watch.backoff
                if time.monotonic() - watch.looked_at >= wait:
                    self._look(experiment_id, watch)
                if identity not in watch.finished:
                    return None
                listed = watch.listed.get(identity)
                if (
                    listed is not None
                    and time.monotonic() - watch.looked_at < RECENT_S
                    and self.completion.counts(listed)
                ):
                    # The last look, a moment ago, listed it whole: as fresh as a
                    # "complete" answer, so no exact query confirms it.
                    self._read_at[listed.info.run_id] = watch.looked_at
                    return listed
        # No watch yet, asked before the watch began, or another worker finished this
        # identity (confirm it: newest first, deletions and --force seen).
        return self._exact(experiment_id, identity)

    def read_at(self, run_id: str) -> float | None:
        """When a run `existing_run` answered without a query was read (None: just now)."""
        with self._lock:
            return self._read_at.pop(run_id, None)

    def exact(self, experiment_id: str, identity: str) -> RunRecord | None:
        """The newest counting FINISHED run of `identity`, asked now; the identity is
        `held_elsewhere` afterwards when another worker's live run holds it."""
        return self._exact(experiment_id, identity)

    def _exact(self, experiment_id: str, identity: str) -> RunRecord | None:
        """The newest counting FINISHED run of `identity`; dead RUNNING ones are retired.

        One query returns the newest runs of the identity in any state.
        """
        runs = self.store.runs_with_identity(experiment_id, identity, WINDOW)
        liveness.retire_abandoned(self.store, runs)
        me = liveness.worker_token()
        with self._lock:
            self.crowded = self.crowded or any(self._beside(r, me) for r in runs)
            self._held.get(experiment_id, {}).pop(identity, None)
            self._note_held(experiment_id, runs, replace=False)
        finished = [r for r in runs if r.info.status == FINISHED and self.completion.counts(r)]
        if finished:
            return finished[0]
        if len(runs) == WINDOW:  # many failed attempts: ask exactly
            return self.completion.query(experiment_id, identity)
        return None

    def _beside(self, run: RunRecord, me: str) -> bool:
        """Whether `run` is another worker's of a build running beside ours: alive now, or
        started after this process was first told "not complete". The FINISHED runs of a
        build that ended just before ours (the last few seconds, which the watches look at
        for clock skew) are not: a user rebuilding after a build pays no extra look."""
        if run.data.tags.get(schema.WORKER_TAG) == me:
            return False
        first = self._first_asked_ms
        return claim.alive(run) or (first is not None and run.info.start_time >= first)

    def _look(self, experiment_id: str, watch: _Watch) -> None:
        now_ms = int(time.time() * 1000)
        me = liveness.worker_token()
        since = watch.next_from_ms
        finished = list(
            self.store.finished_runs(experiment_id, ended_since_ms=since, not_worker=me)
        )
        listed: dict[str, RunRecord] = {}
        for run in finished:
            identity = run.data.tags.get(schema.IDENTITY_TAG)
            if identity is not None:
                watch.finished.add(identity)
                known = listed.get(identity)
                if known is None or _newer(run, known):
                    listed[identity] = run
        # Dead workers' runs (no heartbeat) are marked KILLED on the way; alive ones and
        # our own are left alone.
        running = self.store.running_runs(experiment_id, me)
        others = bool(finished or running)
        self.crowded = self.crowded or any(self._beside(r, me) for r in [*finished, *running])
        watch.backoff = 1 if others else min(watch.backoff * 2, QUIET_FACTOR)
        liveness.retire_abandoned(self.store, running)
        self._note_held(experiment_id, running, replace=True)
        watch.next_from_ms = now_ms - SKEW_MS
        watch.looked_at = time.monotonic()
        # Only this look's: a run an earlier look listed may be deleted since.
        watch.listed = listed


def _newer(run: RunRecord, than: RunRecord) -> bool:
    """`run` comes first in the exact query's order (newest start, then smallest id)."""
    return (-run.info.start_time, run.info.run_id) < (-than.info.start_time, than.info.run_id)
