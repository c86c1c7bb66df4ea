"""The step users repeat: change one value and rerun, so that exactly one task executes.

A five-task chain (trivial bodies) is written for luigiflow (class tasks on the embedded
SQLite store), gokart (TaskOnKart) and DVC (`dvc.yaml` of five `python` stages). All of
it is built once, untimed; then, `repeats` times, the last task gets a value it never
had and the whole command is timed, process start to exit, bytecode cached:

- luigiflow: `luigiflow run --module chain Step5 --value N` (four reused, one executed);
- gokart: the build script with `--value N` for its last task;
- DVC: `dvc repro` after `params.json` gives the last stage a new value (one stage runs).

Each measurement also checks that exactly one task executed, and whether the luigiflow
process imported mlflow (it should not: see docs/benchmarks.md).

    python bench/one_changed.py [repeats]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from user_seen import as_installed, dvc_python  # noqa: E402

LENGTH = 5

LUIGIFLOW_CHAIN = """
import luigi
import luigiflow as lf


class Step1(lf.MlflowTask):
    artifacts = {"o": "o.json"}

    def run_task(self):
        self.save({"o": list(range(100))})
""" + "".join(
    f"""

class Step{i}(lf.MlflowTask):
    artifacts = {{"o": "o.json"}}
{"    value = luigi.IntParameter(default=0)" if i == LENGTH else ""}
    def requires(self):
        return {{"up": Step{i - 1}()}}

    def run_task(self):
        up = self.load("up", "o")
        self.save({{"o": [x + {"self.value" if i == LENGTH else "1"} for x in up]}})
"""
    for i in range(2, LENGTH + 1)
)

# Prints how many tasks ran and whether mlflow was imported, after the command's own run.
LUIGIFLOW_RUN = """
import sys
from luigiflow.cli import main
try:
    main(sys.argv[1:])
except SystemExit as done:
    assert not done.code, done.code
print("mlflow imported:", "mlflow" in sys.modules, file=sys.stderr)
"""

GOKART_CHAIN = (
    """
import sys
import luigi
import gokart


class Step1(gokart.TaskOnKart):
    def run(self):
        self.dump(list(range(100)))
"""
    + "".join(
        f"""

class Step{i}(gokart.TaskOnKart):
{"    value = luigi.IntParameter(default=0)" if i == LENGTH else ""}
    def requires(self):
        return Step{i - 1}()

    def run(self):
        print("executed Step{i}", file=sys.stderr)
        self.dump([x + {"self.value" if i == LENGTH else "1"} for x in self.load()])
"""
        for i in range(2, LENGTH + 1)
    )
    + f"""

if __name__ == "__main__":
    value = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    luigi.build([Step{LENGTH}(value=value, workspace_directory="./gk")],
                local_scheduler=True, log_level="CRITICAL")
"""
)

DVC_STAGE = f"""
import json, sys
name, before = sys.argv[1], sys.argv[2:]
add = 1
if name == "step{LENGTH}":
    add = json.load(open("params.json"))["value"]
