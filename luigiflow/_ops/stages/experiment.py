"""A stage of a pipeline file or dvc.yaml as the task an experiment config builds and
sweeps.

    [pipeline]
    file = "pipeline.toml"      # relative to the config file; or dvc = "dvc.yaml"
    stage = "evaluate"          # default: the pipeline's only final stage

The config's [params] and [sweep] then name the stage's parameters: its own and those
it carries from its upstream stages (`train.n_est`), as `luigiflow runs STAGE` shows
them. A dvc.yaml's stages read their values from the params files themselves, so each
point is built on its own while the files hold its values, as with `--set`
(`point_overlay`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import luigi

from luigiflow._errors import ConfigError, LuigiflowError
from luigiflow._ops.stages.model import load

KEYS = {"file", "dvc", "stage"}

# A root task of a dvc.yaml config -> the block during which the params files hold its
# values (`Pipeline.params_overlay`).
PointOverlay = Callable[[luigi.Task], AbstractContextManager[list[str]]]


def stage_root(
    config: pathlib.Path, table: dict[str, Any], problems: list[str]
) -> tuple[type[luigi.Task], Callable[..., luigi.Task], str, dict[str, Any], PointOverlay | None]:
    """(class, factory taking the stage's parameter values, stage name, the values the
    pipeline file sets, a dvc.yaml's point overlay) of the stage a config's [pipeline]
    table names."""
    kind, key = ("dvc", "dvc") if "dvc" in table else ("pipeline", "file")
    extra = sorted(set(table) - KEYS)
    if extra or ("dvc" in table and "file" in table):
        problems.append(
            f"[pipeline]: unknown key(s) {', '.join(extra) or 'file with dvc'} (with "
            f"{key} =, known: {key}, stage)"
        )
    file = config.parent / str(table[key])
    try:
        pipeline = load(kind, file)
    except LuigiflowError as exc:
        raise ConfigError(f"{config}: [pipeline] {key}: {exc}") from exc
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

    def overlay(task: luigi.Task) -> AbstractContextManager[list[str]]:
        return pipeline.params_overlay(pipeline.file_overrides(task))

    preset = getattr(pipeline.stages[name], "values", {})
    point_overlay = overlay if kind == "dvc" else None
    return pipeline.classes[name], make, name, dict(preset), point_overlay


def build_points(
    roots: list[luigi.Task],
    overlay: PointOverlay,
    build: Callable[[list[luigi.Task], list[luigi.Task]], Any],
    force: Sequence[luigi.Task] = (),
) -> list[Any]:
    """Build each root of a dvc.yaml config alone, while the params files hold its values
    (its stages run in the project folder and read them there, so two points never run
    at once); returns each build's result. `build(roots, force)`; a task to force runs
    once, in the first point that has it (a stage shared by the points too)."""
    results = []
    ran: set[str] = set()
    for root in roots:
        with overlay(root):
            result = build([root], [t for t in force if t.task_id not in ran])
        ran.update(t.task_id for t in result.executed)
        results.append(result)
    return results
