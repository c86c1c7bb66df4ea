"""Team scenario: N `luigiflow run` clients build one graph at once against an `mlflow
server`, with and without `luigid`; requests per executed task and wall time against
one client.

    python bench/team_clients.py [--clients 4] [--width 6] [--pause 0.3]

The graph is tests/dags.py's Gather (a Source, `width` Fans, a Gather). Every request
goes through the counting proxy (tests/counting_proxy.py) in front of a real `mlflow
server` (SQLite backend, proxied artifacts); each scenario runs on a fresh server
database. "executed" counts task bodies (the ledger the bodies write), so requests per
executed task include what the waiting clients cost.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.counting_proxy import counting_proxy  # noqa: E402
from tests.servers import luigid, mlflow_server  # noqa: E402


def scenario(clients: int, width: int, pause: float, with_luigid: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="team-bench-") as tmp:
        folder = Path(tmp)
        server = mlflow_server(f"sqlite:///{folder / 'server.db'}", folder / "artifacts")
        with server as url, counting_proxy(url) as (proxy, recorder):
            ledger = folder / "ledger"
            env = dict(
                os.environ,
                MLFLOW_TRACKING_URI=proxy,
                LUIGIFLOW_CACHE_DIR=str(folder / "cache"),
                PYTHONPATH=str(REPO),
                LEDGER=str(ledger),
                TASK_PAUSE=str(pause),
            )
            args = [sys.executable, "-m", "luigiflow.cli", "run", "--module", "tests.dags"]
            args += ["Gather", "--width", str(width)]
            scheduler = luigid(folder) if with_luigid else None
            url_of_luigid = scheduler.__enter__() if scheduler else None
            try:
                extra = ["--scheduler-url", url_of_luigid] if url_of_luigid else []
                start = time.perf_counter()
                procs = [
                    subprocess.Popen(
                        args + extra,
                        cwd=folder,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    for _ in range(clients)
                ]
                codes = [p.wait(timeout=900) for p in procs]
                wall = time.perf_counter() - start
            finally:
                if scheduler:
                    scheduler.__exit__(None, None, None)
            executed = len(ledger.read_text().split())
            endpoints = recorder.endpoints()
    top = ", ".join(f"{k} {v}" for k, v in endpoints.most_common(4))
    return {
        "clients": clients,
        "luigid": with_luigid,
        "exit codes": collections.Counter(codes),
        "executed": executed,
        "requests": sum(endpoints.values()),
        "per task": sum(endpoints.values()) / max(executed, 1),
        "wall s": wall,
        "top": top,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--width", type=int, default=6)
    parser.add_argument("--pause", type=float, default=0.3)
    options = parser.parse_args()
    for with_luigid in (False, True):
        for clients in (1, options.clients):
            row = scenario(clients, options.width, options.pause, with_luigid)
            print(
                f"{'luigid' if with_luigid else 'lease '} clients={row['clients']}: "
                f"executed {row['executed']}, {row['requests']} requests, "
                f"{row['per task']:.1f} per executed task, {row['wall s']:.1f} s, "
                f"exit {dict(row['exit codes'])}; most: {row['top']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