value = json.load(open(before[0])) if before else list(range(100))
json.dump([x + add for x in value] if before else value, open(name + ".json", "w"))
"""


def _dvc_yaml() -> str:
    lines = ["stages:"]
    for i in range(1, LENGTH + 1):
        before = f"step{i - 1}.json" if i > 1 else ""
        lines.append(f"  step{i}:")
        lines.append(f"    cmd: python stage.py step{i} {before}".rstrip())
        lines.append("    deps:\n      - stage.py" + (f"\n      - {before}" if before else ""))
        if i == LENGTH:
            lines.append("    params:\n      - params.json:\n          - value")
        lines.append(f"    outs:\n      - step{i}.json")
    return "\n".join(lines) + "\n"


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return seconds, out.stdout + out.stderr


def measure(repeats: int, with_gokart: bool, with_dvc: bool = True) -> dict[str, object]:
    """Median seconds per system for one changed task, and what each run did."""
    results: dict[str, object] = {}
    root = Path(tempfile.mkdtemp(prefix="lf-bench-one-"))
    lf_dir = root / "luigiflow"
    lf_dir.mkdir()
    (lf_dir / "chain.py").write_text(LUIGIFLOW_CHAIN)
    (lf_dir / "run.py").write_text(LUIGIFLOW_RUN)
    env = as_installed(
        dict(
            os.environ,
            MLFLOW_TRACKING_URI=f"sqlite:///{lf_dir}/mlflow.db",
            PYTHONPATH=os.pathsep.join([".", os.environ.get("PYTHONPATH", "")]),
        )
    )
    run = [sys.executable, "run.py", "run", "--module", "chain", f"Step{LENGTH}", "--value"]
    _timed([*run, "0"], lf_dir, env)  # the chain, built once, untimed
    _timed([*run, "-1"], lf_dir, env)  # and one changed task, untimed: bytecode cached
    times, imported = [], []
    for value in range(1, repeats + 1):
        seconds, shown = _timed([*run, str(value)], lf_dir, env)
        assert "executed 1, reused 4" in shown, shown[-2000:]
        times.append(seconds)
        imported.append("mlflow imported: True" in shown)
    results["luigiflow"] = statistics.median(times)
    results["luigiflow imported mlflow"] = any(imported)

    if with_gokart:
        gk_dir = root / "gokart"
        gk_dir.mkdir()
        (gk_dir / "chain.py").write_text(textwrap.dedent(GOKART_CHAIN))
        gk_env = as_installed(dict(os.environ))
        _timed([sys.executable, "chain.py", "0"], gk_dir, gk_env)
        _timed([sys.executable, "chain.py", "-1"], gk_dir, gk_env)
        times = []
        for value in range(1, repeats + 1):
            seconds, shown = _timed([sys.executable, "chain.py", str(value)], gk_dir, gk_env)
            assert shown.count("executed Step") == 1, shown[-2000:]
            times.append(seconds)
        results["gokart"] = statistics.median(times)

    python = dvc_python(Path(tempfile.gettempdir()) / "lf-bench-cache") if with_dvc else None
    if python is not None:
        dvc_dir = root / "dvc"
        dvc_dir.mkdir()
        (dvc_dir / "stage.py").write_text(DVC_STAGE)
        (dvc_dir / "dvc.yaml").write_text(_dvc_yaml())
        (dvc_dir / "params.json").write_text('{"value": 0}')
        dvc = [str(python.parent / "dvc")]
        denv = as_installed(
            dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{python.parent}:{os.environ['PATH']}")
        )
        subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=dvc_dir, env=denv, check=True)
        _timed([*dvc, "repro"], dvc_dir, denv)
        (dvc_dir / "params.json").write_text('{"value": -1}')
        _timed([*dvc, "repro"], dvc_dir, denv)
        times = []
        for value in range(1, repeats + 1):
            (dvc_dir / "params.json").write_text(f'{{"value": {value}}}')
            seconds, shown = _timed([*dvc, "repro"], dvc_dir, denv)
            assert shown.count("Running stage") == 1, shown[-2000:]
            times.append(seconds)
        results["dvc"] = statistics.median(times)
    return results


def report(results: dict[str, object]) -> list[str]:
    ours = float(results["luigiflow"])  # type: ignore[arg-type]
    lines = [f"## One changed task: a {LENGTH}-task chain, the last one executes\n"]
    lines.append("| command (process start to exit) | seconds | luigiflow's ratio |\n|---|---|---|")
    lines.append(f"| `luigiflow run` (4 reused, 1 executed) | {ours:.3f} | 1.00 |")
    for name, label in (("gokart", "gokart build"), ("dvc", "`dvc repro` (1 stage runs)")):
        if name in results:
            theirs = float(results[name])  # type: ignore[arg-type]
            lines.append(f"| {label} | {theirs:.3f} | {ours / theirs:.2f}x |")
    lines.append(
        f"\nThe luigiflow process imported mlflow: {results['luigiflow imported mlflow']}.\n"
    )
    return lines


if __name__ == "__main__":
    import importlib.util

    has_gokart = importlib.util.find_spec("gokart") is not None
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print("\n".join(report(measure(repeats, has_gokart))))
