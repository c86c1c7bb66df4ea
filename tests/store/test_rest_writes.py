"""A task's run written to a real `mlflow server` over its REST API: few round trips per
executed task, every record a run carries, and no `import mlflow` on the way."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import posixpath
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.counting_proxy import Recorder, Seen, counting_proxy
from tests.servers import shared_mlflow

pytestmark = [pytest.mark.xdist_group("servers"), pytest.mark.slow]

# A chain whose every link saves one small artifact and reads its upstream's run.
CHAIN = """
import luigi
import luigiflow as lf


class Link(lf.MlflowTask):
    artifacts = {"o": "o.json"}
    i = luigi.IntParameter()
    tag = luigi.Parameter()

    def requires(self):
        return {"up": Link(i=self.i - 1, tag=self.tag)} if self.i > 0 else {}

    def run_task(self):
        self.save({"o": [self.i, self.tag]}, metrics={"i": self.i})
"""

# `luigiflow run`, then whether anything imported mlflow.
CLI = (
    "import sys\nfrom luigiflow.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    assert not exc.code, exc\n"
    "print('MLFLOW' if 'mlflow' in sys.modules else 'CLEAN')"
)


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return shared_mlflow(request.config, tmp_path_factory)[0]


def _build(url: str, folder: pathlib.Path, recorder: Recorder, links: int, tag: str) -> list[Seen]:
    """The requests of one `luigiflow run` of a chain of `links` tasks, in a fresh process
    as a user runs it; that process must not have imported mlflow."""
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=url,
        LUIGIFLOW_CACHE_DIR=str(folder / "cache"),
        LUIGIFLOW_PROGRESS="0",
        # The look at other workers' runs is timed (once per interval, whatever the
        # number of tasks): one look per build here, so that builds compare task for task.
        LUIGIFLOW_RECHECK_S="3600",
        PYTHONPATH=os.pathsep.join([str(folder), str(REPO)]),
    )
    recorder.clear()
    args = ["run", "--module", "chain", "Link", "--i", str(links - 1), "--tag", tag]
    out = subprocess.run(
        [sys.executable, "-c", CLI, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.strip().endswith("CLEAN"), out.stdout[-2000:] + out.stderr[-2000:]
    with recorder.lock:
        return list(recorder.seen)


def _named(seen: list[Seen]) -> collections.Counter[str]:
    return collections.Counter(
        f"{s.method} {s.path.split('?')[0].split('/mlflow-artifacts/artifacts/')[0]}" for s in seen
    )


def _asks_completion(seen: Seen) -> bool:
    """Luigi's question "is this task complete?": the newest FINISHED run of one identity."""
    body = json.loads(seen.body or b"{}") if seen.path.endswith("/runs/search") else {}
    text = str(body.get("filter", ""))
    return body.get("max_results") == 1 and "identity" in text and "'FINISHED'" in text


