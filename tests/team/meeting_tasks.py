"""Tasks for tests/team/test_clients_share_work.py: `Meeting`s that finish only together.

Each `Meeting` body leaves a file named for itself and its process in the folder named
by MEETING_ROOM, then waits (bounded by BOUND_S) until two bodies are in the room: two
clients that build `Meetings` get through only if each executes one `Meeting` at the
same time. Read here, in the test module, never by luigiflow.
"""

from __future__ import annotations

import os
import pathlib
import time

import luigi

import luigiflow as lf
from tests.dags import note

BOUND_S = 60.0
QUORUM = 2


class Meeting(lf.MlflowTask):
    artifacts = {"n": "n.json"}
    index = luigi.IntParameter()

    def run_task(self) -> None:
        note(f"Meeting({self.index})")
        room = pathlib.Path(os.environ["MEETING_ROOM"])
        (room / f"{self.index}-{os.getpid()}").touch()
        deadline = time.monotonic() + BOUND_S
        while len(list(room.iterdir())) < QUORUM:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self!r} met nobody within {BOUND_S} s")
            time.sleep(0.05)
        self.save({"n": self.index})


class Meetings(lf.MlflowTask):
    artifacts = {"total": "total.json"}

    def requires(self) -> dict[str, luigi.Task]:
        return {f"m{i}": Meeting(index=i) for i in range(QUORUM)}

    def run_task(self) -> None:
        note("Meetings")
        self.save({"total": sum(self.load(f"m{i}") for i in range(QUORUM))})
