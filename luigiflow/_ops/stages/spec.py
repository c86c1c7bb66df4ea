"""Stages as read from a file, before they become task classes (shared by the readers)."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any

import luigi

from luigiflow._command.task import artifact_names


@dataclass
class StageSource:
    """Where a stage was declared: recorded on its runs so `reproduce` can rebuild it."""

    kind: str
    path: str
    stage: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path, "stage": self.stage}


@dataclass
class CommandStage:
    """A command stage as read from a file, before it becomes a class."""

    name: str
    root: pathlib.Path
    command: Any = None  # list of words, or a shell string
    commands: list[Any] = field(default_factory=list)
    workdir: str = "."
    deps: list[str] = field(default_factory=list)  # project-relative paths
    inputs: dict[str, str] = field(default_factory=dict)  # path -> "stage.artifact"
    outs: list[str] = field(default_factory=list)
    out_names: dict[str, str] = field(default_factory=dict)  # explicit artifact names
    metrics: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # name -> value
    shared_params: bool = False  # names are keys of the file's [params] tree, shared by stages
    params_file: str | None = None
    params_from: dict[str, str] = field(default_factory=dict)  # name -> file it is read from
    in_place: bool = False
    persist: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    host_environment: dict[str, str] = field(default_factory=dict)  # DVC_ROOT, DVC_STAGE
    joins_mlflow_run: bool = False
    quote_values: bool = False
    experiment: str | None = None
    frozen: bool = False  # DVC: never run; its outputs are data files of the workspace
    always_changed: bool = False  # DVC: runs in every build
    metadata: dict[str, Any] = field(default_factory=dict)  # desc, meta, artifacts, plots

    def declared(self) -> dict[str, str]:
        outs: dict[str, str] | list[str] = self.out_names or self.outs
        return artifact_names(outs, self.metrics, self.plots)


@dataclass
class TaskStage:
    """A stage that names a Python task class and its parameter values."""

    name: str
    task_class: type[luigi.Task]
    values: dict[str, Any] = field(default_factory=dict)


Stage = CommandStage | TaskStage


def unknown_keys(where: str, raw: dict[str, Any], known: set[str], problems: list[str]) -> None:
    for key in raw:
        if key not in known:
            problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")


def string_list(where: str, key: str, raw: Any, problems: list[str]) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return list(raw)
    problems.append(f"{where}: {key} must be a string or a list of strings, got {raw!r}")
    return []
