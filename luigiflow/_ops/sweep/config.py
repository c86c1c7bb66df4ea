"""Experiment config files: which task, its parameter values, per-step defaults, a sweep.

    [pipeline]
    module = "examples.tabular"
    task = "Evaluate"
    # or a stage of a pipeline file: file = "pipeline.toml", stage = "evaluate"
    # (or of a dvc.yaml: dvc = "dvc.yaml", its params.yaml keys as parameters)
    # (see luigiflow/_ops/stages/experiment.py; no [steps] then)

    [params]                    # parameters of the task built (a choice names an implementation)
    algorithm = "rf"

    [steps.Split]               # defaults for any task class of the graph (Luigi's [Split] section)
    test_size = 0.3

    [sweep]                     # optional: many graphs in one build
    metric = "roc_auc"          # goal = "max" (default) or "min"
    [sweep.grid]
    logic = ["plain", "standardized", "pca"]
    algorithm = ["logreg", "rf", "gb"]
    # or [sweep.random] with seed, count and [sweep.random.params] (lists, or
    # {uniform = [a, b]}, {loguniform = [a, b]}, {int = [a, b]})
    # or [sweep.optuna] with trials, seed, batch, storage, study, pruner and
    # [sweep.optuna.params] (the same space; an adaptive search, each trial a task:
    # _ops/sweep/adaptive.py)

The whole file is checked before anything runs, and every problem is reported at once.
"""

from __future__ import annotations

import itertools
import math
import pathlib
import random
import tomllib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import luigi

from luigiflow._core.identity import value_text
from luigiflow._core.parameters import checked_config_value
from luigiflow._engine import luigi_compat
from luigiflow._errors import ConfigError, LuigiflowError
from luigiflow._ops import overrides
from luigiflow._ops.modules import import_module, task_class

SECTIONS = {"pipeline", "params", "steps", "sweep"}


@dataclass
class Sweep:
    """The expanded sweep: one parameter dict per combination, in order."""

    kind: str
    combinations: list[dict[str, Any]]
    swept: list[str]
    metric: str | None = None
    goal: str = "max"
    log_scaled: list[str] = field(default_factory=list)  # drawn log-uniformly: log axes
    # [sweep.optuna]: the search space and settings; the combinations are the trials
    # asked so far (luigiflow/_ops/sweep/adaptive.py fills them in).
    space: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    pruned_runs: list[str] = field(default_factory=list)  # trials a pruner stopped: linked too


@dataclass
class ExperimentConfig:
    path: pathlib.Path
    module: str
    task_class: type[luigi.Task]
    params: dict[str, Any]
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: Sweep | None = None
    factory: Callable[..., luigi.Task] | None = None  # a stage: made by its pipeline
    # A dvc.yaml stage: each root is built alone while the params files hold its values
    # (luigiflow/_ops/stages/experiment.py).
    point_overlay: Callable[[luigi.Task], AbstractContextManager[list[str]]] | None = None

    def task_for(self, combo: dict[str, Any]) -> luigi.Task:
        """The root task of one sweep point."""
        make = self.factory or self.task_class
        return make(**{**self.params, **combo})

    def tasks(self) -> list[luigi.Task]:
        """The root tasks: one, or one per sweep combination."""
        combos = self.sweep.combinations if self.sweep else [{}]
        roots = [self.task_for(combo) for combo in combos]
        steps = [
            overrides.Override(
                step,
                key,
                value_text(raw),
                f"[steps.{step}] {key} = {overrides.shown(key, value_text(raw))} in {self.path}",
            )
            for step, values in self.steps.items()
            for key, raw in values.items()
        ]
        overrides.check(roots, steps, ConfigError)
        return roots


