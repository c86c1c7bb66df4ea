"""A live progress display for one build, fed by the build's task events.

It subscribes like any other listener of the build's event sink; the build itself
renders nothing. Shown on a terminal by default (`lf.build(progress=False)` turns it
off), never when stderr is a pipe or a file.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import luigi
from rich.console import Console
from rich.live import Live
from rich.text import Text

from luigiflow._core.labels import task_label


def _seconds(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{s // 60:.0f}m{s % 60:02.0f}s"


class ProgressDisplay:
    """done/total, the tasks running now, elapsed time and an estimate, redrawn in place."""

    def __init__(self, tasks: Iterable[Any], console: Console | None = None) -> None:
        self.tasks = {t.task_id: t for t in tasks}
        self.console = console or Console(stderr=True)
        self.done: set[str] = set()
        self.running: dict[str, float] = {}
        self.durations: list[float] = []
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.live = Live(
            self._render(),
            console=self.console,
            refresh_per_second=4,
            transient=True,
            get_renderable=self._render,
        )

    def __enter__(self) -> ProgressDisplay:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def __call__(self, event: Any) -> None:
        with self.lock:
            if event.kind == "started":
                self.running[event.task_id] = time.monotonic()
                return
            began = self.running.pop(event.task_id, None)
            if began is not None and event.kind == "executed":
                self.durations.append(time.monotonic() - began)
            self._mark_done(event.task_id, with_upstream=event.kind == "present")

    def _mark_done(self, task_id: str, with_upstream: bool) -> None:
        # A task found complete is never asked about its upstream: they count as done.
        stack = [task_id]
        while stack:
            current = stack.pop()
            if current in self.done:
                continue
            self.done.add(current)
            task = self.tasks.get(current)
            if with_upstream and task is not None:
                stack.extend(d.task_id for d in _deps(task))

    def _render(self) -> Text:
        with self.lock:
            total = len(self.tasks)
            done = len(self.done & self.tasks.keys())
            elapsed = time.monotonic() - self.started
            now = time.monotonic()
            running = [
                f"{task_label(self.tasks[i])} {_seconds(now - t)}"
                for i, t in sorted(self.running.items(), key=lambda kv: kv[1])
                if i in self.tasks
            ]
            line = f"{done}/{total} done · elapsed {_seconds(elapsed)}"
            if self.durations and done < total:
                mean = sum(self.durations) / len(self.durations)
                left = max(mean * (total - done) / max(len(self.running), 1), 1.0)
                line += f" · about {_seconds(left)} left"
        text = Text(line)
        for item in running:
            text.append(f"\n  running {item}")
        return text


def _deps(task: Any) -> list[Any]:
    requires = getattr(task, "requires_dict", None)
    if requires is not None:
        return list(requires().values())
    return list(luigi.task.flatten(task.requires()))


def wants_display(progress: bool | None) -> bool:
    """Show progress when asked, or by default when stderr is a terminal."""
    if progress is not None:
        return progress
    return sys.stderr.isatty()
