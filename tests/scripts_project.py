"""Helpers for the existing-scripts tests: a private copy of examples/scripts per test."""

from __future__ import annotations

import json
import pathlib
import re
import shutil

from tests.conftest import REPO, runs_of

EXAMPLE = REPO / "examples" / "scripts"
STAGES = ("prepare", "featurize", "train", "evaluate")


def copy_example(tmp_path: pathlib.Path) -> pathlib.Path:
    """examples/scripts copied under tmp_path, so a test may edit scripts and params."""
    project = tmp_path / "project"
    shutil.copytree(
        EXAMPLE,
        project,
        ignore=shutil.ignore_patterns("__pycache__", "mlruns", "mlflow.db", "eval", "model.pkl"),
    )
    for generated in ("data/prepared", "data/features"):
        shutil.rmtree(project / generated, ignore_errors=True)
    return project


def finished_counts(client, stages=STAGES) -> dict[str, int]:
    """stage -> number of FINISHED runs in its experiment."""
    return {stage: len(runs_of(client, stage, "FINISHED")) for stage in stages}


def summary(stdout: str) -> tuple[int, int, int]:
    """(executed, reused, failed) from the last line `luigiflow run` prints."""
    found = re.findall(r"executed (\d+), reused (\d+), failed (\d+)", stdout)
    assert found, stdout
    executed, reused, failed = found[-1]
    return int(executed), int(reused), int(failed)


def will_run(plan_stdout: str) -> set[str]:
    """Families `luigiflow plan --format json` says will run."""
    families: set[str] = set()

    def walk(entry: dict) -> None:
        if entry["status"] == "will run":
            families.add(entry["family"])
        for child in entry["upstream"].values():
            walk(child)

    for root in json.loads(plan_stdout):
        walk(root)
    return families


def append_line(path: pathlib.Path, line: str) -> None:
    path.write_text(path.read_text() + line + "\n")


GET_STARTED = REPO / "tests" / "data" / "dvc_get_started"
DVCLIVE_STANDIN = REPO / "tests" / "data" / "dvclive_standin"


def get_started_project(tmp_path: pathlib.Path, posts: int = 240) -> pathlib.Path:
    """DVC's example-get-started (its dvc.yaml, params.yaml and src/ unchanged) as a git
    repository with everything committed, and a generated `data/data.xml` of
    StackOverflow-like posts (git-ignored, as `dvc pull` would leave it)."""
    import random
    import subprocess
    from xml.sax.saxutils import quoteattr

    project = tmp_path / "get-started"
    shutil.copytree(GET_STARTED, project)
    rng = random.Random(0)
    words = ["plot", "data", "frame", "vector", "loop", "ggplot", "python", "list", "model"]
    lines = []
    for i in range(posts):
        r = rng.random() < 0.4
        title = " ".join(rng.choice(words) for _ in range(5)) + (" ggplot dplyr" if r else "")
        body = " ".join(rng.choice(words) for _ in range(20))
        tags = "<r><ggplot2>" if r else "<python><pandas>"
        lines.append(
            f"  <row Id={quoteattr(str(i + 1))} Tags={quoteattr(tags)} "
            f"Title={quoteattr(title)} Body={quoteattr(body)} />\n"
        )
    (project / "data" / "data.xml").write_text("".join(lines))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "get started"]):
        subprocess.run([*git, *args], cwd=project, check=True, capture_output=True)
    return project


def git_snapshot(project: pathlib.Path) -> tuple[str, str, list[str]]:
    """(git status --porcelain, every ref with its commit, files under .git/refs)."""
    import subprocess

    def out(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=project, check=True, capture_output=True, text=True
        ).stdout

    status = out("status", "--porcelain", "--untracked-files=all")
    refs = out("for-each-ref", "--format=%(refname) %(objectname)") + out("rev-parse", "HEAD")
    files = sorted(str(p.relative_to(project)) for p in (project / ".git" / "refs").rglob("*"))
    return status, refs, files
