"""Per-build state lives in a session that travels with the tasks to any worker process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing, sys
    if __name__ == "__main__":
        multiprocessing.set_start_method(sys.argv[1], force=True)
        import luigiflow as lf
        from tests.dags import Gather
        first = lf.build([Gather(width=3)], workers=2, log_level="WARNING")
        second = lf.build([Gather(width=3)], workers=2, log_level="WARNING")
        print(json.dumps({
            "first_executed": sorted(t.task_id for t in first.executed),
            "first_runs": len(first.runs),
            "second_executed": len(second.executed),
            "second_reused": len(second.reused),
        }))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["forkserver"])
def test_multi_worker_build_reports_what_ran_under_any_start_method(store, tmp_path, method):
    script = tmp_path / "go.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), method],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # Gather(width=3) needs Fan(0..2) and Source: five runs, all executed by workers.
    assert len(report["first_executed"]) == 5, report
    assert report["first_runs"] == 5
    assert report["second_executed"] == 0 and report["second_reused"] == 5
