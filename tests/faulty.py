"""A task that takes the tracking server down in the middle of its run."""

from __future__ import annotations

import os
import signal
import time

import luigiflow as lf


class KillsServer(lf.MlflowTask):
    artifacts = {"big": "big.json"}

    def run_task(self) -> None:
        pgid = os.environ.get("KILL_PGID")
        if pgid:
            os.killpg(int(pgid), signal.SIGKILL)
            time.sleep(1)
        self.save({"big": list(range(1000))}, metrics={"n": 1000})
