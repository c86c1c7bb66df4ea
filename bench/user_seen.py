"""Commands as a user sees them: process start to exit, on a four-stage chain.

The same chain (prepare -> featurize -> train -> evaluate, trivial bodies) is written for
luigiflow (class tasks on the embedded SQLite store), DVC (`dvc.yaml` of four `python`
stages) and gokart (four TaskOnKart). Everything is built once, untimed; then each
command is timed as a whole process, the median of `repeats`:

- luigiflow: no-op `run`, `plan`, `runs Evaluate --limit 20`, `show RUN`;
- DVC: no-op `dvc repro`, `dvc status` (DVC installed by the bench in its own venv);
- gokart: the no-op build script.

Every command runs as it does once installed: with its bytecode cached (`as_installed`).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

STAGES = ["prepare", "featurize", "train", "evaluate"]

LUIGIFLOW_CHAIN = """
import luigi
import luigiflow as lf


class Prepare(lf.MlflowTask):
    artifacts = {"o": "o.json"}
    size = luigi.IntParameter(default=100)

    def run_task(self):
        self.save({"o": list(range(self.size))})


class Featurize(lf.MlflowTask):
    artifacts = {"o": "o.json"}

    def requires(self):
        return {"prepare": Prepare()}

    def run_task(self):
        self.save({"o": [x * 2 for x in self.load("prepare", "o")]})


class Train(lf.MlflowTask):
    artifacts = {"o": "o.json"}
    offset = luigi.IntParameter(default=0)

    def requires(self):
        return {"featurize": Featurize()}

    def run_task(self):
        self.save({"o": sum(self.load("featurize", "o")) + self.offset})


class Evaluate(lf.MlflowTask):
    artifacts = {"o": "o.json"}

    def requires(self):
        return {"train": Train()}

    def run_task(self):
        score = self.load("train", "o") / 1000
        self.save({"o": score}, metrics={"score": score})
"""

GOKART_CHAIN = """
import luigi
import gokart


class Prepare(gokart.TaskOnKart):
    size = luigi.IntParameter(default=100)

    def run(self):
        self.dump(list(range(self.size)))


class Featurize(gokart.TaskOnKart):
    def requires(self):
        return Prepare()

    def run(self):
        self.dump([x * 2 for x in self.load()])


class Train(gokart.TaskOnKart):
    seed = luigi.IntParameter(default=0)

    def requires(self):
        return Featurize()

    def run(self):
        self.dump(sum(self.load()) + self.seed)


class Evaluate(gokart.TaskOnKart):
    def requires(self):
        return Train()

    def run(self):
        self.dump(self.load() / 1000)


if __name__ == "__main__":
    luigi.build([Evaluate(workspace_directory="./gk")], local_scheduler=True,
                log_level="CRITICAL")
