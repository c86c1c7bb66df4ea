"""Round trips to a tracking server: HTTP requests counted by a proxy, named per endpoint.

For a team the network dominates, so what is measured here is requests, not CPU: a
counting reverse proxy (tests/counting_proxy.py) sits between luigiflow and a real
`mlflow server` (SQLite backend, proxied artifacts). Each step runs in a fresh process:

- completion of `asked` FINISHED tasks of one class in a store holding `runs` runs (the
  store is seeded by SQL copies as in scale.py, before the server starts on it), and of
  a handful of them (the oldest: no scan can stop early);
- a chain of `chain` tasks with one small artifact each, executed: requests per task;
- the same chain again, nothing to do: requests of a no-op `luigiflow run`;
- steady state: a chain of 2 and one of 2 + `chain` more tasks in the existing
  experiment; what the longer one costs more, per task, is what an executed task costs
  (what a build pays once cancels out), split into Luigi's completion questions (one
  per level of a new chain) and the rest;
- another chain executed with `delay_ms` added to every request by the proxy: the wall
  time per task a team sees over a network.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FEW = 5  # a handful of tasks asked in a big experiment: read the newest runs, then exact

CHAIN = """
import luigi
import luigiflow as lf


class Step(lf.MlflowTask):
    artifacts = {"o": "o.json"}
    i = luigi.IntParameter()
    run_tag = luigi.Parameter()

    def requires(self):
        return {"up": Step(i=self.i - 1, run_tag=self.run_tag)} if self.i > 0 else {}

    def run_task(self):
        # Outputs differ between chains: equal bytes would make each task look for an
        # earlier run to copy (early cutoff), a question of its own.
        self.save({"o": [self.i, self.run_tag]}, metrics={"i": self.i})
