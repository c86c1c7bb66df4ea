"""Tasks other clients are building: wait for them, accept them, report them.

Several machines start the same `luigiflow run`. Under `luigid` a client's Luigi worker
leaves as soon as what remains of its graph is running on another worker, and reports
a task it offered after another worker had just finished it as "not run"; without
`luigid` the other worker's live RUNNING run is a lease the engine waits on. Neither is
a failure: the build waits (bounded by that run's lease, saying for which run) and
accepts every root that has a FINISHED run afterwards, whoever made it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from luigiflow import _settings
from luigiflow._engine import claim
from luigiflow._engine import session as _session
from luigiflow._engine.protocol import bind_run, is_tracked
from luigiflow._store import liveness, schema
from luigiflow._store.records import RunRecord

# Between two rounds of Luigi when no run of a missing root is live yet (another
# worker has it from luigid but has not created its run).
IDLE_ROUND_S = 1.0


def luigi_settled(luigi_result: Any) -> bool:
    """Luigi ended without a failure: success, or tasks it left to other workers."""
    from luigi.execution_summary import LuigiStatusCode

    return luigi_result.status in (
        LuigiStatusCode.SUCCESS,
        LuigiStatusCode.SUCCESS_WITH_RETRY,
        LuigiStatusCode.NOT_RUN,
    )


def missing_roots(session: _session.Session, roots: list[Any]) -> list[Any]:
    """Roots without a FINISHED run, asked of the store now (another worker may have
    finished one a moment ago: no earlier answer counts)."""
    missing = []
    for root in roots:
        if not is_tracked(root):
            if not root.complete():
                missing.append(root)
            continue
        run = session.completion.find_finished_run(root, fresh=True)
        bind_run(root, run)
        if run is None:
            missing.append(root)
    return missing


class Waiting:
    """The waits of one build for roots other workers hold, bounded and said once each."""

    def __init__(self, session: _session.Session) -> None:
        self.session = session
        self.said: set[str] = set()
        # When a round last found a root held by a live run (or the build started): with
        # nothing held for a whole lease, asking Luigi again will not change anything.
        self.progress = time.monotonic()

    def worth_another_round(self) -> bool:
        return time.monotonic() - self.progress < _settings.stale_after()

    def wait_for(self, roots: list[Any]) -> bool:
        """Wait while another worker's live RUNNING run holds one of `roots`, until it
        ends; without such a run, a moment (its worker may not have created it yet).
        True when every root has a FINISHED run now (bound to it): Luigi need not be
        asked again."""
        built = 0
        for root in roots:
            if not is_tracked(root):
                continue
            exp_id = self.session.experiment_id(root.get_experiment_name())
            runs = self.session.store.runs_with_identity(exp_id, root.identity, claim.WINDOW)
            done = next(iter(self.session.claim.finished(runs)), None)
            holders = [] if done else self._holders(runs)
            if holders:
                self._say(root, holders[0])
                # The look above is the wait's first: its next look waits its turn.
                sighting = (time.monotonic(), holders[0])
                self.session.claim.sightings[(exp_id, root.identity)] = sighting
                done = self.session.claim.settle(
                    exp_id, root.identity, None, announce=False, rested=True
                ).finished
                self.progress = time.monotonic()
            if done is None:
                if not holders:
                    time.sleep(IDLE_ROUND_S)
                return False
            bind_run(root, done)
            built += 1
        return built == len(roots)

    def _holders(self, runs: list[RunRecord]) -> list[RunRecord]:
        me = liveness.worker_token()
        return sorted(
            (r for r in runs if claim.alive(r) and r.data.tags.get(schema.WORKER_TAG) != me),
            key=claim.order,
        )

    def _say(self, root: Any, run: RunRecord) -> None:
        if run.info.run_id in self.said:
            return
        self.said.add(run.info.run_id)
        worker = run.data.tags.get(schema.WORKER_TAG, "another worker")
        try:
            beat = float(run.data.tags[schema.HEARTBEAT_TAG])
            age = f", heartbeat {max(0.0, time.time() - beat):.0f} s ago"
        except (KeyError, ValueError):  # not beaten yet, or a tag someone else wrote
            age = ""
        print(
            f"luigiflow: waiting for {root!r}: run {run.info.run_id} of {worker} is "
            f"building it{age}",
            file=sys.stderr,
            flush=True,
        )


def by_other_workers(tasks: list[Any], runs: dict[Any, RunRecord], since_ms: int) -> list[Any]:
    """Of `tasks` (reused by a build), those whose run another worker finished during it."""
    return [
        t
        for t in tasks
        if t in runs
        and (runs[t].info.end_time or 0) >= since_ms
        and schema.CUTOFF_TAG not in runs[t].data.tags  # cut off here: see _engine.cutoff
    ]
