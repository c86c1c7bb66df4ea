"""`[sweep.optuna]`: an adaptive search where each trial is a task.

Optuna proposes parameter values; each proposal is the config's task with those values,
built like any other (so a trial whose identical run FINISHED is reused, here or on
another machine); the metric of its run is what Optuna is told. With a fixed `seed` and
no `storage`, a rerun proposes the same trials and reuses every run; with `storage` (an
Optuna RDB URL), several machines share one study and `trials` is the study's total.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from luigiflow._core.parameters import checked_config_value
from luigiflow._core.suggest import did_you_mean
from luigiflow._errors import ConfigError, LuigiflowError

if TYPE_CHECKING:
    import luigi

    from luigiflow._ops.sweep.config import ExperimentConfig


class SearchSummary:
    """What one search did: trials asked and built now, the tasks executed by them."""

    def __init__(self) -> None:
        self.asked = 0
        self.executed: list[luigi.Task] = []
        self.failed: list[luigi.Task] = []


def search(config: ExperimentConfig, build: Callable[[list[Any]], Any]) -> SearchSummary:
    """Run the search, filling `config.sweep.combinations` with every trial's values."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            f"{config.path}: [sweep.optuna] needs Optuna: pip install 'luigiflow[optuna]'"
        ) from None
    sweep = config.sweep
    assert sweep is not None and sweep.metric is not None
    settings = sweep.settings
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=settings.get("study", f"luigiflow-{config.path.stem}"),
        storage=settings.get("storage"),
        load_if_exists=True,
        direction="maximize" if sweep.goal == "max" else "minimize",
        sampler=optuna.samplers.TPESampler(seed=settings.get("seed")),
    )
    summary = SearchSummary()
    own = dict(config.task_class.get_params())
    for past in study.get_trials(deepcopy=False):
        if past.state == optuna.trial.TrialState.COMPLETE:
            sweep.combinations.append(_values(past.params, own, config))
    while True:
        done = len(study.get_trials(deepcopy=False, states=_finished(optuna)))
        wanted = min(settings["batch"], settings["trials"] - done)
        if wanted <= 0:
            break
        asked = [study.ask() for _ in range(wanted)]
        combos = [
            _values({k: _suggest(t, k, spec) for k, spec in sweep.space.items()}, own, config)
            for t in asked
        ]
        tasks = [config.task_for(combo) for combo in combos]
        result = build(tasks)
        summary.asked += len(asked)
        summary.executed += [t for t in result.executed if t not in summary.executed]
        for trial, task, combo in zip(asked, tasks, combos, strict=True):
            value = _metric(task, sweep.metric) if task not in result.failed else None
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                summary.failed.append(task)
                continue
            study.tell(trial, value)
            sweep.combinations.append(combo)
    if not sweep.combinations:
        raise LuigiflowError(f"{config.path}: every trial of the search failed")
    return summary


def _finished(optuna: Any) -> tuple[Any, ...]:
    states = optuna.trial.TrialState
    return (states.COMPLETE, states.FAIL, states.PRUNED)


def _suggest(trial: Any, key: str, spec: Any) -> Any:
    """The same space as [sweep.random.params], asked of Optuna."""
    if isinstance(spec, list):
        return trial.suggest_categorical(key, spec)
    ((kind, (low, high)),) = spec.items()
    if kind == "int":
        return trial.suggest_int(key, int(low), int(high))
    return trial.suggest_float(key, float(low), float(high), log=kind == "loguniform")


def _values(raw: dict[str, Any], own: dict[str, Any], config: ExperimentConfig) -> dict[str, Any]:
    problems: list[str] = []
    values = {
        k: checked_config_value(own[k], v, f"[sweep.optuna] {k}", problems) for k, v in raw.items()
    }
    if problems:
        raise ConfigError(f"{config.path}: " + "; ".join(problems))
    return values


def _metric(task: Any, metric: str) -> float | None:
    run = task.find_run()
    if run is not None and metric not in run.data.metrics:
        # A misspelt metric: say so now; the finished trials are kept and reused.
        logged = sorted(run.data.metrics)
        raise ConfigError(
            f"sweep metric {metric!r} was not logged by {task!r} (it logged: "
            f"{', '.join(logged) or 'no metrics'}){did_you_mean(metric, logged)}. Fix "
            "`metric` and run again: every finished trial is reused"
        )
    value = None if run is None else run.data.metrics.get(metric)
    if value is None or not math.isfinite(value):
        return None
    return float(value)
