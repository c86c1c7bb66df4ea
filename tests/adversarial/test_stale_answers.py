"""A "not complete" answer is never older than the work it describes (issue 29 item 1).

Luigi asks `complete()` of a shared upstream once per build, but each `deps()` list
naming it prefetches an answer again; an answer nobody consumed used to wait forever,
and every forked worker inherited it: the downstream tasks then failed with
"Unfulfilled dependency at run time" although their upstream had FINISHED.
"""

from __future__ import annotations

import sys
import time

import luigi
import pytest

import luigiflow as lf

SLOW_REQUIRES_S = 3.0  # longer than completion.RECENT_S: answers age between looks


def _luigi_is_scheduling() -> bool:
    """Called from Luigi's worker while it adds tasks (not while walking the graph for
    identities, nor in the run-time dependency check)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_add" and frame.f_code.co_filename.endswith("worker.py"):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class Shared(lf.MlflowTask):
    artifacts = {"value": "value.json"}

    def run_task(self) -> None:
        self.save({"value": 1})


class SlowRequires(lf.MlflowTask):
    """A task whose requires() takes 3 s while Luigi schedules (e.g. it lists files)."""

    artifacts = {"value": "value.json"}
    side = luigi.Parameter()

    def requires(self) -> dict[str, luigi.Task]:
        if _luigi_is_scheduling():  # the rest of the test stays quick
            time.sleep(SLOW_REQUIRES_S)
        return {"shared": Shared()}

    def run_task(self) -> None:
        self.save({"value": self.load("shared") + 1})


class Both(lf.MlflowTask):
    artifacts = {"value": "value.json"}

    def requires(self) -> dict[str, luigi.Task]:
        return {"left": SlowRequires(side="left"), "right": SlowRequires(side="right")}

    def run_task(self) -> None:
        self.save({"value": self.load("left") + self.load("right")})


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_slow_requires_never_leaves_a_stale_not_complete_answer(store: str, workers: int) -> None:
    result = lf.build([Both()], workers=workers)
    assert set(result.executed) == {
        Shared(),
        SlowRequires(side="left"),
        SlowRequires(side="right"),
        Both(),
    }
    assert Both().load_output("value") == 4