def load(path: str | pathlib.Path, dvc: str | pathlib.Path | None = None) -> ExperimentConfig:
    """Read and validate a config; raises ConfigError listing every problem. `dvc`: the
    dvc.yaml given on the command line (`--dvc`), as `[pipeline] dvc = ...` would."""
    path = pathlib.Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    problems = [
        f"unknown section [{k}] (known: {', '.join(sorted(SECTIONS))})"
        for k in data
        if k not in SECTIONS
    ]
    if "stages" in data:
        raise ConfigError(
            f"{path} is a pipeline file (it has [stages]): run it with --pipeline {path}, or "
            'name it from an experiment config: [pipeline] file = "..."'
        )
    pipeline: Any = dict(data.get("pipeline", {}))
    if dvc is not None:
        dvc_file = pathlib.Path(dvc).resolve()
        named = pipeline.get("dvc")
        if "file" in pipeline or "module" in pipeline:
            raise ConfigError(
                f"{path}: [pipeline] names a pipeline file or module instead of --dvc {dvc}"
            )
        if named is not None and (path.parent / str(named)).resolve() != dvc_file:
            raise ConfigError(f"{path}: [pipeline] names another dvc.yaml than --dvc: {named}")
        pipeline["dvc"] = str(dvc_file)
    factory, steps_raw = None, data.get("steps", {})
    preset: dict[str, Any] = {}  # values a pipeline file gives a Python task stage
    point_overlay = None
    if "file" in pipeline or "dvc" in pipeline:
        from luigiflow._ops.stages.experiment import stage_root

        cls, factory, name, preset, point_overlay = stage_root(path, pipeline, problems)
        module = str(cls.__module__)
        if steps_raw:
            problems.append(
                "[steps]: a pipeline file's stages take no step defaults; set upstream "
                'values in [params] by the names the stage shows ("train.n_est" = 50)'
            )
            steps_raw = {}
    else:
        module, name = pipeline.get("module"), pipeline.get("task")
        if not module or not name:
            raise ConfigError(
                f'{path}: [pipeline] needs module = "..." and task = "..." (or a pipeline '
                'file\'s stage: file = "..." and stage = "...")'
            )
        try:
            import_module(module)
            cls = task_class(name, module)
        except LuigiflowError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    own = dict(cls.get_params())

    params: dict[str, Any] = {}
    for key, raw in data.get("params", {}).items():
        if key not in own:
            problems.append(
                f"[params] {key}: {name} has no parameter {key!r} (known: {', '.join(own)})"
            )
            continue
        params[key] = checked_config_value(own[key], raw, f"[params] {key}", problems)

    steps: dict[str, dict[str, Any]] = {}
    registry = luigi_compat.registry()
    for step, values in steps_raw.items():
        step_cls = registry.get(step)
        if step_cls is None or getattr(step_cls, "__module__", None) != module:
            problems.append(f"[steps.{step}]: unknown step (no task class {step!r} in {module})")
            continue
        step_params = dict(step_cls.get_params())
        for key, raw in values.items():
            if key not in step_params:
                problems.append(
                    f"[steps.{step}] {key}: unknown parameter (known: {', '.join(step_params)})"
                )
                continue
            checked_config_value(step_params[key], raw, f"[steps.{step}] {key}", problems)
        steps[step] = dict(values)

    sweep = _load_sweep(data.get("sweep"), own, name, problems)
    if point_overlay is not None and sweep is not None and sweep.kind == "optuna":
        # Its trials are built in batches with the params files as they are: the stages
        # would read other values than their runs record.
        problems.append(
            "[sweep.optuna] over a dvc.yaml is not supported (its stages read the params "
            "files themselves); use [sweep.grid] or [sweep.random]"
        )
    swept = set(sweep.swept) if sweep else set()
    for key, param in own.items():
        given = key in params or key in swept or key in preset
        if not given and not param.has_task_value(name, key):
            problems.append(f"[params] {key}: required parameter of {name} is missing")
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s): " + "; ".join(problems))
    config = ExperimentConfig(path, module, cls, params, steps, sweep, factory, point_overlay)
    _apply_steps(steps)
    return config


def _apply_steps(steps: dict[str, dict[str, Any]]) -> None:
    # Per-step defaults are Luigi config sections: Luigi applies them to every
    # instance of the class whose parameter is not passed explicitly.
    config = luigi.configuration.get_config()
    for step, values in steps.items():
        if not config.has_section(step):
            config.add_section(step)
        for key, raw in values.items():
            config.set(step, key, value_text(raw))


def _load_sweep(
    raw: Any, own: dict[str, luigi.Parameter], name: str, problems: list[str]
) -> Sweep | None:
    if raw is None:
        return None
    metric, goal = raw.get("metric"), raw.get("goal", "max")
    if goal not in ("max", "min"):
        problems.append(f'[sweep] goal: {goal!r} must be "max" or "min"')
    grid, rand, adaptive = raw.get("grid"), raw.get("random"), raw.get("optuna")
    extra = set(raw) - {"metric", "goal", "grid", "random", "optuna"}
    if extra:
        problems.append(f"[sweep]: unknown key(s) {', '.join(sorted(extra))}")
    if sum(x is not None for x in (grid, rand, adaptive)) != 1:
        problems.append(
            "[sweep]: give exactly one of [sweep.grid], [sweep.random] or [sweep.optuna]"
        )
        return None
    if adaptive is not None:
        return _load_optuna(adaptive, own, name, metric, goal, problems)
    if grid is not None:
        axes: dict[str, list[Any]] = {}
        for key, values in grid.items():
            if key not in own:
                problems.append(f"[sweep.grid] {key}: {name} has no parameter {key!r}")
                continue
            if not isinstance(values, list) or not values:
                problems.append(f"[sweep.grid] {key}: must be a non-empty list")
                continue
            axes[key] = [
                checked_config_value(own[key], v, f"[sweep.grid] {key}", problems) for v in values
            ]
        combos = [dict(zip(axes, vals, strict=True)) for vals in itertools.product(*axes.values())]
        return Sweep("grid", combos, list(axes), metric, goal)
    stray = set(rand) - {"seed", "count", "params"}
    if stray:
        # A space written straight under [sweep.random] would otherwise be ignored.
        problems.append(
            f"[sweep.random]: unknown key(s) {', '.join(sorted(stray))} (known: count, "
            "params, seed; the values to draw go in [sweep.random.params])"
        )
    seed, count = rand.get("seed", 0), rand.get("count")
    if not isinstance(count, int) or count < 1:
        problems.append("[sweep.random] count: must be a positive integer")
        return None
    space = rand.get("params", {})
    combos = [{} for _ in range(count)]
    for key, spec in space.items():
        if key not in own:
            problems.append(f"[sweep.random.params] {key}: {name} has no parameter {key!r}")
            continue
        for index, combo in enumerate(combos):
            # Each value is drawn from (seed, point, parameter) alone, so a grown sweep
            # keeps every earlier point and a parameter added to the space moves no
            # other draw (str seeds are hashed with SHA-512: stable across processes).
            rng = random.Random(f"{seed}:{index}:{key}")
            try:
                combo[key] = checked_config_value(
                    own[key], _draw(spec, rng), f"[sweep.random] {key}", problems
                )
            except ValueError as exc:
                problems.append(f"[sweep.random.params] {key}: {exc}")
                break
    return Sweep("random", combos, [k for k in space if k in own], metric, goal, _log_scaled(space))


