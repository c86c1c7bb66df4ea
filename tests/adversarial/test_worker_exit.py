"""A task whose process exits before its run is recorded fails the build (issue 28 item 6).

Task code or a native library calling `_exit(0)` mid-task: with `--workers 2` the build
waited for the task's result forever; with `--workers 1` (the task runs in the build's
own process) `luigiflow run` exited 0, printed nothing and recorded nothing.
"""

from __future__ import annotations

import pytest

from tests.conftest import luigiflow_cli, runs_of


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "workers", "says"),
    [
        ("os", "1", "TaskExitedError: ExitsMidTask(how=os) called os._exit(0)"),
        ("os", "2", "TaskExitedError: ExitsMidTask(how=os) called os._exit(0)"),
        ("native", "2", "WorkerDiedError: ExitsMidTask(how=native): its worker process died"),
    ],
)
def test_a_task_that_exits_mid_run_is_a_failed_build(
    store: str, client, tmp_path, how: str, workers: str, says: str
) -> None:
    args = ["run", "--module", "tests.adversarial.exit_tasks", "ExitsMidTask", "--how", how]
    out = luigiflow_cli(*args, "--workers", workers, cwd=tmp_path, check=False, timeout=180)
    assert out.returncode != 0, out.stdout + out.stderr
    assert says in out.stderr, out.stderr
    runs = runs_of(client, "ExitsMidTask")
    assert runs and {r.info.status for r in runs} <= {"FAILED", "KILLED"}