"""


def _endpoint(name: str) -> str:
    """Artifact paths carry run ids: one name per kind of request."""
    return re.sub(r"(mlflow-artifacts/artifacts)/\S+", r"\1/...", name)


def _counted(recorder: Any) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for name, n in recorder.endpoints().items():
        counts[_endpoint(name)] += n
    return dict(counts.most_common())


def _asks_completion(seen: Any) -> bool:
    """Luigi's question "is this task complete?": the newest FINISHED run of one identity."""
    if not seen.path.endswith("/runs/search"):
        return False
    body = json.loads(seen.body or b"{}")
    text = str(body.get("filter", ""))
    return body.get("max_results") == 1 and "identity" in text and "'FINISHED'" in text


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "luigiflow.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"luigiflow {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


def measure(runs: int, asked: int, chain: int = 5, delay_ms: float = 20.0) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    import scale

    from tests.counting_proxy import counting_proxy
    from tests.servers import start_mlflow, stop

    root = Path(tempfile.mkdtemp(prefix="lf-bench-trips-"))
    proc = None
    env = dict(os.environ, LUIGIFLOW_PROGRESS="0", LUIGIFLOW_CACHE_DIR=str(root / "cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(REPO), env.get("PYTHONPATH", "")])
    try:
        (root / "scale_tasks.py").write_text(scale.TASKS)
        (root / "chain_tasks.py").write_text(CHAIN)
        seed_env = dict(env, MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db")
        out, _, _ = scale._run([sys.executable, "-c", scale.SEED, str(runs)], root, seed_env)
        scale._seed(root / "mlflow.db", json.loads(out.strip().splitlines()[-1]))
        proc, url = start_mlflow(f"sqlite:///{root}/mlflow.db", root / "served")
        result: dict[str, Any] = {"runs": runs, "asked": asked, "chain": chain}
        with counting_proxy(url) as (proxied, recorder):
            env["MLFLOW_TRACKING_URI"] = proxied
            recorder.clear()
            start = time.perf_counter()
            scale._run([sys.executable, "-c", scale.COMPLETION, str(asked), "own"], root, env)
            result["completion"] = {
                "wall": time.perf_counter() - start,
                "requests": recorder.count(),
                "by_endpoint": _counted(recorder),
            }
            recorder.clear()
            start = time.perf_counter()
            scale._run([sys.executable, "-c", scale.COMPLETION, str(FEW), "own"], root, env)
            result["few"] = {"wall": time.perf_counter() - start, "requests": recorder.count()}
            build = ["run", "--module", "chain_tasks", "Step", "--i", str(chain - 1)]
            for name, tag in (("executed", "a"), ("noop", "a")):
                recorder.clear()
                wall = _cli([*build, "--run-tag", tag], root, env)
                result[name] = {
                    "wall": wall,
                    "requests": recorder.count(),
                    "by_endpoint": _counted(recorder),
                }
            steady: dict[str, collections.Counter[str]] = {}
            for name, links in (("short", 2), ("long", 2 + chain)):
                recorder.clear()
                step = ["Step", "--i", str(links - 1), "--run-tag", name]
                _cli(["run", "--module", "chain_tasks", *step], root, env)
                steady[name] = collections.Counter(_counted(recorder))
                steady[name]["(completion questions)"] = sum(
                    map(_asks_completion, list(recorder.seen))
                )
            more = steady["long"] - steady["short"]
            asked = more.pop("(completion questions)", 0)
            result["steady"] = {
                "per_task": (sum(more.values()) - asked) / chain,
                "asked_per_task": asked / chain,
                "by_endpoint": {k: v / chain for k, v in more.most_common()},
            }
            recorder.delay_s = delay_ms / 1000
            recorder.clear()
            wall = _cli([*build, "--run-tag", "slow"], root, env)
            result["delayed"] = {"delay_ms": delay_ms, "wall": wall, "requests": recorder.count()}
        return result
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def report(result: dict[str, Any]) -> list[str]:
    n = result["chain"]
    ex, noop, comp, slow = (result[k] for k in ("executed", "noop", "completion", "delayed"))
    lines = ["## Round trips to an `mlflow server` (requests counted by a proxy)\n"]
    lines.append("| measurement | requests | wall s |\n|---|---|---|")
    lines.append(
        f"| completion of {result['asked']:,} finished tasks among {result['runs']:,} runs "
        f"(`lf.build`, whole process) | {comp['requests']} | {comp['wall']:.2f} |"
    )
    few = result["few"]
    lines.append(
        f"| completion of {FEW} finished tasks (the oldest) among {result['runs']:,} runs "
        f"| {few['requests']} | {few['wall']:.2f} |"
    )
    lines.append(
        f"| `luigiflow run` of a {n}-task chain, executed (one small artifact each) "
        f"| {ex['requests']} ({ex['requests'] / n:.1f} per task) | {ex['wall']:.2f} |"
    )
    lines.append(f"| the same, no-op | {noop['requests']} | {noop['wall']:.2f} |")
    steady = result["steady"]
    lines.append(
        f"| steady state: each more task of a chain executed in an existing experiment "
        f"| {steady['per_task']:.1f} + {steady['asked_per_task']:.1f} completion question | |"
    )
    lines.append(
        f"| another {n}-task chain, executed, {slow['delay_ms']:.0f} ms added per request "
        f"| {slow['requests']} | {slow['wall']:.2f} ({slow['wall'] / n:.2f} per task) |"
    )
    named = ", ".join(f"{k} x{v:.1f}" for k, v in result["steady"]["by_endpoint"].items())
    lines.append(f"\nRequests of one more executed task, steady state: {named}")
    for title, step in (
        (f"executed {n}-task chain", ex),
        ("no-op", noop),
        ("completion", comp),
    ):
        named = ", ".join(f"{k} x{v}" for k, v in step["by_endpoint"].items())
        lines.append(f"\nRequests of the {title}: {named}")
    lines.append("")
    return lines


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:3]] if len(sys.argv) > 2 else [10_000, 1_000]
    print("\n".join(report(measure(*sizes))))
