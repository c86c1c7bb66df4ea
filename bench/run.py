"""luigiflow against its peers, measured in one run on this machine.

    scripts/bench            # full: N = 200 and 1000, wide check 10,000, 1 GiB artifact
    scripts/bench --quick    # N = 200, wide check 2,000, 256 MiB artifact

Peers: plain Luigi with LocalTarget files; gokart (TaskOnKart, installed by this script
when missing); the original luigiflow blog design (one MLflow search_runs on tags in
every complete()). Task bodies are trivial, so per-task overhead is what is measured.
Each measurement runs in a fresh subprocess on a fresh store; medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import one_changed  # noqa: E402
import round_trips  # noqa: E402
import scale  # noqa: E402  (bench modules beside this file)
import server_artifacts  # noqa: E402
import user_seen  # noqa: E402

SYSTEMS = ["luigiflow", "luigi", "gokart", "blog"]
NOTES_MARKER = "<!-- notes below are kept by scripts/bench -->"


def one(system: str, scenario: str, n: int, workdir: str) -> dict[str, float]:
    """Run one measurement in this process (called in a subprocess by `main`)."""
    os.chdir(workdir)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/mlflow.db"
    sys.path.insert(0, str(HERE))
    import peers

    peers.warm_up(system)  # imports and store migrations are not per-task overhead
    if system == "floor":
        return peers.mlflow_floor(n)
    if scenario in ("cold", "noop", "extend"):
        spent = peers.trust_costs() if (system, scenario) == ("luigiflow", "cold") else {}
        graph = peers.fan_graph(system)
        if scenario != "cold":
            graph.build(n)
        size = n + n // 10 if scenario == "extend" else n
        start = time.perf_counter()
        graph.build(size)
        seconds = time.perf_counter() - start
        tasks = size + 2
        costs = {f"{k}_ms_per_task": v * 1000 / tasks for k, v in spent.items()}
        return {"seconds": seconds, "ms_per_task": seconds * 1000 / tasks, **costs}
    if scenario == "wide":
        return peers.wide_check(system, n)
    if scenario == "artifact":
        return peers.artifact(system, n)
    raise ValueError(scenario)


def measure(system: str, scenario: str, n: int, repeats: int) -> dict[str, float]:
    results = []
    for _ in range(repeats):
        workdir = tempfile.mkdtemp(prefix="lf-bench-")
        try:
            out = subprocess.run(
                [sys.executable, __file__, "--one", system, scenario, str(n), workdir],
                capture_output=True,
                text=True,
                timeout=3600,
            )
            if out.returncode != 0:
                raise RuntimeError(f"{system}/{scenario}/{n} failed:\n{out.stderr[-3000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def ensure_gokart() -> bool:
    try:
        import gokart  # noqa: F401

        return True
    except ImportError:
        pass
    print("installing gokart for the comparison...", file=sys.stderr)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "gokart"])
    return done.returncode == 0


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def help_time(repeats: int = 5) -> float:
    exe = Path(sys.executable).with_name("luigiflow")
    env = user_seen.as_installed(dict(os.environ))
    subprocess.run([str(exe), "--help"], env=env, capture_output=True, check=True)  # untimed
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([str(exe), "--help"], env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(HERE.parent / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    sizes = [200] if args.quick else [200, 1000]
    wide = 2000 if args.quick else 10_000
    artifact_mib = 256 if args.quick else 1024
    systems = SYSTEMS if ensure_gokart() else [s for s in SYSTEMS if s != "gokart"]

    load_at_start = _load()
    lines: list[str] = []
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for n in sizes:
        for scenario in ("cold", "noop", "extend"):
            for system in systems:
                result = measure(system, scenario, n, args.repeats)
                rows[(f"{scenario}", n, system)] = result  # type: ignore[index]
                print(
                    f"{scenario:7} N={n:<5} {system:10} {result['seconds']:.3f}s "
                    f"{result['ms_per_task']:.2f} ms/task",
                    file=sys.stderr,
                )
    floors = {n: measure("floor", "cold", n, args.repeats) for n in sizes}
    wide_rows = {s: measure(s, "wide", wide, 1) for s in ("luigiflow", "blog")}
    art = {
        s: measure(s, "artifact", artifact_mib, args.repeats)
        for s in ("luigiflow", "mlflow", "hash")
    }
    helps = help_time()
    user = user_seen.measure(args.repeats, "gokart" in systems)
    changed = one_changed.measure(args.repeats, "gokart" in systems)
    served = server_artifacts.measure(artifact_mib)
    trips = round_trips.measure(10_000, 1_000)
    scaled = scale.measure(10_000 if args.quick else 100_000, 2_000 if args.quick else 10_000)

    lines.append("# Benchmarks\n")
    lines.append(
        f"Command: `scripts/bench{' --quick' if args.quick else ''}` — "
        f"{time.strftime('%Y-%m-%d')}, {platform.platform()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; medians of {args.repeats} runs, "
        "each in a fresh process on a fresh embedded SQLite store. "
        f"Load average at the start and end: {load_at_start} / {_load()} "
        "(other jobs on the machine slow every system alike only roughly: read the ratios "
        "of a loaded run with care).\n"
    )
    lines.append("## Fan-in graph: prep -> N train -> aggregate\n")
    lines.append(
        "| scenario | N | "
        + " | ".join(f"{s} ms/task" for s in systems)
        + " | "
        + " | ".join(f"luigiflow/{s}" for s in systems if s != "luigiflow")
        + " |"
    )
    lines.append("|" + "---|" * (2 + len(systems) + len(systems) - 1))
    for n in sizes:
        for scenario in ("cold", "noop", "extend"):
            per = {s: rows[(scenario, n, s)]["ms_per_task"] for s in systems}  # type: ignore[index]
            ratios = [f"{per['luigiflow'] / per[s]:.2f}" for s in systems if s != "luigiflow"]
            lines.append(
                f"| {scenario} | {n} | "
                + " | ".join(f"{per[s]:.2f}" for s in systems)
                + " | "
                + " | ".join(ratios)
                + " |"
            )
    lines.append(
        "\ncold: empty store, everything runs; noop: everything done, build again; "
        "extend: N done, N + 10% asked (ms per task of the asked graph).\n"
    )
    lines.append("## Cold per task against the floor\n")
    lines.append(
        "floor = MLflow's three writes per task (create with tags, one params batch, "
        "terminate) + plain Luigi's per-task cost, measured above in the same run. "
        "What trust adds is timed inside the luigiflow cold run.\n"
    )
    lines.append(
        "| N | luigiflow ms/task | MLflow writes ms/task | + Luigi = floor | ratio "
        "| claim (exactly-once) ms/task | checksums made + checked ms/task |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for n in sizes:
        cold = rows[("cold", n, "luigiflow")]  # type: ignore[index]
        floor_ms = floors[n]["ms_per_task"] + rows[("cold", n, "luigi")]["ms_per_task"]  # type: ignore[index]
        checks = cold["checksum_make_ms_per_task"] + cold["checksum_check_ms_per_task"]
        lines.append(
            f"| {n} | {cold['ms_per_task']:.2f} | {floors[n]['ms_per_task']:.2f} "
            f"| {floor_ms:.2f} | {cold['ms_per_task'] / floor_ms:.2f} "
            f"| {cold['claim_ms_per_task']:.2f} | {checks:.2f} |"
        )
    lines.append("")
    lines.append(f"## Wide check: {wide} finished independent tasks asked again\n")
    lf_ms_wide = wide_rows["luigiflow"]["ms_per_task"]
    blog_ms = wide_rows["blog"]["ms_per_task"]
    lines.append("| system | ms per finished task |\n|---|---|")
    lines.append(
        f"| luigiflow (batched lookup) | {lf_ms_wide:.3f} |\n"
        f"| blog (search per task) | {blog_ms:.3f} |"
    )
    lines.append(f"\nratio blog/luigiflow: {blog_ms / lf_ms_wide:.1f}x\n")
    lines.append(f"## Artifact: one {artifact_mib} MiB file, from save to FINISHED\n")
    lines.append("| system | seconds |\n|---|---|")
    lines.append(
        f"| luigiflow save of a file written at artifact_path_for (BLAKE3, no copy) "
        f"| {art['luigiflow']['seconds']:.3f} |"
    )
    lines.append(f"| MLflow log_artifact (copy) | {art['mlflow']['seconds']:.3f} |")
    lines.append(f"| BLAKE3 of the same file alone (the floor) | {art['hash']['seconds']:.3f} |")
    lines.append(
        f"\nratio: {art['mlflow']['seconds'] / art['luigiflow']['seconds']:.1f}x faster than "
        f"log_artifact; {art['luigiflow']['seconds'] / art['hash']['seconds']:.2f}x the hash\n"
    )
    lines.append(f"## CLI\n\n`luigiflow --help`: {helps:.3f} s (median of 5)\n")
    lines += user_seen.report(user)
    lines += one_changed.report(changed)
    lines += scale.report(scaled)
    lines += server_artifacts.report(served)
    lines += round_trips.report(trips)
    lines.append("## Targets (issues 4 and 18), from the numbers above\n")
    lines.append("| target | measured | met |\n|---|---|---|")

    def target(name: str, measured: str, met: bool) -> None:
        lines.append(f"| {name} | {measured} | {'yes' if met else 'NO'} |")

    for n in sizes:
        lf_ms = rows[("cold", n, "luigiflow")]["ms_per_task"]  # type: ignore[index]
        floor_ms = floors[n]["ms_per_task"] + rows[("cold", n, "luigi")]["ms_per_task"]  # type: ignore[index]
        target(
            f"cold N={n}: at most 1.15x the floor (MLflow's three writes + Luigi)",
            f"{lf_ms / floor_ms:.2f}x",
            lf_ms / floor_ms <= 1.15,
        )
        if "gokart" in systems:
            gk_ms = rows[("cold", n, "gokart")]["ms_per_task"]  # type: ignore[index]
            target(
                f"cold N={n}: per task no worse than gokart",
                f"{lf_ms:.2f} vs {gk_ms:.2f} ms",
                lf_ms <= gk_ms,
            )
        for scenario in ("noop", "extend"):
            ours = rows[(scenario, n, "luigiflow")]["seconds"]  # type: ignore[index]
            blog = rows[(scenario, n, "blog")]["seconds"]  # type: ignore[index]
            target(
                f"{scenario} N={n}: at least 5x faster than the blog design",
                f"{blog / ours:.1f}x",
                blog / ours >= 5,
            )
    target(
        "wide check: at most 0.5 ms per finished task, 10x faster than a search per task",
        f"{lf_ms_wide:.3f} ms, {blog_ms / lf_ms_wide:.1f}x",
        lf_ms_wide <= 0.5 and blog_ms / lf_ms_wide >= 10,
    )
    art_ratio = art["mlflow"]["seconds"] / art["luigiflow"]["seconds"]
    target("artifact: at least 5x faster than log_artifact", f"{art_ratio:.1f}x", art_ratio >= 5)
    hash_ratio = art["luigiflow"]["seconds"] / art["hash"]["seconds"]
    target(
        "artifact written in place: saved in at most 1.1x the time to hash it",
        f"{hash_ratio:.2f}x",
        hash_ratio <= 1.1,
    )
    target("`luigiflow --help` under 0.5 s", f"{helps:.3f} s", helps < 0.5)
    both = all("error" not in served[k] for k in ("upload", "download"))
    target(
        f"{artifact_mib} MiB up and down through mlflow server", "ok" if both else "failed", both
    )
    floor = user.get("dvc: repro (no-op)")
    for name, seconds in user.items():
        if floor and name.startswith("luigiflow"):
            target(f"{name}: at most 1.0x `dvc repro`", f"{seconds / floor:.2f}x", seconds <= floor)
    gokart_noop = user.get("gokart: build (no-op)")
    if gokart_noop:
        ours = user["luigiflow: run (no-op)"]
        target(
            "no-op run below gokart's no-op",
            f"{ours:.3f} vs {gokart_noop:.3f} s",
            ours < gokart_noop,
        )
    for peer, label in (("gokart", "gokart"), ("dvc", "`dvc repro` of one stage")):
        if peer in changed:
            ratio = float(changed["luigiflow"]) / float(changed[peer])  # type: ignore[arg-type]
            target(f"one changed task: at most 1.0x {label}", f"{ratio:.2f}x", ratio <= 1.0)
    target(
        "one changed task: the build does not import mlflow",
        str(changed["luigiflow imported mlflow"]),
        not changed["luigiflow imported mlflow"],
    )
    per_task = scaled["completion"]["ms_per_task"]
    target(
        f"completion of {scaled['asked']:,} tasks among {scaled['runs']:,} runs: <= 0.5 ms/task",
        f"{per_task:.3f} ms",
        per_task <= 0.5,
    )
    for name in ("runs --limit 20", "plan (1,001 tasks)"):
        wall = scaled[name]["wall"]
        target(
            f"`luigiflow {name}` among {scaled['runs']:,} runs: under 2 s",
            f"{wall:.3f} s",
            wall < 2,
        )
    steady = trips["steady"]
    target(
        "server: at most 6 requests per executed task with one small artifact (steady state; "
        "plus Luigi's completion question per level of a new chain)",
        f"{steady['per_task']:.1f} + {steady['asked_per_task']:.1f}",
        steady["per_task"] <= 6,
    )
    target(
        f"server: completion of {trips['asked']:,} finished tasks among {trips['runs']:,} runs "
        "in at most 10 requests",
        str(trips["completion"]["requests"]),
        trips["completion"]["requests"] <= 10,
    )
    lines.append("")
    text = "\n".join(lines)
    output = Path(args.output)
    if output.exists():  # hand-written reading of the numbers survives a new run
        old = output.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            text += "\n" + old[old.index(NOTES_MARKER) :]
    output.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])))
    else:
        main()
