"""Tasks for the team tests: a root another client holds, and a hook that delays this
client's scheduling of it until `luigid` has it DONE.

`TEAM_RELEASE` (a path) names the file `Held`'s body waits for; `TEAM_HOLD_SCHEDULING`
set to a scheduler URL makes this process, while Luigi schedules `Held`, create that
file and wait until the scheduler reports `Held` DONE: the moment a worker offers a task
another worker has just finished (Luigi then reports it "not run"). Read here, in the
test module, never by luigiflow.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
import urllib.parse
import urllib.request

import luigi

import luigiflow as lf
from tests.dags import note

BOUND_S = 120.0


def _wait_for(what: str, condition) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {BOUND_S} s")
        time.sleep(0.05)


class Upstream(lf.MlflowTask):
    artifacts = {"n": "n.json"}

    def run_task(self) -> None:
        note("Upstream")
        self.save({"n": 1})


class Held(lf.MlflowTask):
    """Runs until the file named by TEAM_RELEASE exists; writes `<release>.running` first."""

    artifacts = {"n": "n.json"}

    def requires(self) -> dict[str, luigi.Task]:
        return {"up": Upstream()}

    def run_task(self) -> None:
        note("Held")
        release = pathlib.Path(os.environ["TEAM_RELEASE"])
        release.with_suffix(".running").write_text(str(os.getpid()))
        _wait_for("release", release.exists)
        self.save({"n": self.load("up") + 1})


class AfterHeld(lf.MlflowTask):
    """Downstream of Held: a client building it keeps Luigi's worker alive while Held is
    RUNNING, FAILED or PENDING in luigid."""

    artifacts = {"n": "n.json"}

    def requires(self) -> dict[str, luigi.Task]:
        return {"held": Held()}

    def run_task(self) -> None:
        note("AfterHeld")
        self.save({"n": self.load("held") + 1})


def _scheduler_says_done(url: str, family: str) -> bool:
    query = urllib.parse.urlencode({"data": json.dumps({"status": "DONE", "search": family})})
    with urllib.request.urlopen(f"{url}/api/task_list?{query}", timeout=10) as answer:
        return bool(json.load(answer)["response"])


_hold = os.environ.get("TEAM_HOLD_SCHEDULING")
if _hold:

    @Held.event_handler(luigi.Event.DEPENDENCY_DISCOVERED)
    def _release_and_wait(task: luigi.Task, dependency: luigi.Task) -> None:
        pathlib.Path(os.environ["TEAM_RELEASE"]).touch()
        _wait_for("Held DONE in luigid", lambda: _scheduler_says_done(str(_hold), "Held"))


# Called by Outaged's body (in-process builds, one worker): a test turns a fault on there.
BODY_HOOKS: list = []


class Outaged(lf.MlflowTask):
    """Its body calls BODY_HOOKS: the tracking server's outage starts mid-task."""

    artifacts = {"n": "n.json"}
    label = luigi.Parameter(default="a")

    def run_task(self) -> None:
        note(f"Outaged({self.label})")
        for hook in BODY_HOOKS:
            hook()
        self.save({"n": 1}, metrics={"m": 1.0})
