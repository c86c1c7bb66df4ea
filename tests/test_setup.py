"""Setup installs exactly what the lock file pins (reproducible installs)."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import re
import tomllib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements.lock"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(applicable_only: bool = False) -> dict[str, str]:
    """name -> pinned version; with `applicable_only`, the pins whose marker fits here."""
    from packaging.markers import Marker

    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement, _, marker = line.partition(";")
        name, sep, version = requirement.partition("==")
        assert sep, f"{LOCK.name}: {line!r} is not pinned with =="
        if applicable_only and marker.strip() and not Marker(marker).evaluate():
            continue
        pins[canonical(name.split("[")[0])] = version.strip()
    return pins


def test_lock_pins_every_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pins = locked()
    for requirement in declared:
        name = canonical(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0])
        assert name in pins, f"{name} is declared in pyproject.toml but not in {LOCK.name}"


@pytest.mark.skipif(
    bool(os.environ.get("LUIGIFLOW_RESOLUTION")),
    reason="a venv of the lowest or newest versions (LUIGIFLOW_RESOLUTION) is not the lock's",
)
def test_this_environment_has_the_locked_versions():
    wrong = {}
    for name, version in locked(applicable_only=True).items():
        installed = importlib.metadata.version(name)
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"installed versions differ from {LOCK.name}: {wrong}"
