"""Tasks for the execution-trust tests: workers that get killed, tasks that misbehave,
and an injectable delay between luigiflow's last check and its `create_run`.

`EXEC_CREATE_DELAY_S` (read here, in the test module, never by luigiflow) makes every
run creation in a process that imports this module wait first: the widest window two
processes can have between "nobody holds this task" and "I hold it". It delays the two
places a run is created: luigiflow's own SQL writer (the embedded store) and its store
over MLflow's client (a server, or the fallback).

mlflow is imported only where a task needs it: these tasks stand for plain user code, and
a build that never imports mlflow starts seconds sooner (every test here is a process).
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import luigi

import luigiflow as lf
from luigiflow._store.mlflow_store import MlflowStore
from luigiflow._store.sqlite_writes import SqliteWriter
from tests.dags import Fan, Gather, Source  # noqa: F401  (re-exported for --module)

_delay = float(os.environ.get("EXEC_CREATE_DELAY_S", "0") or 0)


def _delayed(create_run: Callable[..., Any]) -> Callable[..., Any]:
    def slow_create_run(*args: Any, **kwargs: Any) -> Any:
        time.sleep(_delay)
        return create_run(*args, **kwargs)

    return slow_create_run


if _delay:
    # The SQLite store's direct writes never reach MlflowStore.create_run, and its
    # fallback reaches only that one: each creation waits once.
    SqliteWriter.create_run = _delayed(SqliteWriter.create_run)  # type: ignore[method-assign]
    MlflowStore.create_run = _delayed(MlflowStore.create_run)  # type: ignore[method-assign]


def _ledger(name: str) -> None:
    ledger = os.environ.get("LEDGER")
    if ledger:
        with open(ledger, "a", encoding="utf-8") as f:
            f.write(name + "\n")


class Napper(lf.MlflowTask):
    """Writes its pid to `<markers>/<name>` once running, then sleeps: a target for signals."""

    artifacts = {"out": "out.json"}
    name = luigi.Parameter()
    markers = luigi.Parameter(significant=False)
    seconds = luigi.FloatParameter(default=120.0, significant=False)

    def run_task(self) -> None:
        _ledger(f"Napper({self.name})")
        folder = pathlib.Path(self.markers)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{self.name}.tmp").write_text(str(os.getpid()))
        os.replace(folder / f"{self.name}.tmp", folder / self.name)
        time.sleep(self.seconds)
        self.save({"out": {"name": self.name}})


class Nappers(lf.MlflowTask):
    """Two Nappers side by side: with --workers 2 both run at once, in two children."""

    artifacts = {"out": "out.json"}
    markers = luigi.Parameter(significant=False)
    seconds = luigi.FloatParameter(default=120.0, significant=False)

    def requires(self) -> dict[str, luigi.Task]:
        return {
            n: Napper(name=n, markers=self.markers, seconds=self.seconds) for n in ("left", "right")
        }

    def run_task(self) -> None:
        self.save({"out": {"ok": True}})


class EndsOwnRun(lf.MlflowTask):
    """Ends the active MLflow run itself (as some user code does), then raises."""

    artifacts = {"out": "out.json"}
    attempt = luigi.Parameter(default="a")

    def run_task(self) -> None:
        import mlflow

        _ledger("EndsOwnRun")
        mlflow.end_run()
        if os.environ.get("ENDS_OWN_RUN_OK") != "1":
            raise RuntimeError("failed after ending its own run")
        self.save({"out": {"ok": True}})


class Quick(lf.MlflowTask):
    artifacts = {"out": "out.json"}
    n = luigi.IntParameter(default=1)

    def run_task(self) -> None:
        _ledger(f"Quick({self.n})")
        self.save({"out": {"n": self.n}})


class OnQuick(lf.MlflowTask):
    artifacts = {"out": "out.json"}
    n = luigi.IntParameter(default=1)

    def requires(self) -> dict[str, luigi.Task]:
        return {"quick": Quick(n=self.n)}

    def run_task(self) -> None:
        _ledger(f"OnQuick({self.n})")
        self.save({"out": {"n": self.load("quick")["n"] + 1}})
