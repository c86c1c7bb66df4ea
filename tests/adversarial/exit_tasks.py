"""Tasks that end their own process mid-task (for test_worker_exit.py)."""

from __future__ import annotations

import ctypes
import os

import luigi

import luigiflow as lf


class ExitsMidTask(lf.MlflowTask):
    """Ends its process with code 0 halfway through: `os._exit(0)`, or libc's `_exit(0)`
    as a native library would."""

    artifacts = {"out": "out.json"}
    how = luigi.ChoiceParameter(choices=["os", "native"], default="os")

    def run_task(self) -> None:
        if self.how == "native":
            ctypes.CDLL(None)._exit(0)
        os._exit(0)
