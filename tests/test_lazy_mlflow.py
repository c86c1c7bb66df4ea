"""A build that executes a plain task never imports mlflow; user code that does import it
inside run_task (fluent calls, autologging) still lands on the task's run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import luigiflow as lf
from tests.conftest import REPO, runs_of
from tests.dags import Leaf, Source

pytestmark = pytest.mark.slow

PLAIN = (
    "import sys\n"
    "import luigiflow as lf\n"
    "from tests.dags import Leaf\n"
    "result = lf.build([Leaf(label='changed')], log_level='CRITICAL')\n"
    "print(len(result.executed), 'mlflow' in sys.modules)\n"
)


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_one_changed_task_executes_without_importing_mlflow(client):
    lf.build([Leaf()])  # the chain exists; this process imported mlflow
    done = _python(PLAIN)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["1", "False"], done.stdout + done.stderr[-3000:]
    old, new = runs_of(client, "Leaf")
    assert new.info.status == "FINISHED"
    assert new.data.metrics == {"total": 6.0}
    assert Leaf(label="changed").load_output("total") == "6"
    # The tags MLflow's start_run adds are there as MLflow would have made them.
    for key in ("mlflow.user", "mlflow.source.type", "mlflow.source.name"):
        assert new.data.tags[key] == old.data.tags[key], key
    assert new.info.user_id == old.info.user_id
    assert lf.build([Leaf(label="changed")]).executed == []


def test_mlflow_imported_in_run_task_lands_on_the_tasks_run(client):
    from tests.fluent_tasks import LogsThroughMlflow

    lf.build([LogsThroughMlflow(label="first")])  # its experiment exists
    # mlflow is imported after heartbeats were written: luigiflow's heartbeat thread
    # must not have imported it (MLflow's active run is per thread).
    done = _python(
        "import sys\nimport luigiflow as lf\nfrom tests.fluent_tasks import LogsThroughMlflow\n"
        "assert 'mlflow' not in sys.modules\n"
        "lf.build([LogsThroughMlflow(label='late')], log_level='CRITICAL')\n"
        "import mlflow\nprint(mlflow.active_run())\n",
        AFTER_BEATS="2",
        LUIGIFLOW_HEARTBEAT_S="0.2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["None"]  # nothing left on MLflow's stack
    _first, run = runs_of(client, "LogsThroughMlflow")
    assert run.info.status == "FINISHED"
    seen = LogsThroughMlflow(label="late").load_output("seen")
    assert seen == {"active_run": run.info.run_id, "imported_before": False}
    assert run.data.metrics["live"] == 0.5
    assert run.data.params["fluent_param"] == "yes"
    assert run.data.tags["fluent_tag"] == "late"
    assert run.data.params["label"] == "late"  # and luigiflow's own records
    default = client.get_experiment_by_name("Default")
    assert client.search_runs([default.experiment_id]) == []  # no stray run of MLflow's own


def test_autologging_imported_in_run_task_lands_on_the_tasks_run(client):
    from tests.training import Autologged

    lf.build([Autologged(C=0.25)])  # its experiment exists: nothing else imports mlflow
    done = _python(
        "import sys\nimport luigiflow as lf\nfrom tests.training import Autologged\n"
        "assert 'mlflow' not in sys.modules\n"
        "lf.build([Autologged()], log_level='CRITICAL')\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _first, run = runs_of(client, "Autologged")
    assert run.info.status == "FINISHED"
    assert run.data.params["C"] == "0.5"  # the task's own value
    # The estimator's metrics, logged by autologging (its params clash with the task's
    # and are refused as a batch: see tests/test_training_loop.py).
    assert "training_accuracy_score" in run.data.metrics, run.data.metrics
    default = client.get_experiment_by_name("Default")
    assert client.search_runs([default.experiment_id]) == []


def test_live_metrics_are_logged_without_importing_mlflow(client):
    from tests.fluent_tasks import LogsLive

    lf.build([LogsLive(label="first")])  # its experiment exists
    done = _python(
        "import sys\nimport luigiflow as lf\nfrom tests.fluent_tasks import LogsLive\n"
        "lf.build([LogsLive(label='changed')], log_level='CRITICAL')\n"
        "print('mlflow' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False"]
    _first, run = runs_of(client, "LogsLive")
    history = client.get_metric_history(run.info.run_id, "loss")
    points = sorted((h.step, h.value) for h in history)
    assert points == [(0, 1.0), (1, 0.5), (2, 0.125), (2, 1 / 3)]  # live, and the saved one
    assert run.data.metrics["loss"] == 0.125  # the saved value is the one shown


def test_luigiflow_importing_mlflow_during_a_task_joins_its_run(client):
    """A checkpoint is uploaded through MLflow's client: its first use imports mlflow
    inside luigiflow's own client lookup, and the task's run joins MLflow's stack then
    (it once waited on that lookup's lock for ever)."""
    from tests.fluent_tasks import Checkpointed

    lf.build([Checkpointed(label="first")])  # its experiment exists
    done = _python(
        "import luigiflow as lf\nfrom tests.fluent_tasks import Checkpointed\n"
        "lf.build([Checkpointed(label='changed')], log_level='CRITICAL')\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _first, run = runs_of(client, "Checkpointed")
    assert run.info.status == "FINISHED"
    assert "luigiflow.checkpoint" in run.data.tags
    assert Checkpointed(label="changed").load_output("seen") == {"active_run": run.info.run_id}
    assert run.data.metrics["after_checkpoint"] == 1.0


def test_a_failing_task_ends_failed_when_luigiflow_imports_mlflow_for_it(client):
    """Storing the traceback imports mlflow inside luigiflow's own client lookup, under
    its lock: the run's join must not ask for that client again (it hung for ever)."""
    from tests.fluent_tasks import Breaks

    lf.build([Breaks(label="first")])  # its experiment exists
    done = _python(
        "import luigiflow as lf\nfrom tests.fluent_tasks import Breaks\n"
        "r = lf.build([Breaks(label='changed')], log_level='CRITICAL', raise_on_failure=False)\n"
        "print(r.success)\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False"]
    _first, run = runs_of(client, "Breaks")
    assert run.info.status == "FAILED"
    assert "broken on purpose" in run.data.tags["luigiflow.error"]


def test_a_task_of_a_new_experiment_executes_without_importing_mlflow(client):
    assert client.get_experiment_by_name("Source") is None  # an existing store, no Source
    done = _python(
        "import sys\nimport luigiflow as lf\nfrom tests.dags import Source\n"
        "result = lf.build([Source(size=7)], log_level='CRITICAL')\n"
        "print(len(result.executed), 'mlflow' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["1", "False"], done.stdout + done.stderr[-3000:]
    [run] = runs_of(client, "Source")
    assert run.info.status == "FINISHED" and run.data.metrics == {"size": 7.0}
    assert Source(size=7).load_output("numbers") == list(range(7))