"""

DVC_STAGE = """
import json, sys
name, before = sys.argv[1], sys.argv[2:]
value = json.load(open(before[0])) if before else list(range(100))
json.dump(value, open(f"{name}.json", "w"))
"""


def _dvc_yaml() -> str:
    lines = ["stages:"]
    for i, name in enumerate(STAGES):
        before = f"{STAGES[i - 1]}.json" if i else ""
        lines.append(f"  {name}:")
        lines.append(f"    cmd: python stage.py {name} {before}".rstrip())
        lines.append("    deps:\n      - stage.py" + (f"\n      - {before}" if before else ""))
        lines.append(f"    outs:\n      - {name}.json")
    return "\n".join(lines) + "\n"


def dvc_python(cache: Path) -> Path | None:
    """A venv holding DVC, made once under `cache` (None when it cannot be installed)."""
    venv = cache / "dvc-venv"
    python = venv / "bin" / "python"
    if (venv / "bin" / "dvc").exists():
        return python
    print("installing DVC for the comparison (own venv)...", file=sys.stderr)
    uv = shutil.which("uv")
    if uv:
        made = subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)])
        done = made.returncode == 0 and (
            subprocess.run([uv, "pip", "install", "-q", "-p", str(python), "dvc"]).returncode == 0
        )
    else:
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)])
        done = made.returncode == 0 and (
            subprocess.run([str(python), "-m", "pip", "install", "-q", "dvc"]).returncode == 0
        )
    return python if done else None


def as_installed(env: dict[str, str]) -> dict[str, str]:
    """`env` for a command timed as a user runs it once installed: Python may cache the
    bytecode it compiles (pip compiles at install, and Python writes it at the first import).
    Under PYTHONDONTWRITEBYTECODE every start would compile each module again, timing the
    compiler rather than the command; the untimed first run writes the cache."""
    return {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _time(cmd: list[str], cwd: Path, env: dict[str, str], repeats: int) -> float:
    subprocess.run(cmd, cwd=cwd, env=env, capture_output=True)  # untimed: caches bytecode
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return statistics.median(times)


def measure(repeats: int, with_gokart: bool) -> dict[str, float]:
    """Seconds per command, as a user runs it, keyed `system: command`."""
    results: dict[str, float] = {}
    root = Path(tempfile.mkdtemp(prefix="lf-bench-user-"))
    bin_dir = Path(sys.executable).parent
    try:
        lf_dir = root / "luigiflow"
        lf_dir.mkdir()
        (lf_dir / "chain.py").write_text(LUIGIFLOW_CHAIN)
        env = as_installed(dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{lf_dir}/mlflow.db"))
        luigiflow = [str(bin_dir / "luigiflow")]
        run = [*luigiflow, "run", "--module", "chain", "Evaluate"]
        subprocess.run(run, cwd=lf_dir, env=env, check=True, capture_output=True)
        listing = subprocess.run(
            [*luigiflow, "runs", "Evaluate", "--format", "csv"],
            cwd=lf_dir,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        header = listing[0].split(",")
        run_id = listing[1].split(",")[header.index("run_id")]
        results["luigiflow: run (no-op)"] = _time(run, lf_dir, env, repeats)
        plan = [*luigiflow, "plan", "--module", "chain", "Evaluate"]
        results["luigiflow: plan"] = _time(plan, lf_dir, env, repeats)
        runs = [*luigiflow, "runs", "Evaluate", "--limit", "20"]
        results["luigiflow: runs --limit 20"] = _time(runs, lf_dir, env, repeats)
        results["luigiflow: show RUN"] = _time([*luigiflow, "show", run_id], lf_dir, env, repeats)

        python = dvc_python(Path(tempfile.gettempdir()) / "lf-bench-cache")
        if python is not None:
            dvc_dir = root / "dvc"
            dvc_dir.mkdir()
            (dvc_dir / "stage.py").write_text(DVC_STAGE)
            (dvc_dir / "dvc.yaml").write_text(_dvc_yaml())
            dvc = [str(python.parent / "dvc")]
            denv = as_installed(
                dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{python.parent}:{os.environ['PATH']}")
            )
            subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=dvc_dir, env=denv, check=True)
            subprocess.run([*dvc, "repro", "-q"], cwd=dvc_dir, env=denv, check=True)
            results["dvc: repro (no-op)"] = _time([*dvc, "repro", "-q"], dvc_dir, denv, repeats)
            results["dvc: status"] = _time([*dvc, "status", "-q"], dvc_dir, denv, repeats)

        if with_gokart:
            gk_dir = root / "gokart"
            gk_dir.mkdir()
            (gk_dir / "chain.py").write_text(textwrap.dedent(GOKART_CHAIN))
            gk = [sys.executable, "chain.py"]
            gk_env = as_installed(dict(os.environ))
            subprocess.run(gk, cwd=gk_dir, env=gk_env, check=True, capture_output=True)
            results["gokart: build (no-op)"] = _time(gk, gk_dir, gk_env, repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def report(results: dict[str, float]) -> list[str]:
    lines = ["## Commands as a user sees them: a four-stage chain, everything done\n"]
    lines.append("| command | seconds (process start to exit) |\n|---|---|")
    lines += [f"| {name} | {seconds:.3f} |" for name, seconds in results.items()]
    floor = results.get("dvc: repro (no-op)")
    if floor:
        lines.append("\nRatios to `dvc repro` (no-op):\n")
        lines.append("| command | ratio |\n|---|---|")
        lines += [
            f"| {name} | {seconds / floor:.2f} |"
            for name, seconds in results.items()
            if name.startswith("luigiflow")
        ]
    lines.append("")
    return lines


if __name__ == "__main__":
    import importlib.util

    has_gokart = importlib.util.find_spec("gokart") is not None
    print("\n".join(report(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 3, has_gokart))))
