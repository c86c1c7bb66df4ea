"""A user's project shaped like DVC's example-get-started: helper modules under src/,
a data file, a pipeline module, all in their own git repository under tmp_path."""

from __future__ import annotations

import pathlib
import subprocess

from tests.conftest import luigiflow_cli

FEATURIZATION = '''\
"""Featurization helpers (a module of the user's project)."""
from src.params import NGRAMS


def featurize(rows):
    # one number per row
    return [len(row) * NGRAMS for row in rows]


def unrelated(x):
    return x + 1
'''

PARAMS = """\
NGRAMS = 2
UNUSED = 7
"""

PIPELINE = """\
import luigi

import luigiflow as lf
from src import featurization


class Prepare(lf.MlflowTask):
    artifacts = {"rows": "rows.json"}
    data = lf.FileParameter(default="data/data.xml")

    def run_task(self):
        with open(self.data) as f:
            rows = f.read().split()
        self.save({"rows": rows}, metrics={"rows": len(rows)})


class Split(lf.MlflowTask):
    artifacts = {"train": "train.json", "test": "test.json"}
    test_size = luigi.FloatParameter(default=0.2)

    def requires(self):
        return {"data": Prepare()}

    def run_task(self):
        rows = self.load("data", "rows")
        n = max(1, int(len(rows) * self.test_size))
        self.save({"train": rows[n:], "test": rows[:n]})


class Featurize(lf.MlflowTask):
    artifacts = {"features": "features.json"}

    def requires(self):
        return {"split": Split()}

    def run_task(self):
        self.save({"features": featurization.featurize(self.load("split", "train"))})


class Train(lf.MlflowTask):
    artifacts = {"model": "model.json"}

    def requires(self):
        return {"features": Featurize()}

    def run_task(self):
        total = sum(self.load("features"))
        self.save({"model": total}, metrics={"total": total})


class Report(lf.MlflowTask):
    artifacts = {"n": "n.json"}

    def requires(self):
        return {"split": Split()}

    def run_task(self):
        self.save({"n": len(self.load("split", "test"))})


class All(lf.MlflowTask):
    artifacts = {"done": "done.json"}

    def requires(self):
        return {"train": Train(), "report": Report()}

    def run_task(self):
        self.save({"done": True})
"""

DATA = "alpha beta gamma delta epsilon zeta eta theta iota kappa\n"


def git(cwd: pathlib.Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def make_project(tmp_path: pathlib.Path, pipeline: str = PIPELINE) -> pathlib.Path:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "data").mkdir()
    (project / "src" / "__init__.py").write_text("")
    (project / "src" / "featurization.py").write_text(FEATURIZATION)
    (project / "src" / "params.py").write_text(PARAMS)
    (project / "pipeline.py").write_text(pipeline)
    (project / "data" / "data.xml").write_text(DATA)
    git(project, "init", "-q")
    git(project, "add", ".")
    git(project, "commit", "-qm", "init")
    return project


def edit(path: pathlib.Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def cli(project: pathlib.Path, *args: str, check: bool = True):
    return luigiflow_cli(*args, cwd=project, check=check)


def plan_json(project: pathlib.Path, *args: str) -> dict:
    import json

    return json.loads(
        cli(project, "plan", "--module", "pipeline", *args, "--format", "json").stdout
    )[0]


def entries(plan: dict) -> dict[str, dict]:
    """Family -> plan entry, for every task of a plan tree."""
    found: dict[str, dict] = {}

    def walk(entry: dict) -> None:
        found.setdefault(entry["family"], entry)
        for child in entry["upstream"].values():
            walk(child)

    walk(plan)
    return found


def executed(out: str) -> set[str]:
    """Families the `luigiflow run` table lists as executed."""
    done = set()
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if len(cells) >= 2 and cells[1] == "executed":
            done.add(cells[0].split("(")[0])
    return done
