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
