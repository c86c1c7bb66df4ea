"""Finding the FINISHED run that makes a task complete, for many tasks at once.

Luigi asks `complete()` task by task. Asking the store once per task costs a query each
(~8 ms on SQLite, more over HTTP), so luigiflow answers from a batch: whenever Luigi
is about to ask about a set of tasks (the roots of a build, the dependencies returned
by `deps()`), `prefetch` decides all of them with one query per experiment.

Freshness rule: a "not complete" answer is *single use*: the next `complete()` on that
task consumes it and any later call asks the store again, so a run finished by another
worker is seen at once. An answer nobody consumed (Luigi asks `complete()` of a task
once per build, while every `deps()` list naming it prefetches again) is never older
than the work it describes: the next `deps()` naming the task asks again, a waiting
"not complete" older than RECENT_S is asked again when consumed, and a forked worker
drops the waiting "not complete" answers it inherited (they were given in its parent
before the work it is about to check was done, possibly by another process).

A "complete" answer may be reused for RECENT_S seconds (siblings that share an
upstream would otherwise each re-ask about it); after that the store is asked again,
so a run deleted meanwhile stops counting. A task is not run on a stale answer either:
right before creating its run, `recheck` looks for runs other workers finished since
the answer was given.

Two savings keep the number of queries small: `prefetch` skips tasks it answered less
than RECENT_S ago (Luigi asks about a shared upstream once, while each sibling's
`deps()` names it again), and tasks this process has just run are fetched by run id
(the one field MLflow can match with IN) instead of scanning their whole experiment.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from luigiflow._engine.protocol import TrackedTask, is_tracked
from luigiflow._store import schema, signatures
from luigiflow._store.port import IdentityReads, RunStore
from luigiflow._store.records import FINISHED, RunRecord

# Below this many tasks in one experiment, one exact query per task beats scanning
# every FINISHED run of the experiment.
SCAN_THRESHOLD = 4
# A scan that has read this many runs asks its last few identities one by one.
SCAN_FIRST = 1_000
EXACT_AFTER_SCAN = 32
RECENT_S = 2.0
# Newest runs of one identity searched for a signed one when the newest is not.
UNTRUSTED_WINDOW = 100

Key = tuple[str, str]  # (experiment name, identity)


def epoch_ms() -> int:
    return int(time.time() * 1000)


class Completion:
    """The completion answers of one build (or of a process outside any build)."""

    def __init__(
        self,
        store: RunStore,
        not_before: dict[str, int] | None = None,
        chosen: dict[str, str] | None = None,
        build: bool = True,
    ) -> None:
        self.store = store
        self._build = build  # the answers of one build (else of a process, between builds)
        self._lock = threading.Lock()
        # Answers not yet given to complete(): (run or None, monotonic time, epoch ms asked).
        self._answers: dict[Key, tuple[RunRecord | None, float, int]] = {}
        # "Not complete" answers already given: (monotonic time, epoch ms the store was asked).
        self._given_negative: dict[Key, tuple[float, int]] = {}
        # Runs this process finished, by task: fetched by id when asked about again.
        self._finished_here: dict[Key, str] = {}
        # identity -> epoch ms: runs of that identity started earlier do not count (set
        # by `--rerun-changed`, `--force`: complete tasks that must run again).
        self.not_before: dict[str, int] = dict(not_before or {})
        # identity -> run id: the run that completes it in this build, where a plan chose
        # an older run than the newest (`--rerun-changed` after a revert: the run whose
        # code matches the current code; docs/identity.md, "When a task is reused").
        self.chosen: dict[str, str] = dict(chosen or {})
        # experiment name -> its id as this build's completion questions resolved it (None:
        # it did not exist then): the build creates its first run there without asking again.
        self.resolved: dict[str, str | None] = {}
        # Experiments that did not exist when this build first asked about them: no run in
        # them is older than the build (nothing to name runs after, to cut off from, to
        # compare store formats with).
        self.new_in_build: set[str] = set()
        self._pid = os.getpid()

    def _experiment(self, name: str) -> str | None:
        # Asked every time while absent: "no such experiment" is a "not complete" answer,
        # and one given twice could be older than another worker's first run there. A
        # build asks afresh once per experiment (the store's cache may predate a deletion
        # in the UI; the build's runs then go to the successor): what it finds is where
        # the build creates its runs (Session.experiment_id).
        fresh = self._build and name not in self.resolved
        exp_id = self.store.experiment_id(name, create=False, fresh=fresh)
        with self._lock:
            if exp_id is None and fresh:  # the build's first answer: absent
                self.new_in_build.add(name)
            self.resolved[name] = exp_id
        return exp_id

    def _forget_inherited(self) -> None:
        """In a forked worker, drop the waiting "not complete" answers of the parent
        (called under the lock): the parent gave them before the upstream work this
        worker checks was done, and would hand a stale one to Luigi's run-time check."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        for key in [k for k, entry in self._answers.items() if entry[0] is None]:
            del self._answers[key]

    # ----- forced re-execution ------------------------------------------------------
    def ignore_runs_before(self, identities: Iterable[str], epoch: int) -> None:
        """Treat existing runs of these identities as absent."""
        identities = set(identities)
        with self._lock:
            self.not_before.update(dict.fromkeys(identities, epoch))
            for key in [k for k in self._answers if k[1] in identities]:
                del self._answers[key]
            for key in [k for k in self._given_negative if k[1] in identities]:
                del self._given_negative[key]

    def choose_runs(self, chosen: dict[str, str]) -> None:
        """Complete these identities with these runs (identity -> run id), not the newest."""
        with self._lock:
            self.chosen.update(chosen)
            for key in [k for k in self._answers if k[1] in chosen]:
                del self._answers[key]

    def counts(self, run: RunRecord) -> bool:
        """The run is not one `ignore_runs_before` set aside, and, with a team key, its
        signature verifies (unsigned and badly signed runs are never reused)."""
        threshold = self.not_before.get(run.data.tags.get(schema.IDENTITY_TAG, ""))
        recent = threshold is None or run.info.start_time >= threshold
        return recent and signatures.trusted(run)

    # ----- store questions ----------------------------------------------------------
    def query(self, experiment_id: str, identity: str) -> RunRecord | None:
        """The newest counting FINISHED, non-deleted run with `identity` (or the run chosen
        for it, while it counts)."""
        if identity in self.chosen:
            chosen = self.store.fetch_finished(experiment_id, [self.chosen[identity]])
            if chosen and self.counts(chosen[0]):
                return chosen[0]
        run = self.store.find_finished(experiment_id, identity, self.not_before.get(identity))
        if run is None or signatures.trusted(run):
            return run
        # The newest is not signed with a key held here (forged, or another team's):
        # look further among the newest runs of the identity.
        runs = self.store.runs_with_identity(experiment_id, identity, UNTRUSTED_WINDOW)
        return next((r for r in runs if r.info.status == FINISHED and self.counts(r)), None)

    def scan(self, experiment_id: str, wanted: set[str] | None = None) -> dict[str, RunRecord]:
        """identity -> newest counting FINISHED run, for the `wanted` identities (default:
        every identity) of one experiment; only runs of wanted identities are verified.

        Runs come newest first, so the scan stops once every wanted identity is answered;
        a store that reads by identity (`IdentityReads`) sends only the wanted ones.
        After the newest SCAN_FIRST runs, a few identities still unanswered are asked
        one exact query each: in an experiment of 100,000 runs, asking about a handful of
        tasks must not read (or make a server send) every older run.
        """
        newest: dict[str, RunRecord] = {}
        runs = self.store.finished_runs(experiment_id)
        if wanted is not None and isinstance(self.store, IdentityReads):
            # The store picks the runs of wanted identities itself: the other runs of
            # the experiment are never built (most of them, in a large experiment).
            runs = self.store.finished_runs_of(experiment_id, wanted)
        for count, run in enumerate(runs, 1):
            identity = run.data.tags.get(schema.IDENTITY_TAG, "")
            fresh = identity != "" and identity not in newest
            if fresh and (wanted is None or identity in wanted) and self.counts(run):
                newest[identity] = run  # newest first: the first counting run wins
            if wanted is None:
                continue
            if len(newest) == len(wanted):
                break
            if count == SCAN_FIRST and len(wanted) - len(newest) <= EXACT_AFTER_SCAN:
                for rest in wanted - newest.keys():
                    found = self.query(experiment_id, rest)
                    if found is not None:
                        newest[rest] = found
                break
        return newest

    # ----- answers ------------------------------------------------------------------
    def prefetch(self, tasks: Iterable[Any]) -> None:
        """Decide completion for many tasks with few queries; answers are single use."""
        by_experiment: dict[str, list[TrackedTask]] = defaultdict(list)
        seen: set[str] = set()
        with self._lock:
            self._forget_inherited()
            for task in tasks:
                if not is_tracked(task) or task.task_id in seen:
                    continue
                seen.add(task.task_id)
                if not self._recently_answered((task.get_experiment_name(), task.identity)):
                    by_experiment[task.get_experiment_name()].append(task)
        found: dict[Key, RunRecord | None] = {}
        asked_ms = epoch_ms()
        for name, group in by_experiment.items():
            exp_id = self._experiment(name)
            if exp_id is None:
                found.update(((name, t.identity), None) for t in group)
                continue
            # Runs finished by this process, and chosen runs, are fetched by id (IN works
            # on run ids), not found by scanning the whole experiment; a deleted one is
            # looked up as usual.
            with self._lock:
                mine = {
                    t.identity: run_id
                    for t in group
                    if (
                        run_id := self._finished_here.get((name, t.identity))
                        or self.chosen.get(t.identity)
                    )
                }
            fetched = {
                r.info.run_id: r
                for r in (self.store.fetch_finished(exp_id, list(mine.values())) if mine else [])
                if self.counts(r)
            }
            known = {identity for identity, run_id in mine.items() if run_id in fetched}
            found.update(((name, identity), fetched[mine[identity]]) for identity in known)
            identities = {t.identity for t in group} - known
            if not identities:
                continue
            if len(identities) < SCAN_THRESHOLD:
                for identity in identities:
                    found[(name, identity)] = self.query(exp_id, identity)
            else:
                runs = self.scan(exp_id, identities)
                for identity in identities:
                    found[(name, identity)] = runs.get(identity)
        now = time.monotonic()
        with self._lock:
            self._answers.update({key: (run, now, asked_ms) for key, run in found.items()})

    def _recently_answered(self, key: Key) -> bool:
        """A fresh "complete" answer is waiting, or a "not complete" one was given less than
        RECENT_S ago. A waiting "not complete" is asked again: Luigi may never consume it
        (it asks a task named by several `deps()` lists once), and it would age."""
        if self._fresh_positive(key) is not None:
            return True
        given = self._given_negative.get(key)
        return given is not None and time.monotonic() - given[0] < RECENT_S

    def _fresh_positive(self, key: Key) -> RunRecord | None:
        entry = self._answers.get(key)
        if (
            entry is not None
            and entry[0] is not None
            and time.monotonic() - entry[1] < RECENT_S
            and self.counts(entry[0])
        ):
            return entry[0]
        return None

    def find_finished_run(self, task: TrackedTask, fresh: bool = False) -> RunRecord | None:
        """The FINISHED run that makes `task` complete, or None (see the freshness rule)."""
        key = (task.get_experiment_name(), task.identity)
        if not fresh:
            with self._lock:
                self._forget_inherited()
                run = self._fresh_positive(key)
                if run is not None:
                    return run
                entry = self._answers.pop(key, None)
                if (
                    entry is not None
                    and entry[0] is None
                    and time.monotonic() - entry[1] < RECENT_S
                ):  # a single-use "not complete", recent enough to describe the work
                    self._given_negative[key] = (entry[1], entry[2])
                    return None
        asked_ms = epoch_ms()
        exp_id = self._experiment(task.get_experiment_name())
        run = None if exp_id is None else self.query(exp_id, task.identity)
        with self._lock:
            if run is not None:
                self._answers[key] = (run, time.monotonic(), asked_ms)
            else:
                self._given_negative[key] = (time.monotonic(), asked_ms)
        return run

    def negative_answer_ms(self, task: TrackedTask) -> int | None:
        """When the store was asked for the "not complete" answer `task` was scheduled on."""
        with self._lock:
            given = self._given_negative.get((task.get_experiment_name(), task.identity))
        return given[1] if given else None

    def note_complete(
        self,
        task: TrackedTask,
        run_id: str,
        run: RunRecord | None = None,
        read_at: float | None = None,
    ) -> None:
        """`task` just got FINISHED run `run_id` here (`run`: as read, when reused, at
        `read_at`, monotonic, default now): its "not complete" answer is void."""
        key = (task.get_experiment_name(), task.identity)
        # A run this process wrote whole (a tracking server's store keeps it), or one just
        # read to be reused, is the fresh "complete" answer: downstream tasks asking
        # within RECENT_S (Luigi's check before running one) need no lookup.
        written = getattr(self.store, "written_run", None)
        if run is None and written is not None:
            run = written(run_id)
        with self._lock:
            self._given_negative.pop(key, None)
            self._answers.pop(key, None)
            self._finished_here[key] = run_id
            if run is not None and run.info.status == FINISHED and self.counts(run):
                # Dated when it was read: a "complete" answer is kept RECENT_S from then.
                now = time.monotonic()
                read = now if read_at is None else read_at
                self._answers[key] = (run, read, epoch_ms() - int((now - read) * 1000))

    def oldest_negative_ms(self) -> int | None:
        """When the store was asked for the oldest "not complete" answer given out."""
        with self._lock:
            return min((ms for _, ms in self._given_negative.values()), default=None)

    def known_complete(self, task: TrackedTask) -> bool:
        """A fresh "complete" answer is at hand (no query)."""
        with self._lock:
            return self._fresh_positive((task.get_experiment_name(), task.identity)) is not None
