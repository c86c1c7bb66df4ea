"""Per-build state in one object: completion answers, recheck watches, forced
identities and the event sink.

A build makes a `Session`, attaches it to every task of its graph and activates it.
Luigi may run tasks in forked children (they inherit it), or in processes started by
forkserver or spawn, which receive each task pickled: the session travels inside the
task and is rebuilt there with its store, sink and forced identities (answers and
watches start empty, as they would in any new worker). Outside a build, a task uses
the process's default session for the current tracking store.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from luigiflow._engine.claim import Claim
from luigiflow._engine.completion import Completion
from luigiflow._engine.events import EventSink
from luigiflow._engine.protocol import SESSION
from luigiflow._engine.recheck import Recheck
from luigiflow._store import client
from luigiflow._store import current as _current
from luigiflow._store.port import RunStore


class Session:
    """The state of one build (or of a process between builds)."""

    def __init__(
        self, store: RunStore | None = None, sink: EventSink | None = None, build: bool = True
    ) -> None:
        self.store: RunStore = store if store is not None else _current.get_store()
        self.sink = sink
        # A process's session between builds lasts for hours: "made during this build"
        # (see Completion.new_in_build) would not mean "holds no older run" there.
        self.completion = Completion(self.store, build=build)
        self.claim = Claim(self.store, self.completion.counts)
        self.recheck = Recheck(self.store, self.completion, self.claim.sightings)
        self.pid = os.getpid()
        # Set a task another worker holds aside as a Luigi dynamic dependency (see held)
        # instead of waiting for it: with Luigi's local scheduler only, where the other
        # clients' order and ours differ; luigid hands a task to one worker already.
        self.set_aside_held = False
        self._experiments: dict[str, str] = {}
        # (experiment id, family) -> the encoded params of its runs, read once (run_names)
        self.family_params: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def experiment_id(self, name: str, fresh: bool = False) -> str:
        """The experiment runs of `name` are created in, resolved (or made) once per build:
        each resolution is a request to a tracking server. `fresh` resolves it again (a
        create found it deleted meanwhile: its runs go on in a successor)."""
        exp_id = None if fresh else self._experiments.get(name)
        if exp_id is None:
            # The completion question of this build resolved it moments ago (a create in
            # an experiment deleted since fails and comes back `fresh`): no second lookup;
            # where it found none, a create is tried first.
            known = "" if fresh else self.completion.resolved.get(name, "")
            exp_id = known or self.store.experiment_id(name, create=True, absent=known is None)
            assert exp_id is not None
            self._experiments[name] = exp_id
        return exp_id

    def record(self, kind: str, task_id: str, run_id: str) -> None:
        """A task event (`started`, `executed`, `reused`) for whoever watches the build."""
        if self.sink is not None:
            self.sink.record(kind, task_id, run_id)

    def record_failure(self, task_id: str, exc: BaseException, run_id: str = "") -> None:
        if self.sink is not None:
            self.sink.record_failure(task_id, exc, run_id)

    # Pickled with a task into a spawned worker: caches and locks stay behind.
    def __getstate__(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "sink": self.sink,
            "not_before": dict(self.completion.not_before),
            "chosen": dict(self.completion.chosen),
            "set_aside_held": self.set_aside_held,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.store = state["store"]
        self.sink = state["sink"]
        self.completion = Completion(self.store, state["not_before"], state["chosen"])
        self.claim = Claim(self.store, self.completion.counts)
        self.recheck = Recheck(self.store, self.completion, self.claim.sightings)
        self.pid = os.getpid()
        self.set_aside_held = state.get("set_aside_held", False)
        self._experiments = {}
        self.family_params = {}


_active: Session | None = None
_default: Session | None = None


def current() -> Session:
    """The active build's session, else this process's session for the current store."""
    global _default
    if _active is not None:
        return _active
    uri = client.tracking_uri()
    if _default is None or _default.store.uri != uri or _default.pid != os.getpid():
        _default = Session(_current.get_store(uri), build=False)
    return _default


def of(task: Any) -> Session:
    """The session a task belongs to (its build's, else the current one)."""
    session = task.__dict__.get(SESSION)
    return session if isinstance(session, Session) else current()


@contextlib.contextmanager
def activated(session: Session, tasks: list[Any]) -> Iterator[Session]:
    """Make `session` the active one and attach it to `tasks` for the build's length."""
    global _active
    previous = _active
    _active = session
    for task in tasks:
        task.__dict__[SESSION] = session
    try:
        yield session
    finally:
        for task in tasks:
            if task.__dict__.get(SESSION) is session:
                del task.__dict__[SESSION]
        _active = previous
