"""The command line driven as a user would: subprocesses against a real temporary store."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of
from tests.servers import free_port, stop, wait_http

pytestmark = pytest.mark.slow  # starts servers or subprocesses (see scripts/test --fast)


def plan_json(tmp_path, *words):
    out = cli("plan", "--module", "examples.tabular", *words, "--format", "json", cwd=tmp_path)
    return json.loads(out.stdout)[0]


def flatten(entry, path="root"):
    yield path, entry
    for name, child in entry["upstream"].items():
        yield from flatten(child, f"{path}/{name}")


@pytest.mark.xdist_group("example")
def test_plan_run_plan_change_diff_on_example(client, tmp_path):
    args = ["Evaluate", "--logic", "standardized", "--algorithm", "logreg"]
    before = plan_json(tmp_path, *args)
    statuses = {p: e["status"] for p, e in flatten(before)}
    assert set(statuses.values()) == {"will run"}
    assert (
        "no run of this task yet"
        in before["upstream"]["model"]["upstream"]["features"]["upstream"]["split"]["upstream"][
            "data"
        ]["reasons"]
    )
    assert client.search_experiments(max_results=100)[0].name == "Default"  # plan created nothing

    run = cli("run", "--module", "examples.tabular", *args, cwd=tmp_path)
    assert "executed 5, reused 0, failed 0" in run.stdout
    evaluate_run = runs_of(client, "tabular-evaluate", "FINISHED")[0].info.run_id
    assert evaluate_run in run.stdout

    after = plan_json(tmp_path, *args)
    assert after["status"] == "reused" and after["run_id"] == evaluate_run

    changed = plan_json(tmp_path, "Evaluate", "--logic", "standardized", "--algorithm", "rf")
    by_family = {e["family"]: e for _, e in flatten(changed)}
    assert changed["status"] == "will run"
    assert changed["upstream"]["model"]["status"] == "will run"
    assert changed["upstream"]["features"]["status"] == "reused"
    train = changed["upstream"]["model"]
    assert train["changed_params"] == [{"name": "algorithm", "old": "logreg", "new": "rf"}]
    assert any("parameter algorithm changed: logreg -> rf" in r for r in train["reasons"])
    assert by_family["Process"]["status"] == "reused"

    text = cli(
        "plan",
        "--module",
        "examples.tabular",
        "Evaluate",
        "--logic",
        "standardized",
        "--algorithm",
        "rf",
        cwd=tmp_path,
    ).stdout
    assert "will run" in text and "algorithm changed: logreg -> rf" in text

    cli(
        "run",
        "--module",
        "examples.tabular",
        "Evaluate",
        "--logic",
        "plain",
        "--algorithm",
        "logreg",
        "--workers",
        "2",
        cwd=tmp_path,
    )
    evaluations = {
        r.data.params["logic"]: r.info.run_id
        for r in runs_of(client, "tabular-evaluate", "FINISHED")
    }
    out = cli("diff", evaluations["standardized"], evaluations["plain"], cwd=tmp_path).stdout
    changed_lines = [line.strip() for line in out.splitlines() if "->" in line]
    assert changed_lines and all(line == "logic: standardized -> plain" for line in changed_lines)
    assert "algorithm" not in out and "retrieved_on" not in out
    assert "roc_auc" in out

    listed = json.loads(cli("runs", "tabular-evaluate", "--format", "json", cwd=tmp_path).stdout)
    assert {r["run_id"] for r in listed} == set(evaluations.values())
    sorted_rows = json.loads(
        cli("runs", "Evaluate", "--sort", "roc_auc", "--format", "json", cwd=tmp_path).stdout
    )
    scores = [r["metrics"]["roc_auc"] for r in sorted_rows]
    assert scores == sorted(scores, reverse=True)

    shown = cli("show", evaluations["plain"], cwd=tmp_path).stdout
    for family in ("Evaluate", "Train", "Process", "Split", "LoadData"):
        assert family in shown
    assert "report (report.json" in shown


def test_runs_where_with_quotes_and_unicode(client, tmp_path):
    import luigiflow as lf
    from tests.dags import AnyValue

    tricky = 'it\'s "quoted" — ünï'
    lf.build([AnyValue(value=tricky), AnyValue(value="plain")])
    rows = json.loads(
        cli(
            "runs", "AnyValue", "--where", f"value={tricky}", "--format", "json", cwd=tmp_path
        ).stdout
    )
    assert [r["params"]["value"] for r in rows] == [tricky]
    csv_out = cli("runs", "AnyValue", "--format", "csv", cwd=tmp_path).stdout
    assert csv_out.splitlines()[0].startswith("run_id,start_time,")
    assert len(csv_out.strip().splitlines()) == 3


def test_run_failure_exit_code_and_one_line(client, tmp_path):
    gate = tmp_path / "gate"
    gate.write_text("closed")
    out = cli(
        "run", "--module", "tests.dags", "Flaky", "--gate", str(gate), cwd=tmp_path, check=False
    )
    assert out.returncode == 1
    assert "FAILED Flaky(" in out.stderr and "RuntimeError: gate" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["run", "--module", "no_such_module", "Leaf"],
            "TaskNotFoundError: module 'no_such_module'",
        ),
        (
            ["run", "--module", "tests.dags", "NoSuchTask"],
            "TaskNotFoundError: unknown task 'NoSuchTask'",
        ),
        (
            ["run", "--module", "tests.dags", "Leaf", "--sise", "3"],
            "ParameterError: Leaf: unknown parameter --sise",
        ),
        (
            ["plan", "--module", "tests.dags", "Leaf", "--size", "abc"],
            "ParameterError: Leaf: --size expects an integer, got 'abc'",
        ),
        (["show", "0123456789abcdef0123456789abcdef"], "RunNotFoundError: run '0123456789abcdef"),
        (["runs", "NoSuchExperiment"], "RunNotFoundError: no experiment and no task family"),
        (["runs", "Leaf", "--where", "novalue"], "LuigiflowError: --where 'novalue'"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(client, tmp_path, args, expected):
    out = cli(*args, cwd=tmp_path, check=False)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(expected), lines[0]
    assert [e.name for e in client.search_experiments()] == ["Default"]


def test_unreachable_tracking_server(tmp_path, store):
    import os

    env = dict(os.environ, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    out = cli("run", "--module", "tests.dags", "Leaf", cwd=tmp_path, check=False, env=env)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("TrackingError: cannot reach the MLflow tracking server")
    assert len(out.stderr.strip().splitlines()) == 1


def test_help_imports_neither_mlflow_nor_luigi(tmp_path):
    code = (
        "import sys\nfrom luigiflow.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "main(['run', '--help'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'luigi'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Commands:" in out.stdout and "--scheduler-url" in out.stdout
    assert out.stdout.strip().endswith("[]"), out.stdout[-500:]


def test_ui_serves_the_store_without_warnings(client, tmp_path):
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "luigiflow.cli", "ui", "--port", str(port)],
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Readiness is polled: a loaded machine may take minutes to start the UI.
        wait_http(f"http://127.0.0.1:{port}/health", proc, seconds=300)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert "mlflow" in response.read().decode("utf-8", "replace").lower()
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10", timeout=30
        ) as response:
            assert "Default" in response.read().decode()
    finally:
        stop(proc)
    shown = log.read_text()
    assert "Warning" not in shown, shown  # e.g. Starlette's deprecation warnings
    assert f"http://127.0.0.1:{port}" in shown