def _server_file(server: str, uri: str, folder: pathlib.Path) -> str:
    """The text of a `mlflow-artifacts:` file of the server, read with MLflow's client."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(posixpath.dirname(uri), tracking_uri=server)
    local = repo.download_artifacts(posixpath.basename(uri), str(folder))
    return pathlib.Path(local).read_text()


def test_a_build_on_a_server_records_every_run_without_importing_mlflow(
    server: str, tmp_path: pathlib.Path
):
    (tmp_path / "chain.py").write_text(CHAIN)
    with counting_proxy(server) as (url, recorder):
        _build(url, tmp_path, recorder, 3, "whole")  # a new experiment too

    import mlflow

    client = mlflow.MlflowClient(server)
    exp = client.get_experiment_by_name("Link")
    [run] = client.search_runs([exp.experiment_id], "params.tag = 'whole' AND params.i = '2'")
    assert run.info.status == "FINISHED"
    assert run.data.params == {"i": "2", "tag": "whole"}
    assert run.data.metrics == {"i": 2.0}
    tags = run.data.tags
    for key in ("luigiflow.identity", "luigiflow.upstream.up", "luigiflow.artifact.o"):
        assert key in tags, key
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.runName"] == run.info.run_name == "Link(i=2, tag=whole)"
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.name == "up.o"
    assert {f.path for f in client.list_artifacts(run.info.run_id)} == {"o.json"}
    # The package list, uploaded once for the build, named by the run.
    where = tags["luigiflow.environment"]
    assert where.startswith(f"mlflow-artifacts:/{exp.experiment_id}/luigiflow/environments/")
    packages = _server_file(server, where, tmp_path)
    assert "luigiflow==" in packages and "mlflow==" in packages


def test_mlflow_imported_in_run_task_lands_on_the_tasks_run_on_a_server(
    server: str, tmp_path: pathlib.Path
):
    code = (
        "import sys\nimport luigiflow as lf\nfrom tests.fluent_tasks import LogsThroughMlflow\n"
        "assert 'mlflow' not in sys.modules\n"
        "lf.build([LogsThroughMlflow(label='server')], log_level='CRITICAL')\n"
    )
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=server,
        LUIGIFLOW_CACHE_DIR=str(tmp_path / "cache"),
        PYTHONPATH=str(REPO),
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]

    import mlflow

    client = mlflow.MlflowClient(server)
    exp = client.get_experiment_by_name("LogsThroughMlflow")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params == {"label": "server", "fluent_param": "yes"}
    assert run.data.metrics == {"live": 0.5}
    assert run.data.tags["fluent_tag"] == "server"
    seen = client.download_artifacts(run.info.run_id, "seen.json", str(tmp_path))
    assert json.loads(pathlib.Path(seen).read_text()) == {
        "active_run": run.info.run_id,
        "imported_before": False,
    }


def test_an_executed_task_costs_at_most_six_requests_without_importing_mlflow(
    server: str, tmp_path: pathlib.Path
):
    (tmp_path / "chain.py").write_text(CHAIN)
    with counting_proxy(server) as (url, recorder):
        _build(url, tmp_path, recorder, 2, "first")  # the experiment exists from here on
        short = _build(url, tmp_path, recorder, 2, "short")
        long = _build(url, tmp_path, recorder, 6, "long")
    # What each build pays once (experiment lookup, first checks) cancels out: the four
    # more tasks of the long build cost what four executed tasks cost.
    more = _named(long) - _named(short)
    asked = sum(map(_asks_completion, long)) - sum(map(_asks_completion, short))
    # Luigi asks whether each task of a chain is complete one level at a time, and
    # MLflow's search cannot ask for several identities at once: one question per task
    # of a new chain (a batch per experiment where siblings are asked together).
    assert asked == 4, more
    assert (sum(more.values()) - asked) / 4 <= 6, more


def test_a_build_resolves_its_experiment_with_one_request(server: str, tmp_path: pathlib.Path):
    # The completion question looks the experiment up (once per level of the chain while
    # it is absent: "absent" is a "not complete" answer, never given twice); the first run
    # is created in what it found, and one it found absent is created without a lookup.
    module = CHAIN.replace(
        'artifacts = {"o": "o.json"}',
        'experiment_name = "link-lookups"\n    artifacts = {"o": "o.json"}',
    )
    (tmp_path / "chain.py").write_text(module)
    with counting_proxy(server) as (url, recorder):
        firsts = _build(url, tmp_path, recorder, 2, "first")
        agains = _build(url, tmp_path, recorder, 2, "again")
        first, again = _named(firsts), _named(agains)
    lookup = "GET /api/2.0/mlflow/experiments/get-by-name"
    create = "POST /api/2.0/mlflow/experiments/create"
    assert (first[lookup], first[create]) == (2, 1), first
    assert (again[lookup], again[create]) == (1, 0), again
    # An experiment made during this build holds no earlier run: nothing to name runs
    # after, cut off from, or compare store formats with; a later build reads it.
    assert _lists_finished(firsts) == 0
    assert _lists_finished(agains) > 0


def _lists_finished(seen: list[Seen]) -> int:
    """Searches listing an experiment's FINISHED runs, whatever their identity."""
    bodies = [json.loads(s.body or b"{}") for s in seen if s.path.endswith("/runs/search")]
    return sum(b.get("filter") == "attributes.status = 'FINISHED'" for b in bodies)


# A task that waits, without importing mlflow, until the test lets it finish.
PAUSABLE = """
import pathlib
import time

import luigiflow as lf


class Pausable(lf.MlflowTask):
    artifacts = {"o": "o.json"}

    def run_task(self):
        pathlib.Path("started").touch()
        deadline = time.time() + 300
        while not pathlib.Path("go").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the heartbeat thread beats again first, as after a real pause
        self.save({"o": 1})
"""


def test_a_paused_worker_whose_run_was_killed_meanwhile_never_finishes_it(
    server: str, tmp_path: pathlib.Path
):
    # The finishing write skips its status read while the process's own heartbeat is
    # fresh. A process paused past its lease (SIGSTOP, a frozen machine) beats again the
    # moment it resumes: that fresh beat must not stand for a run nobody could have killed.
    import signal
    import time

    import mlflow

    (tmp_path / "pausable.py").write_text(PAUSABLE)
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=server,
        LUIGIFLOW_CACHE_DIR=str(tmp_path / "cache"),
        LUIGIFLOW_PROGRESS="0",
        LUIGIFLOW_HEARTBEAT_S="0.25",
        LUIGIFLOW_STALE_AFTER_S="3",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "luigiflow.cli", "run", "--module", "pausable", "Pausable"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 300
        while not (tmp_path / "started").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGSTOP)
        client = mlflow.MlflowClient(server)
        exp = client.get_experiment_by_name("Pausable")
        [run] = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
        # The pause itself: until the stopped worker's last beat is older than its 3 s lease.
        last_beat = float(run.data.tags.get("luigiflow.heartbeat") or run.info.start_time / 1000)
        while time.time() - last_beat <= 4:
            time.sleep(0.1)
        client.set_terminated(run.info.run_id, "KILLED")  # as the worker that took over
        (tmp_path / "go").touch()
        proc.send_signal(signal.SIGCONT)
        out = proc.communicate(timeout=300)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, out[-3000:]
    assert client.get_run(run.info.run_id).info.status == "KILLED", out[-3000:]
