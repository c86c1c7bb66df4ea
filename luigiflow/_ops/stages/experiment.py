"""A stage of a pipeline file as the task an experiment config builds and sweeps.

    [pipeline]
    file = "pipeline.toml"      # relative to the config file
    stage = "evaluate"          # default: the pipeline's only final stage

The config's [params] and [sweep] then name the stage's parameters: its own and those
it carries from its upstream stages (`train.n_est`), as `luigiflow runs STAGE` shows
them.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import luigi

from luigiflow._errors import ConfigError, LuigiflowError
from luigiflow._ops.stages.model import load

KEYS = {"file", "stage"}


def stage_root(
    config: pathlib.Path, table: dict[str, Any], problems: list[str]
) -> tuple[type[luigi.Task], Callable[..., luigi.Task], str, dict[str, Any]]:
    """(class, factory taking the stage's parameter values, stage name, the values the
    pipeline file sets) of the stage a config's [pipeline] table names."""
    extra = sorted(set(table) - KEYS)
    if extra:
        problems.append(
            f"[pipeline]: unknown key(s) {', '.join(extra)} (with file =, known: "
            f"{', '.join(sorted(KEYS))})"
        )
    file = config.parent / str(table["file"])
    try:
        pipeline = load("pipeline", file)
    except LuigiflowError as exc:
        raise ConfigError(f"{config}: [pipeline] file: {exc}") from exc
    stage = table.get("stage")
    if stage is None:
        leaves = pipeline.leaves()
        if len(leaves) != 1:
            raise ConfigError(
                f'{config}: [pipeline] needs stage = "..." : {file} has {len(leaves)} final '
                f"stages ({', '.join(leaves)})"
            )
        stage = leaves[0]
    try:
        pipeline.check_stage(str(stage))
    except LuigiflowError as exc:
        raise ConfigError(f"{config}: [pipeline] stage: {exc}") from exc
    name = str(stage)

    def make(**values: Any) -> luigi.Task:
        return pipeline.make(name, {}, values)

    preset = getattr(pipeline.stages[name], "values", {})
    return pipeline.classes[name], make, name, dict(preset)
