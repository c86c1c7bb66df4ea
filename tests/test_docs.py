"""Every Python block of README.md and docs/**/*.md runs as written, and the documentation
site builds in MkDocs' strict mode (broken links, unknown API names fail).

A block whose first line is `# fragment: <reason>` only has to compile; the reason
is visible to the reader, right in the block.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts servers or subprocesses (see scripts/test --fast)


REPO = pathlib.Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[tuple[str, str]]:
    found = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{page.relative_to(REPO)}:{line}", match.group(1)))
    return found


BLOCKS = python_blocks()


def test_the_docs_have_runnable_blocks():
    runnable = [where for where, code in BLOCKS if not code.startswith("# fragment:")]
    assert any(where.startswith("README.md") for where in runnable), "quick start must run"


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_block_runs(where, code, store, tmp_path):
    compile(code, where, "exec")
    if code.startswith("# fragment:"):
        reason = code.splitlines()[0].removeprefix("# fragment:").strip()
        assert len(reason) > 10, f"{where}: a fragment says why it cannot run on its own"
        return
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"{where} failed:\n{out.stderr[-3000:]}"


def test_the_documentation_site_builds_strict(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-5000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text(encoding="utf-8")
    for name in ("luigiflow.MlflowTask", "luigiflow.build", "luigiflow.runs"):
        assert f'id="{name}"' in reference, name  # generated from the docstrings
    guides = sorted(p.stem for p in (REPO / "docs" / "guides").glob("*.md"))
    assert guides == ["from-dvc", "from-gokart", "from-kedro", "from-luigi", "from-optuna"]
