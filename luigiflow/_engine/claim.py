"""Exactly once without a central scheduler: a RUNNING run with a live heartbeat is a lease.

Right before creating its run, a worker that knows another worker's live RUNNING run of
the same identity (from the re-check) waits for it to end, then reuses its result, or
claims the task itself if it failed or its worker died.

Two workers may both see no lease and both create a run: MLflow offers no
compare-and-set on runs. So after creating its run each worker looks again, and the
live runs of the identity settle it among themselves by an order every observer
computes alike from stored values: earliest start time, then smallest run id.

- A worker that sees a live run *earlier* than its own yields: it marks its own run
  KILLED (naming the run it yields to) and waits for the identity's outcome.
- A worker that sees only *later* live runs waits until each has yielded or ended: a
  later run whose worker looked before ours existed never saw ours and does the work;
  we then reuse its result.
- A worker whose look shows no other live run does the work.

Why two workers never both do the work: each worker's deciding look comes after its
own create. Of two workers that both went on, the one that looked last saw the other's
run (created before the other's look) RUNNING and alive, and would have waited.
Nothing but the store is shared (no file lock), so processes on different machines
sharing only an `mlflow server` are covered. No clock is compared across machines
except through the heartbeat's staleness rule, which decides when a silent worker is
dead (`LUIGIFLOW_STALE_AFTER_S`; a surviving parent process marks its dead children's
runs at once).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from luigiflow import _settings
from luigiflow._store import liveness, schema, signatures
from luigiflow._store.port import RunStore
from luigiflow._store.records import FINISHED, KILLED, RUNNING, RunRecord

# Newest runs of one identity read per look: a lease holder is among the newest.
WINDOW = 50
FIRST_POLL_S = 0.1
MAX_POLL_S = 2.0
# A wait for another worker's run looks again after at least this share of the run's age:
# a run that has gone on for a while is likely to go on (each look is a request, and
# every client waiting for a task asks).
AGE_SHARE = 0.5

Key = tuple[str, str]  # (experiment id, identity)
# When (monotonic) another worker's live run was last seen holding an identity, and that run.
Sightings = dict[Key, tuple[float, RunRecord]]


@dataclass(frozen=True)
class Settled:
    """What the looks decided: reuse `finished`, do the work (`proceed`), wait for the run
    we `yielded_to` (when asked not to wait here), or claim again."""

    finished: RunRecord | None = None
    proceed: bool = False
    yielded_to: RunRecord | None = None


def order(run: RunRecord) -> tuple[int, str]:
    """The tie-break every worker computes alike: earliest start, then smallest run id."""
    return (run.info.start_time, run.info.run_id)


class Claim:
    """Leases on identities, settled through one store."""

    def __init__(
        self,
        store: RunStore,
        counts: Callable[[RunRecord], bool],
        sightings: Sightings | None = None,
    ) -> None:
        self.store = store
        self.counts = counts  # a FINISHED run that counts (not set aside by --force)
        # Shared with the re-check, whose looks see holders too (see settle's `rested`).
        self.sightings: Sightings = sightings if sightings is not None else {}

    def _look(self, experiment_id: str, identity: str) -> list[RunRecord]:
        runs = self.store.runs_with_identity(experiment_id, identity, WINDOW)
        liveness.retire_abandoned(self.store, runs)
        return runs

    def settle(
        self,
        experiment_id: str,
        identity: str,
        mine: RunRecord | None,
        announce: bool = True,
        wait_after_yielding: bool = True,
        rested: bool = False,
    ) -> Settled:
        """Decide who does the work for `identity`; `mine` is our fresh run, or None.

        With `mine` None (we hold no run yet) this waits while another worker holds the
        identity. With our run, it applies the tie-break above; our run is marked KILLED
        when we yield, and then, unless `wait_after_yielding`, this returns at once with
        the run we yielded to. Returns once the work is ours, done, or free to claim again.
        While it waits it says once (unless `announce` is off) which run and host it waits for.
        `rested`: the first look waits its turn after the last sighting of the holder (a
        wait that begins right after the look that found the holder asks nothing new).
        """
        poll = FIRST_POLL_S
        holder: RunRecord | None = None  # the run we yielded to (or waited for)
        announced: set[str] = set()  # runs we said we wait for
        seen = self.sightings.get((experiment_id, identity)) if rested else None
        if seen is not None and mine is None:
            time.sleep(max(0.0, _pause(poll, seen[1]) - (time.monotonic() - seen[0])))
        while True:
            runs = self._look(experiment_id, identity)
            finished = self.finished(runs)
            mine_id = mine.info.run_id if mine is not None else None
            if finished:
                if mine is not None and holder is None:
                    self._stand_down(
                        mine, f"another worker finished it first: run {finished[0].info.run_id}"
                    )
                return Settled(finished=finished[0])
            rivals = [r for r in runs if r.info.run_id != mine_id and alive(r)]
            waiting_for = None
            if mine is None or holder is not None:
                if not rivals:  # the holder failed or died: the task is free again
                    self.sightings.pop((experiment_id, identity), None)
                    return Settled()
                waiting_for = min(rivals, key=order)
                self.sightings[(experiment_id, identity)] = (time.monotonic(), waiting_for)
                if announce:
                    _announce_wait(waiting_for, announced)
            else:
                earlier = [r for r in rivals if order(r) < order(mine)]
                if earlier:
                    holder = waiting_for = min(earlier, key=order)
                    self.sightings[(experiment_id, identity)] = (time.monotonic(), holder)
                    self._stand_down(mine, _yield_reason(holder))
                    if not wait_after_yielding:
                        return Settled(yielded_to=holder)
                elif not rivals:
                    return Settled(proceed=True)
            time.sleep(_pause(poll, waiting_for))
            poll = min(poll * 1.5, MAX_POLL_S)

    def finished(self, runs: list[RunRecord]) -> list[RunRecord]:
        """The FINISHED runs among `runs` that count, in their order (newest first)."""
        return [r for r in runs if r.info.status == FINISHED and self.counts(r)]

    def _stand_down(self, mine: RunRecord, reason: str) -> None:
        """Mark our own run KILLED: another worker's run does this identity's work."""
        self.store.set_tag(mine.info.run_id, schema.ERROR_TAG, reason[: schema.MAX_TAG_LENGTH])
        self.store.terminate(mine.info.run_id, KILLED)


def _pause(poll: float, waiting_for: RunRecord | None) -> float:
    """Seconds until the next look: `poll` (growing from FIRST_POLL_S), at least AGE_SHARE
    of the age of the run waited for, never more than MAX_POLL_S or one heartbeat."""
    if waiting_for is not None:
        # Its start is the other worker's clock: a skewed one errs within these bounds.
        age = time.time() - waiting_for.info.start_time / 1000
        poll = max(poll, AGE_SHARE * age)
    return min(poll, MAX_POLL_S, max(_settings.heartbeat_interval(), FIRST_POLL_S))


def _yield_reason(holder: RunRecord) -> str:
    worker = holder.data.tags.get(schema.WORKER_TAG, "another worker")
    return (
        f"yielded: run {holder.info.run_id} of {worker} started this task first (same "
        "identity); luigiflow waits for it and reuses its result"
    )


def _announce_wait(holder: RunRecord, announced: set[str]) -> None:
    """Say once, in one line, which run and host a waiting build waits for."""
    if holder.info.run_id in announced:
        return
    announced.add(holder.info.run_id)
    worker = holder.data.tags.get(schema.WORKER_TAG, "")
    host = worker.partition("@")[0].partition("/")[0] or "an unknown host"
    family = holder.data.tags.get(schema.FAMILY_TAG, "a task")
    print(
        f"luigiflow: {family}: waiting for run {holder.info.run_id} on {host} (worker "
        f"{worker or 'unknown'}), which is running the same task; its result is reused, "
        f"or the task is taken over once it stops beating for {_settings.stale_after():g} s",
        file=sys.stderr,
        flush=True,
    )


def alive(run: RunRecord) -> bool:
    """A RUNNING run whose worker beats, and, when it ran on this host, still exists;
    under a team key, only a run whose lease is signed (see signatures.lease_trusted).

    A process of this host that is gone (killed with its whole build) is known dead at
    once; on another host only the heartbeat's staleness tells.
    """
    return (
        run.info.status == RUNNING
        and not liveness.is_abandoned(run)
        and signatures.lease_trusted(run)
    )
