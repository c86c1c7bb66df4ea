"""What each task did during a build, reported across Luigi's worker processes.

With `workers > 1` Luigi runs every task in a forked child, so in-memory lists in the
parent never see what happened. While `luigiflow.build` runs, each task appends one
JSON line to a file in the build's folder (and pickles its exception on failure);
the parent tails the folder for live progress and reads it when Luigi returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

from luigiflow._core import failures
from luigiflow._errors import TaskFailedError


@dataclass(frozen=True)
class TaskEvent:
    """One task event: `started`, `executed` (ran now), `reused` (found FINISHED when about
    to run) or `present` (found complete while scheduling; its upstream is not visited)."""

    kind: str
    task_id: str
    run_id: str


class EventSink:
    """The build's event folder: every process of the build appends to it."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def record(self, kind: str, task_id: str, run_id: str) -> None:
        line = json.dumps({"kind": kind, "task_id": task_id, "run_id": run_id}) + "\n"
        # O_APPEND writes of one short line are atomic, so workers never interleave.
        path = os.path.join(self.folder, f"events-{os.getpid()}.jsonl")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        except FileNotFoundError:
            return  # the build is over (its folder removed): nobody is listening
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def record_failure(self, task_id: str, exc: BaseException, run_id: str = "") -> None:
        """The exception (pickled), and which run failed where in the user's code."""
        detail = {"task_id": task_id, "run_id": run_id, "where": failures.user_location(exc)}
        with contextlib.suppress(FileNotFoundError):
            path = os.path.join(self.folder, f"failed-{uuid.uuid4().hex}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(detail, f)
        try:
            payload = pickle.dumps((task_id, exc))
            pickle.loads(payload)  # some exceptions pickle but cannot be rebuilt
        except Exception:
            text = "".join(traceback.format_exception(exc)).strip()
            failure = TaskFailedError(f"{type(exc).__name__}: {exc}\n{text}")
            payload = pickle.dumps((task_id, failure))
        try:
            with open(os.path.join(self.folder, f"failure-{uuid.uuid4().hex}.pkl"), "wb") as f:
                f.write(payload)
        except FileNotFoundError:
            return


class Tail:
    """Read events as they are appended (live progress while a build runs)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.offsets: dict[str, int] = {}

    def poll(self) -> list[TaskEvent]:
        fresh: list[TaskEvent] = []
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            return fresh
        for name in names:
            if not name.startswith("events-"):
                continue
            path = os.path.join(self.folder, name)
            with open(path, "rb") as f:
                f.seek(self.offsets.get(name, 0))
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]  # never a half-written line
            self.offsets[name] = self.offsets.get(name, 0) + len(complete)
            for line in complete.decode("utf-8").splitlines():
                item = json.loads(line)
                fresh.append(TaskEvent(item["kind"], item["task_id"], item["run_id"]))
        return fresh


def collect(folder: str) -> tuple[list[TaskEvent], dict[str, BaseException]]:
    """Every event and failure written into `folder` by any process."""
    events: list[TaskEvent] = []
    failures: dict[str, BaseException] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith("events-"):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    data: dict[str, Any] = json.loads(line)
                    events.append(TaskEvent(data["kind"], data["task_id"], data["run_id"]))
        elif name.startswith("failure-"):
            with open(path, "rb") as f:
                task_id, exc = pickle.load(f)
            failures.setdefault(task_id, exc)
    return events, failures


@dataclass(frozen=True)
class FailureDetail:
    """The FAILED run of a task ('' when it failed before its run existed) and the
    `file:line` in the user's code where it failed ('' when unknown)."""

    run_id: str
    where: str


def failure_details(folder: str) -> dict[str, FailureDetail]:
    """task id -> what is known of its failure; a record naming the run wins."""
    details: dict[str, FailureDetail] = {}
    for name in sorted(os.listdir(folder)):
        if not name.startswith("failed-"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            data = json.load(f)
        known = details.get(data["task_id"])
        if known is None or (data["run_id"] and not known.run_id):
            details[data["task_id"]] = FailureDetail(data["run_id"], data["where"])
    return details
