"""`lf.CommandTask`: one command as a task, run in a scratch folder, recorded as one run."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import luigi
import pytest

import luigiflow as lf
from tests.conftest import luigiflow_cli, runs_of


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def make_tasks(project: pathlib.Path):
    write(
        project / "make.py",
        """
        import json, sys
        rows = int(sys.argv[1])
        params = json.load(open("params.json"))
        assert params == {"rows": rows, "label": "a b"}, params
        with open("table.csv", "w") as f:
            f.write("x,label\\n" + "".join(f"{i},{params['label']}\\n" for i in range(rows)))
        with open("metrics.yaml", "w") as f:
            f.write(f"rows: {rows}\\nquality:\\n  ok: 1\\n")
        print("made", rows, "rows")
        print("a warning", file=sys.stderr)
        """,
    )
    write(
        project / "consume.py",
        """
        import sys
        with open("in/table.csv") as f:
            lines = f.readlines()
        # A careless script that writes into its input: the upstream artifact must not change.
        with open("in/table.csv", "a") as f:
            f.write("tampered\\n")
        with open("count.txt", "w") as f:
            f.write(str(len(lines) - 1))
        """,
    )

    class MakeTable(lf.CommandTask):
        project_dir = str(project)
        command = ["python", "make.py", "${rows}"]
        files = ["make.py"]
        outs = {"table": "table.csv"}
        params_file = "params.json"
        metrics_file = "metrics.yaml"
        rows = luigi.IntParameter(default=3)
        label = luigi.Parameter(default="a b")

    class CountRows(lf.CommandTask):
        project_dir = str(project)
        command = ["python", "consume.py"]
        files = ["consume.py"]
        inputs = {"in/table.csv": "table.table"}
        outs = {"count": "count.txt"}

        def requires(self):
            return {"table": MakeTable()}

    return MakeTable, CountRows


@pytest.mark.slow  # starts a Python process (see scripts/test --fast)
def test_command_task_runs_in_scratch_with_inputs_params_metrics_and_logs(client, tmp_path):
    project = tmp_path / "project"
    MakeTable, CountRows = make_tasks(project)
    result = lf.build([CountRows()])
    assert set(result.executed) == {MakeTable(), CountRows()}
    assert CountRows().load_output("count") == "3"
    table = MakeTable().load_output("table")  # checksum verified: the copy was tampered, not it
    assert list(table["x"]) == [0, 1, 2]
    assert not (project / "table.csv").exists()  # the command ran in a scratch folder

    run = runs_of(client, "MakeTable", "FINISHED")[0]
    assert run.data.metrics == {"rows": 3.0, "quality.ok": 1.0}
    assert run.data.params["rows"] == "3"
    command = json.loads(run.data.tags["luigiflow.command"])
    assert command["argv"] == ["python", "make.py", "3"]
    assert command["exit_code"] == 0
    # The interpreter the command ran with, not luigiflow's own process.
    assert os.path.isabs(command["interpreter"]) and command["python_version"]
    stdout = client.download_artifacts(run.info.run_id, "luigiflow/stdout.txt")
    assert pathlib.Path(stdout).read_text().strip() == "made 3 rows"
    stderr = client.download_artifacts(run.info.run_id, "luigiflow/stderr.txt")
    assert "a warning" in pathlib.Path(stderr).read_text()

    # Same task again: nothing runs. An edited script changes identity, upstream first.
    assert lf.build([CountRows()]).executed == []
    before = (MakeTable().identity, CountRows().identity)
    with open(project / "make.py", "a") as f:
        f.write("# edited\n")
    assert MakeTable().identity != before[0] and CountRows().identity != before[1]
    edited = lf.build([CountRows()])
    # the same table.csv comes out: CountRows is cut off, not run (docs/identity.md)
    assert edited.executed == [MakeTable()] and CountRows() in edited.reused
    # A parameter is substituted into the command and enters the identity.
    lf.build([MakeTable(rows=5)])
    assert list(MakeTable(rows=5).load_output("table")["x"]) == [0, 1, 2, 3, 4]


@pytest.mark.slow  # starts a Python process (see scripts/test --fast)
def test_command_failure_carries_the_stderr_tail(client, tmp_path):
    write(
        tmp_path / "p" / "boom.py",
        "import sys\nprint('step 1', file=sys.stderr)\nraise SystemExit('disk full')\n",
    )

    class Boom(lf.CommandTask):
        project_dir = str(tmp_path / "p")
        command = ["python", "boom.py"]
        outs = {"x": "x.txt"}

    with pytest.raises(lf.BuildError) as info:
        lf.build([Boom()])
    error = info.value.failures[Boom()]
    assert isinstance(error, lf.CommandFailedError)
    assert (
        "exited with code 1" in str(error) and "disk full" in str(error) and "step 1" in str(error)
    )
    assert runs_of(client, "Boom")[0].info.status == "FAILED"


def test_undeclared_and_bad_class_definitions_are_reported(client, tmp_path):
    with pytest.raises(lf.TaskDefinitionError) as info:

        class Broken(lf.CommandTask):
            command = ["python", 3]
            outs = {"bad name": "x.txt"}
            inputs = {"../escape.csv": "up.x"}

    message = str(info.value)
    assert "command" in message and "bad name" in message and "../escape.csv" in message


SLEEPER = """
import os, sys, time
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_child_process_group_and_marks_the_run_killed(client, tmp_path, sig):
    write(tmp_path / "sleeper.py", SLEEPER)
    pid_file = tmp_path / "child.pid"
    (tmp_path / "pipeline.toml").write_text(
        f'[stages.nap]\ncmd = ["python", "sleeper.py", "{pid_file}"]\ndeps = ["sleeper.py"]\n'
        'outs = ["never.txt"]\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "luigiflow.cli", "run", "--pipeline", "pipeline.toml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not pid_file.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.2)
        child = int(pid_file.read_text())
        assert _alive(child)
        proc.send_signal(sig)
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, output
    deadline = time.monotonic() + 60
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child), "the child process outlived luigiflow"
    statuses = [r.info.status for r in runs_of(client, "nap")]
    assert statuses == ["KILLED"], output


@pytest.mark.slow
def test_python_task_class_and_command_stages_mix_in_one_pipeline(client, tmp_path):
    write(
        tmp_path / "mixtasks.py",
        """
        import luigi
        import luigiflow as lf

        class Numbers(lf.MlflowTask):
            artifacts = {"numbers": "numbers.json"}
            count = luigi.IntParameter(default=3)

            def run_task(self):
                self.save({"numbers": list(range(self.count))})
        """,
    )
    write(
        tmp_path / "total.py",
        """
        import json
        total = sum(json.load(open("numbers.json")))
        json.dump({"total": total}, open("metrics.json", "w"))
        """,
    )
    (tmp_path / "pipeline.toml").write_text(
        textwrap.dedent(
            """
            [stages.numbers]
            task = "mixtasks:Numbers"
            params = { count = 5 }

            [stages.total]
            cmd = ["python", "total.py"]
            deps = ["total.py"]
            inputs = { "numbers.json" = "numbers.numbers" }
            metrics = "metrics.json"
            """
        )
    )
    luigiflow_cli("run", "--pipeline", "pipeline.toml", cwd=tmp_path)
    total = runs_of(client, "total", "FINISHED")[0]
    assert total.data.metrics == {"total": 10.0}
    numbers = runs_of(client, "Numbers", "FINISHED")[0]
    assert total.data.tags["luigiflow.upstream.numbers"] == numbers.info.run_id
