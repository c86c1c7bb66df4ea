"""Scale: one experiment holding many FINISHED runs (100,000 in the full bench).

Making 100k runs through MLflow's client takes about half an hour, so the store is
seeded in bulk: one real run of `Cell(i=0)` is made by luigiflow, then its rows (run,
tags, params, metrics) are copied with plain SQL for every other `i`, each copy carrying
the identity luigiflow computes for that task. Every copy is a run luigiflow itself would
count as complete (the same tags; artifacts shared with the template run).

Then, each in a fresh process (peak RSS read from the kernel with `wait4`), with Python's
bytecode cached as once installed:
- completion: `lf.build` of `asked` finished `Cell` tasks (nothing runs; all of it is
  luigiflow's own share: a build whose roots are complete never starts Luigi's scheduler);
  the asked cells are the oldest runs, so a scan newest first would read every run;
- the same forced through Luigi's scheduler, luigiflow's share (its batch answers and
  each task's `complete()`) timed apart from Luigi's;
- `luigiflow runs Cell --limit 20`;
- `luigiflow plan` of a 1,001-task graph (1,000 reused cells under one new aggregate).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import user_seen  # bench modules beside this file

TASKS = """
import luigi
import luigiflow as lf


class Cell(lf.MlflowTask):
    artifacts = {"o": "o.json"}
    i = luigi.IntParameter()

    def run_task(self):
        self.save({"o": self.i}, metrics={"value": self.i})


class Grid(lf.MlflowTask):
    artifacts = {"o": "o.json"}
    n = luigi.IntParameter()

    def requires(self):
        return {f"c{i}": Cell(i=i) for i in range(self.n)}

    def run_task(self):
        self.save({"o": self.n})
"""

SEED = """
import json, sys
sys.path.insert(0, ".")
import luigiflow as lf
from scale_tasks import Cell

lf.build([Cell(i=0)], log_level="CRITICAL", progress=False)
n = int(sys.argv[1])
print(json.dumps({str(i): Cell(i=i).identity for i in range(n)}))
"""

COMPLETION = """
import json, sys, time
sys.path.insert(0, ".")
import luigiflow as lf
from luigiflow import _task
from luigiflow._engine import completion
from scale_tasks import Cell

