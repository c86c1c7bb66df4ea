"""Tiny task graphs used across the tests, each named for what it shows.

Bodies append to a ledger file (LEDGER env var) so tests can count executions
across processes without trusting luigiflow's own bookkeeping.
"""

from __future__ import annotations

import os
import time

import luigi

import luigiflow as lf


def note(name: str) -> None:
    time.sleep(float(os.environ.get("TASK_PAUSE", "0")))  # lets concurrent builds overlap
    ledger = os.environ.get("LEDGER")
    if ledger:
        with open(ledger, "a", encoding="utf-8") as f:
            f.write(name + "\n")


class Source(lf.MlflowTask):
    """Root of the chain Source -> Middle -> Leaf."""

    artifacts = {"numbers": "numbers.json"}
    size = luigi.IntParameter(default=3)

    def run_task(self) -> None:
        note(f"Source({self.size})")
        self.save({"numbers": list(range(self.size))}, metrics={"size": self.size})


class Middle(lf.MlflowTask):
    artifacts = {"doubled": "doubled.pkl"}
    size = luigi.IntParameter(default=3)
    factor = luigi.IntParameter(default=2)

    def requires(self) -> dict[str, luigi.Task]:
        return {"source": Source(size=self.size)}

    def run_task(self) -> None:
        note(f"Middle({self.size},{self.factor})")
        numbers = self.load("source")
        self.save({"doubled": [n * self.factor for n in numbers]})


class Leaf(lf.MlflowTask):
    artifacts = {"total": "total.txt"}
    size = luigi.IntParameter(default=3)
    factor = luigi.IntParameter(default=2)
    label = luigi.Parameter(default="x")

    def requires(self) -> dict[str, luigi.Task]:
        return {"middle": Middle(size=self.size, factor=self.factor)}

    def run_task(self) -> None:
        note(f"Leaf({self.size},{self.factor},{self.label})")
        total = sum(self.load("middle"))
        self.save({"total": str(total)}, metrics={"total": total})


class Flaky(lf.MlflowTask):
    """Fails while the file named by `gate` exists."""

    artifacts = {"out": "out.json"}
    gate = luigi.Parameter()

    def run_task(self) -> None:
        note("Flaky")
        self.log_metric("before_failure", 1.0)
        if os.path.exists(self.gate):
            raise RuntimeError(f"gate {self.gate} is closed")
        self.save({"out": {"ok": True}})


class Sleeper(lf.MlflowTask):
    """Writes `marker` once running, then sleeps: a target for SIGKILL."""

    artifacts = {"out": "out.json"}
    marker = luigi.Parameter(significant=False)
    seconds = luigi.FloatParameter(default=60.0, significant=False)  # same task, any wait

    def run_task(self) -> None:
        note("Sleeper")
        with open(self.marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(self.seconds)
        self.save({"out": {"slept": self.seconds}})


class AnyValue(lf.MlflowTask):
    """A plain luigi.Parameter takes any encodable value."""

    artifacts = {"echo": "echo.json"}
    value = luigi.Parameter()
    note_only = luigi.Parameter(default="", significant=False)

    def run_task(self) -> None:
        self.save({"echo": {"value": self.value}})


class Fan(lf.MlflowTask):
    """One of many siblings under one Source."""

    artifacts = {"out": "out.json"}
    index = luigi.IntParameter()

    def requires(self) -> dict[str, luigi.Task]:
        return {"source": Source()}

    def run_task(self) -> None:
        note(f"Fan({self.index})")
        self.save({"out": {"index": self.index}})


class Gather(lf.MlflowTask):
    artifacts = {"sum": "sum.json"}
    width = luigi.IntParameter(default=6)

    def requires(self) -> dict[str, luigi.Task]:
        return {f"fan{i}": Fan(index=i) for i in range(self.width)}

    def run_task(self) -> None:
        note("Gather")
        total = sum(self.load(f"fan{i}")["index"] for i in range(self.width))
        self.save({"sum": total})
