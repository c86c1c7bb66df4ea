"""A task another worker holds, set aside while this build's worker does other work.

Several clients build one graph with Luigi's local scheduler (no luigid) against one
store. A task whose identity another worker's live run holds (its lease, see `claim`)
would block this client's worker in the lease wait while other tasks of the graph are
ready. Instead the task's `run()` yields a `HeldElsewhere` as a Luigi dynamic
dependency: Luigi sets the task aside and runs the ready tasks first (its local
scheduler ranks the wait after every task of equal priority, see `luigi_compat`), then
the wait itself, which ends once no live run holds the identity; then it runs the task
again, which reuses the holder's FINISHED run (or claims the task if the holder failed
or died).

`HeldElsewhere` is Luigi's only: it has no run and no event, and build results, `plan`
and summaries never name it (they know the graph walked before Luigi started).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import luigi

from luigiflow._engine import interrupts, luigi_compat
from luigiflow._engine import session as _session
from luigiflow._engine.protocol import SESSION


class HeldElsewhere(luigi.Task):
    """A wait for run `holder` of `identity` in `experiment_id` (or whichever live run of
    the identity follows it) to end; complete once this process has waited."""

    task_namespace = "_luigiflow"  # internal: no family a user defines
    experiment_id = luigi.Parameter()
    identity = luigi.Parameter()
    holder = luigi.Parameter()
    waiting = luigi.Parameter()  # the task_id of the task set aside: failures are its

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The build's session goes with the wait (pickled, into a worker process started
        # by forkserver or spawn): its failure is the build's to report.
        self.__dict__[SESSION] = _session.current()

    def complete(self) -> bool:
        # Never asks the store: Luigi asks twice in a row when the task is yielded, and
        # the wait itself ends after one look when the holder has ended meanwhile.
        return bool(self.__dict__.get("_waited"))

    def run(self) -> None:
        # In a worker process, as a task's execution: gone with its build, and an
        # interrupt ends it without the traceback multiprocessing prints.
        in_worker = luigi_compat.in_worker_process()
        if in_worker:
            interrupts.die_with_parent()
        session = _session.of(self)
        try:
            with interrupts.task_body(in_worker):
                settled = session.claim.settle(self.experiment_id, self.identity, None, rested=True)
        except Exception as exc:
            # Reported as the waiting task's failure: the build names tasks of its graph.
            session.record_failure(self.waiting, exc)
            raise
        # The task runs again next, in this process when Luigi runs tasks in it: it
        # reuses the run found here without asking again.
        session.recheck.wait_ended(self.experiment_id, self.identity, settled.finished)
        self.__dict__["_waited"] = True


assert HeldElsewhere.get_task_family() == luigi_compat.HELD_FAMILY


def set_aside(
    experiment_id: str, identity: str, holder: str, task_id: str, then: Callable[[], object]
) -> Iterator[luigi.Task]:
    """What a task's `run()` returns to wait for another worker's run `holder` without
    blocking: Luigi runs the wait as a dependency, then the task again. (`then` runs
    only if Luigi finds the wait complete at once: an instance that has waited already.)"""
    yield HeldElsewhere(
        experiment_id=experiment_id, identity=identity, holder=holder, waiting=task_id
    )
    then()
