"""Pipeline files (TOML): stages declared with no Python, run in scratch folders.

    [params]                                   # the parameter tree stages pick keys from
    train = { n_est = 20, seed = 1 }

    [stages.train]
    cmd = ["python", "src/train.py", "features", "model.pkl"]   # a list: the words;
                                               # a string: run by the shell
    deps = ["src/train.py", "features"]        # files copied in; an output of another
                                               # stage makes that stage upstream
    params = ["train.n_est", "train.seed"]     # keys of [params], or a table of values
    params_file = "params.yaml"                # where they are written (default)
    outs = ["model.pkl"]                       # or a table {name = "path"}
    metrics = "metrics.json"                   # logged as MLflow metrics
    plots = ["plots/roc.json"]
    inputs = { "numbers.json" = "numbers.numbers" }   # an artifact of a stage at a path

    [stages.numbers]
    task = "mymodule:Numbers"                  # a Python task class
    params = { count = 5 }

    [stages.load]
    mlproject = "loader"                       # an MLflow Project folder
    entry_point = "load"
    params = { table = "transactions" }

Every problem in the file is reported at once, before anything runs.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import sys
import tomllib
from typing import Any

from luigiflow._core import templating
from luigiflow._core.parameters import checked_config_value
from luigiflow._errors import ConfigError, LuigiflowError
from luigiflow._ops.stages.mlproject import stage as mlproject_stage
from luigiflow._ops.stages.spec import CommandStage, Stage, TaskStage, string_list, unknown_keys

TOP_LEVEL = {"params", "stages"}
COMMAND_KEYS = {
    "cmd", "deps", "inputs", "params", "params_file", "outs", "metrics", "plots",
    "wdir", "env", "experiment", "desc",
}  # fmt: skip
TASK_KEYS = {"task", "params", "desc"}
MLPROJECT_KEYS = {"mlproject", "entry_point", "params", "deps", "inputs", "outs", "metrics",
                  "plots", "env", "experiment", "desc"}  # fmt: skip


def read(path: pathlib.Path) -> list[Stage]:
    """The stages of a pipeline file; raises ConfigError listing every problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    problems = [
        "[sweep] goes in an experiment config naming this file: [pipeline] file = "
        f'"{path.name}", then luigiflow run --config THAT_FILE'
        if k == "sweep"
        else f"unknown top-level key {k!r} (known: {', '.join(sorted(TOP_LEVEL))})"
        for k in data
        if k not in TOP_LEVEL
    ]
    tree = data.get("params", {})
    stages_raw = data.get("stages", {})
    if not isinstance(stages_raw, dict) or not stages_raw:
        problems.append("no [stages.NAME] table")
        stages_raw = {}
    root = path.parent
    stages: list[Stage] = []
    for name, raw in stages_raw.items():
        where = f"stage {name!r}"
        if not isinstance(raw, dict):
            problems.append(f"{where} must be a table")
            continue
        if "task" in raw:
            stage: Stage | None = _task_stage(name, raw, root, problems)
        elif "mlproject" in raw:
            stage = mlproject_stage(name, raw, root, MLPROJECT_KEYS, problems)
        else:
            stage = _command_stage(name, raw, root, tree, problems)
        if stage is not None:
            stages.append(stage)
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s): " + "; ".join(problems))
    return stages


def _command_stage(
    name: str, raw: dict[str, Any], root: pathlib.Path, tree: dict[str, Any], problems: list[str]
) -> CommandStage | None:
    where = f"stage {name!r}"
    unknown_keys(where, raw, COMMAND_KEYS, problems)
    cmd = raw.get("cmd")
    if not (isinstance(cmd, str) and cmd.strip()) and not (
        isinstance(cmd, list) and cmd and all(isinstance(w, str) for w in cmd)
    ):
        problems.append(f"{where}: cmd must be a list of words or a shell string, got {cmd!r}")
        return None
    stage = CommandStage(name=name, root=root, command=cmd)
    stage.workdir = str(raw.get("wdir", "."))
    stage.deps = string_list(where, "deps", raw.get("deps"), problems)
    stage.metrics = string_list(where, "metrics", raw.get("metrics"), problems)
    stage.plots = string_list(where, "plots", raw.get("plots"), problems)
    outs = raw.get("outs", [])
    if isinstance(outs, dict):
        stage.out_names = {str(k): str(v) for k, v in outs.items()}
        stage.outs = list(stage.out_names.values())
    else:
        stage.outs = string_list(where, "outs", outs, problems)
    inputs = raw.get("inputs", {})
    if not isinstance(inputs, dict):
        problems.append(f'{where}: inputs must be a table of path = "stage.artifact"')
    else:
        stage.inputs = {str(k): str(v) for k, v in inputs.items()}
    env = raw.get("env", {})
    if not isinstance(env, dict):
        problems.append(f'{where}: env must be a table of NAME = "value"')
    else:
        stage.environment = {str(k): str(v) for k, v in env.items()}
    stage.experiment = raw.get("experiment")
    stage.params = stage_params(where, raw.get("params"), tree, problems)
    stage.shared_params = not isinstance(raw.get("params"), dict)
    if stage.params:
        stage.params_file = str(raw.get("params_file", "params.yaml"))
    elif "params_file" in raw:
        problems.append(f"{where}: params_file given but no params")
    return stage


def stage_params(where: str, raw: Any, tree: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """A list of dotted keys of [params], or a table of the stage's own values."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    keys = string_list(where, "params", raw, problems)
    values = {}
    for key in keys:
        try:
            values[key] = templating.lookup(tree, key)
        except templating.TemplateError:
            problems.append(f"{where}: params key {key!r} is not in [params]")
    return values


def _task_stage(
    name: str, raw: dict[str, Any], root: pathlib.Path, problems: list[str]
) -> TaskStage | None:
    where = f"stage {name!r}"
    unknown_keys(where, raw, TASK_KEYS, problems)
    ref = str(raw["task"])
    module, sep, cls_name = ref.replace(":", ".").rpartition(".")
    if not sep or not module:
        problems.append(f"{where}: task {ref!r} must look like 'module:Class'")
        return None
    for folder in (str(root), os.getcwd()):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError) as exc:
        problems.append(f"{where}: cannot import task {ref!r}: {exc}")
        return None
    except LuigiflowError as exc:
        problems.append(f"{where}: task {ref!r}: {exc}")
        return None
    own = dict(cls.get_params())
    values = {}
    for key, value in dict(raw.get("params", {})).items():
        if key not in own:
            problems.append(
                f"{where}: {cls_name} has no parameter {key!r} (known: {', '.join(own)})"
            )
            continue
        values[key] = checked_config_value(own[key], value, f"{where} params.{key}", problems)
    return TaskStage(name=name, task_class=cls, values=values)
