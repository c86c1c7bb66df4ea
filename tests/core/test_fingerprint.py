"""The deep code fingerprint on a small project: what is followed and what never is."""

from __future__ import annotations

import importlib
import json
import pathlib
import sys

import pytest

from luigiflow._core import fingerprint

TASKS = """
import json as _json

import luigi

import luigiflow as lf
from vendor.lib import vendored
from helpers import scale, Scaler
import helpers as h


class Upstream(lf.MlflowTask):
    def run_task(self):
        pass


class Task(lf.MlflowTask):
    def requires(self):
        return {"up": Upstream()}

    def run_task(self):
        _json.dumps(scale(1) + h.OFFSET + Scaler().k + vendored())
"""

HELPERS = """
FACTOR = 2
OFFSET = 1
UNUSED = 3


def scale(x):
    return x * FACTOR


class Scaler:
    k = 4
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)
    (root / "tasks_fp.py").write_text(TASKS)
    (root / "helpers.py").write_text(HELPERS)
    lib = root / "vendor" / "lib"
    lib.mkdir(parents=True)
    (root / "vendor" / "__init__.py").write_text("")
    (lib / "__init__.py").write_text("def vendored():\n    return 0\n")
    # vendor/lib is an editable install of another distribution: a library, not our code
    dist = tmp_path / "site" / "vendorlib-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vendorlib\nVersion: 1.0\n")
    (dist / "direct_url.json").write_text(
        json.dumps({"url": (lib).as_uri(), "dir_info": {"editable": True}})
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(root))
    fingerprint._editable_roots.cache_clear()
    fingerprint.fingerprint.cache_clear()
    for name in ("tasks_fp", "helpers", "vendor", "vendor.lib"):
        sys.modules.pop(name, None)
    yield root
    fingerprint._editable_roots.cache_clear()
    fingerprint.fingerprint.cache_clear()
    for name in ("tasks_fp", "helpers", "vendor", "vendor.lib"):
        sys.modules.pop(name, None)


def parts_of(root: pathlib.Path) -> dict[str, str]:
    fingerprint.fingerprint.cache_clear()
    for name in ("tasks_fp", "helpers"):
        sys.modules.pop(name, None)
    module = importlib.import_module("tasks_fp")
    return fingerprint.fingerprint(module.Task).parts


def test_follows_project_code_only(project):
    assert set(parts_of(project)) == {
        "tasks_fp.py: Task",
        "helpers.py: scale()",
        "helpers.py: FACTOR",
        "helpers.py: OFFSET",
        "helpers.py: Scaler",
    }


def test_only_used_code_counts(project):
    before = parts_of(project)
    helpers = project / "helpers.py"
    helpers.write_text(HELPERS.replace("UNUSED = 3", "UNUSED = 4") + "\n# a comment\n")
    assert parts_of(project) == before
    helpers.write_text(HELPERS.replace("FACTOR = 2", "FACTOR = 5"))
    after = parts_of(project)
    assert fingerprint.changed_parts(before, after) == ["helpers.py: FACTOR"]


REGISTRY = """
import luigiflow as lf


class Algorithm:
    registry = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Algorithm.registry[cls.__name__.lower()] = cls


class Linear(Algorithm):
    def fit(self):
        return 1


class Forest(Algorithm):
    def fit(self):
        return 2


ALGORITHMS = Algorithm.registry


class Train(lf.MlflowTask):
    def run_task(self):
        ALGORITHMS["linear"]().fit()
"""


def test_classes_handed_out_by_a_registry_in_the_same_module_count(project):
    """A registry filled by subclassing: editing a registered class is a code change."""
    (project / "registry_fp.py").write_text(REGISTRY)

    def parts() -> dict[str, str]:
        fingerprint.fingerprint.cache_clear()
        sys.modules.pop("registry_fp", None)
        return fingerprint.fingerprint(importlib.import_module("registry_fp").Train).parts

    before = parts()
    assert set(before) == {
        "registry_fp.py: Train",
        "registry_fp.py: ALGORITHMS",
        "registry_fp.py: Algorithm",
        "registry_fp.py: Linear",
        "registry_fp.py: Forest",
    }
    (project / "registry_fp.py").write_text(REGISTRY.replace("return 2", "return 3"))
    assert fingerprint.changed_parts(before, parts()) == ["registry_fp.py: Forest"]
    sys.modules.pop("registry_fp", None)


LAZY = """
from typing import TYPE_CHECKING

import luigiflow as lf

if TYPE_CHECKING:
    import heavy.sub
    import outside.sub


class Lazy(lf.MlflowTask):
    def run_task(self):
        heavy.sub.work()
        outside.sub.work()
"""


def test_fingerprinting_never_imports_a_module(project, tmp_path):
    """Names are resolved from source text: a package the task module never imported
    (here behind TYPE_CHECKING; MLflow's `mlflow.sklearn` in real code) stays unimported,
    inside the project or not (importing `pkg.sub` would run `pkg/__init__.py`)."""
    (project / "lazy_fp.py").write_text(LAZY)
    for root, name in ((project, "heavy"), (tmp_path / "elsewhere", "outside")):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text("raise RuntimeError('imported')\n")
        (root / name / "sub.py").write_text("def work():\n    return 1\n")
    sys.path.append(str(tmp_path / "elsewhere"))
    try:
        fingerprint.fingerprint.cache_clear()
        parts = fingerprint.fingerprint(importlib.import_module("lazy_fp").Lazy).parts
    finally:
        sys.path.remove(str(tmp_path / "elsewhere"))
        sys.modules.pop("lazy_fp", None)
    assert "heavy" not in sys.modules and "outside" not in sys.modules
    assert set(parts) == {"lazy_fp.py: Lazy", "heavy/sub.py: work()"}
