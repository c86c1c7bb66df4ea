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

import luigi

from luigiflow._engine import luigi_compat
from luigiflow._engine import session as _session


class HeldElsewhere(luigi.Task):
    """Complete once no other worker's live run holds `identity` in `experiment_id`."""

    task_namespace = "_luigiflow"  # internal: no family a user defines
    experiment_id = luigi.Parameter()
    identity = luigi.Parameter()
    waiting = luigi.Parameter()  # the task_id of the task set aside: failures are its

    def complete(self) -> bool:
        return not _session.of(self).claim.held(self.experiment_id, self.identity)

    def run(self) -> None:
        session = _session.of(self)
        try:
            session.claim.settle(self.experiment_id, self.identity, None)
        except Exception as exc:
            # Reported as the waiting task's failure: the build names tasks of its graph.
            session.record_failure(self.waiting, exc)
            raise


assert HeldElsewhere.get_task_family() == luigi_compat.HELD_FAMILY


def set_aside(
    experiment_id: str, identity: str, task_id: str, then: Callable[[], object]
) -> Iterator[luigi.Task]:
    """What a task's `run()` returns to wait for another worker's run without blocking:
    Luigi runs the wait as a dependency; `then` runs once the holder ended (at once,
    when it already had by the time Luigi asks)."""
    yield HeldElsewhere(experiment_id=experiment_id, identity=identity, waiting=task_id)
    then()