own = [0.0]
if sys.argv[2] == "luigi":
    # Through Luigi's scheduler although every root is complete (a build skips it then),
    # with luigiflow's own share timed: the batch answers and each task's complete().
    completion.Completion.known_complete = lambda self, task: False
    for cls, name in ((_task.MlflowTask, "complete"), (completion.Completion, "prefetch")):
        def timed(*args, _original=getattr(cls, name), **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                own[0] += time.perf_counter() - start
        setattr(cls, name, timed)
tasks = [Cell(i=i) for i in range(int(sys.argv[1]))]
start = time.perf_counter()
result = lf.build(tasks, log_level="CRITICAL", progress=False)
seconds = time.perf_counter() - start
assert not result.executed, "every asked task should be complete"
print(json.dumps({"seconds": seconds, "luigiflow": own[0]}))
"""


# A process's peak RSS (ru_maxrss) counts the pages of the process it was forked from:
# forked from this bench process (tens of MiB), every small reading would be its size.
# A bare launcher (a few MiB) starts each timed command and reports its time and peak.
_LAUNCH = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as out:
    out.write(f"{seconds} {peak}")
sys.exit(code)
"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, float, float]:
    """stdout, wall seconds and peak RSS (MiB) of one process."""
    with tempfile.TemporaryDirectory() as tmp:
        usage = Path(tmp) / "usage"
        proc = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCH, str(usage), *cmd],
            cwd=cwd,
            env=env,
            capture_output=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.decode()[-3000:]}")
        seconds, peak = usage.read_text().split()
    return proc.stdout.decode(), float(seconds), int(peak) / 1024


def _seed(db: Path, identities: dict[str, str]) -> None:
    """Copy the one real run of Cell for every other `i`, in one transaction."""
    con = sqlite3.connect(db)
    (template, start) = con.execute(
        "SELECT run_uuid, start_time FROM runs WHERE status='FINISHED' "
        "AND experiment_id=(SELECT experiment_id FROM experiments WHERE name='Cell')"
    ).fetchone()
    run_cols = [r[1] for r in con.execute("PRAGMA table_info(runs)")]
    row = dict(
        zip(
            run_cols,
            con.execute("SELECT * FROM runs WHERE run_uuid=?", (template,)).fetchone(),
            strict=True,
        )
    )
    tags = con.execute("SELECT key, value FROM tags WHERE run_uuid=?", (template,)).fetchall()
    template_identity = identities["0"]
    for i_text, identity in identities.items():
        if i_text == "0":
            continue
        run_id = uuid.uuid4().hex
        _insert(
            con,
            "runs",
            dict(row, run_uuid=run_id, start_time=start + int(i_text), name=f"Cell(i={i_text})"),
        )
        con.executemany(
            "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
            [
                (key, _retag(key, value, template_identity, identity, i_text), run_id)
                for key, value in tags
            ],
        )
        _insert(con, "params", {"key": "i", "value": i_text, "run_uuid": run_id})
        for table in ("metrics", "latest_metrics"):
            cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
            query = f"SELECT * FROM {table} WHERE run_uuid=?"
            for metric in con.execute(query, (template,)).fetchall():
                copy = dict(zip(cols, metric, strict=True), run_uuid=run_id, value=float(i_text))
                _insert(con, table, copy)
    con.commit()
    con.close()


def _insert(con: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    marks = ", ".join("?" * len(row))
    con.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})", list(row.values()))


def _retag(key: str, value: str, old_identity: str, identity: str, i_text: str) -> str:
    if key == "mlflow.runName":
        return f"Cell(i={i_text})"
    value = value.replace(old_identity, identity)
    if key == "luigiflow.params":  # the canonical params: {"i": ["int", "0"]} -> i
        params = json.loads(value)
        params["i"] = ["int", i_text]
        return json.dumps(params, sort_keys=True, separators=(",", ":"))
    return value


def measure(runs: int, asked: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="lf-bench-scale-"))
    # As installed: bytecode cached (see user_seen.as_installed), each command started
    # once untimed first.
    env = user_seen.as_installed(
        dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db", LUIGIFLOW_PROGRESS="0")
    )
    (root / "scale_tasks.py").write_text(TASKS)
    bin_dir = Path(sys.executable).parent
    start = time.perf_counter()
    out, _, _ = _run([sys.executable, "-c", SEED, str(runs)], root, env)
    identities = json.loads(out.strip().splitlines()[-1])
    _seed(root / "mlflow.db", identities)
    seeded = time.perf_counter() - start
    print(f"scale: store seeded with {runs:,} runs in {root}", file=sys.stderr)
    result: dict[str, Any] = {"runs": runs, "asked": asked, "seed_seconds": seeded}
    out, wall, rss = _run([sys.executable, "-c", COMPLETION, str(asked), "own"], root, env)
    inner = json.loads(out.strip().splitlines()[-1])["seconds"]
    result["completion"] = {
        "wall": wall,
        "build_seconds": inner,
        "rss_mib": rss,
        "ms_per_task": inner * 1000 / asked,
    }
    out, wall, rss = _run([sys.executable, "-c", COMPLETION, str(asked), "luigi"], root, env)
    timed = json.loads(out.strip().splitlines()[-1])
    result["completion via Luigi"] = {
        "wall": wall,
        "build_seconds": timed["seconds"],
        "luigiflow_seconds": timed["luigiflow"],
        "rss_mib": rss,
    }
    luigiflow = str(bin_dir / "luigiflow")
    for name, cmd in (
        ("runs --limit 20", [luigiflow, "runs", "Cell", "--limit", "20"]),
        (
            "plan (1,001 tasks)",
            [luigiflow, "plan", "--module", "scale_tasks", "Grid", "--n", "1000"],
        ),
    ):
        _run(cmd, root, env)  # untimed: writes the bytecode cache
        _, wall, rss = _run(cmd, root, env)
        result[name] = {"wall": wall, "rss_mib": rss}
    return result


def report(result: dict[str, Any]) -> list[str]:
    c = result["completion"]
    lines = [f"## Scale: {result['runs']:,} FINISHED runs in one experiment\n"]
    lines.append(
        f"Seeded in {result['seed_seconds']:.1f} s (one real run, then SQL copies with the "
        "identities luigiflow computes).\n"
    )
    lines.append("| measurement | seconds | peak RSS MiB |\n|---|---|---|")
    lines.append(
        f"| completion of {result['asked']:,} finished tasks (`lf.build`, inside the process) "
        f"| {c['build_seconds']:.3f} ({c['ms_per_task']:.3f} ms/task) | {c['rss_mib']:.0f} |"
    )
    lines.append(f"| same, whole process | {c['wall']:.3f} | |")
    v = result.get("completion via Luigi")
    if v:
        share = v["luigiflow_seconds"]
        lines.append(
            f"| same through Luigi's scheduler (forced; a build of complete roots skips it) "
            f"| {v['build_seconds']:.3f} ({v['build_seconds'] * 1000 / result['asked']:.3f} "
            f"ms/task), luigiflow's share {share:.3f} ({share * 1000 / result['asked']:.3f} "
            f"ms/task), Luigi {v['build_seconds'] - share:.3f} | {v['rss_mib']:.0f} |"
        )
    for name in ("runs --limit 20", "plan (1,001 tasks)"):
        lines.append(
            f"| `luigiflow {name}` | {result[name]['wall']:.3f} | {result[name]['rss_mib']:.0f} |"
        )
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The scale scenario alone (scripts/bench runs it too)."
    )
    parser.add_argument("--runs", type=int, default=100_000, help="FINISHED runs seeded")
    parser.add_argument("--tasks", type=int, default=10_000, help="finished tasks asked")
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    args = parser.parse_args()
    result = measure(args.runs, args.tasks)
    print(json.dumps(result, indent=2) if args.json else "\n".join(report(result)))


if __name__ == "__main__":
    main()