def _log_scaled(space: dict[str, Any]) -> list[str]:
    return [k for k, spec in space.items() if isinstance(spec, dict) and "loguniform" in spec]


OPTUNA_KEYS = {"trials", "seed", "batch", "storage", "study", "params", "pruner"}
# `pruner = "median"` or `pruner = {median = {n_startup_trials = 2}}`: Optuna's pruner of
# that name, with those arguments (_ops/sweep/adaptive.py makes it).
PRUNERS = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
}


def _load_optuna(
    raw: dict[str, Any],
    own: dict[str, luigi.Parameter],
    name: str,
    metric: str | None,
    goal: str,
    problems: list[str],
) -> Sweep | None:
    extra = set(raw) - OPTUNA_KEYS
    if extra:
        problems.append(
            f"[sweep.optuna]: unknown key(s) {', '.join(sorted(extra))} "
            f"(known: {', '.join(sorted(OPTUNA_KEYS))})"
        )
    trials, batch = raw.get("trials"), raw.get("batch", 1)
    if not isinstance(trials, int) or trials < 1:
        problems.append("[sweep.optuna] trials: must be a positive integer")
    if not isinstance(batch, int) or batch < 1:
        problems.append("[sweep.optuna] batch: must be a positive integer (trials built at once)")
    if not metric:
        problems.append("[sweep] metric: an adaptive search needs the metric it optimizes")
    space = raw.get("params", {})
    if not space:
        problems.append("[sweep.optuna.params]: give the search space (as [sweep.random.params])")
    probe = random.Random(0)
    for key, spec in space.items():
        if key not in own:
            problems.append(f"[sweep.optuna.params] {key}: {name} has no parameter {key!r}")
            continue
        try:
            checked_config_value(own[key], _draw(spec, probe), f"[sweep.optuna] {key}", problems)
        except ValueError as exc:
            problems.append(f"[sweep.optuna.params] {key}: {exc}")
    settings: dict[str, Any] = {
        k: raw[k] for k in ("trials", "seed", "batch", "storage", "study") if k in raw
    }
    settings.setdefault("batch", 1)
    if "pruner" in raw:
        settings["pruner"] = _pruner(raw["pruner"], problems)
    swept = [k for k in space if k in own]
    return Sweep("optuna", [], swept, metric, goal, _log_scaled(space), space, settings)


def _pruner(raw: Any, problems: list[str]) -> tuple[str, dict[str, Any]] | None:
    """("median", {arguments}) from `pruner = "median"` or `{median = {...}}`."""
    name: Any = raw
    options: Any = {}
    if isinstance(raw, dict) and len(raw) == 1:
        ((name, options),) = raw.items()
    if not isinstance(name, str) or name not in PRUNERS or not isinstance(options, dict):
        problems.append(
            f"[sweep.optuna] pruner: {raw!r} is not one of {', '.join(PRUNERS)} (a name, or "
            "{name = {argument = value}} for Optuna's arguments of that pruner)"
        )
        return None
    return name, dict(options)


def _draw(spec: Any, rng: random.Random) -> Any:
    if isinstance(spec, list) and spec:
        return rng.choice(spec)
    if isinstance(spec, dict) and len(spec) == 1:
        ((kind, bounds),) = spec.items()
        if isinstance(bounds, list) and len(bounds) == 2:
            low, high = bounds
            if not all(isinstance(b, int | float) for b in bounds) or low > high:
                raise ValueError(f"{kind} = {bounds!r}: give [low, high] numbers with low <= high")
            if kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform = {bounds!r}: both bounds must be above 0")
            if kind == "uniform":
                return rng.uniform(low, high)
            if kind == "loguniform" and low > 0:
                return math.exp(rng.uniform(math.log(low), math.log(high)))
            if kind == "int":
                return rng.randint(int(low), int(high))
    raise ValueError(
        f"{spec!r} is not a list of choices or {{uniform|loguniform|int = [low, high]}}"
    )
