"""A large artifact through `mlflow server` with proxied artifacts (`--artifacts-destination`).

MLflow users report uploads failing above ~800 MB. A luigiflow task writes `mib` MiB at
`artifact_path_for` and saves it; the build uploads it (after its BLAKE3 checksum) to
the server; a second process loads it back through the server (`load_output`, which
verifies the checksum). Both must succeed; their throughput is reported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

TASKS = """
import os
import luigi
import luigiflow as lf


class Big(lf.MlflowTask):
    artifacts = {"blob": "blob.bin"}
    mib = luigi.IntParameter()

    def run_task(self):
        path = self.artifact_path_for("blob")
        chunk = os.urandom(1 << 20)
        with open(path, "wb") as f:
            for _ in range(self.mib):
                f.write(chunk)
        self.save({"blob": path})
"""

UPLOAD = """
import sys, time, json
sys.path.insert(0, ".")
import luigiflow as lf
from big_tasks import Big
import mlflow  # imports are not the transfer
start = time.perf_counter()
lf.build([Big(mib=int(sys.argv[1]))], log_level="CRITICAL", progress=False)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""

DOWNLOAD = """
import sys, time, json, os
sys.path.insert(0, ".")
from big_tasks import Big
import mlflow  # imports are not the transfer
start = time.perf_counter()
path = Big(mib=int(sys.argv[1])).load_output("blob")
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "bytes": os.path.getsize(path)}))
"""


def measure(mib: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from tests.servers import start_mlflow, stop

    root = Path(tempfile.mkdtemp(prefix="lf-bench-server-"))
    proc = None
    try:
        proc, url = start_mlflow(f"sqlite:///{root}/server.db", root / "served")
        env = dict(os.environ, MLFLOW_TRACKING_URI=url, LUIGIFLOW_PROGRESS="0")
        (root / "big_tasks.py").write_text(TASKS)
        result: dict[str, Any] = {"mib": mib}
        for name, code in (("upload", UPLOAD), ("download", DOWNLOAD)):
            out = subprocess.run(
                [sys.executable, "-c", code, str(mib)],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=3600,
            )
            if out.returncode != 0:
                result[name] = {"error": out.stderr.strip().splitlines()[-1][:300]}
                continue
            result[name] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def report(result: dict[str, Any]) -> list[str]:
    mib = result["mib"]
    lines = [f"## A {mib} MiB artifact through `mlflow server` (proxied artifacts)\n"]
    lines.append("| step | outcome | seconds | MiB/s |\n|---|---|---|---|")
    for name, what in (
        ("upload", "build: write, BLAKE3, upload, FINISHED"),
        ("download", "`load_output` in a fresh process: download, verify"),
    ):
        step = result[name]
        if "error" in step:
            lines.append(f"| {what} | FAILED: {step['error']} | | |")
        else:
            ok = "ok" if name == "upload" or step["bytes"] == mib << 20 else "WRONG SIZE"
            lines.append(f"| {what} | {ok} | {step['seconds']:.2f} | {mib / step['seconds']:.0f} |")
    lines.append("")
    return lines


if __name__ == "__main__":
    print("\n".join(report(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 64))))
