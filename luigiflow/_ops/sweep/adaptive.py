"""`[sweep.optuna]`: an adaptive search where each trial is a task.

Optuna proposes parameter values; each proposal is the config's task with those values,
built like any other (so a trial whose identical run FINISHED is reused, here or on
another machine); the metric of its run is what Optuna is told. With a fixed `seed` and
no `storage`, a rerun proposes the same trials and reuses every run; with `storage` (an
Optuna RDB URL), several machines share one study and `trials` is the study's total.

With a `pruner`, each trial task reports the values of the metric it logs per step
(`self.log_metric(metric, value, step=N)`) to its trial, from whichever worker process
runs it, and stops when the pruner says so: its run is KILLED and tagged
`luigiflow.pruned`, the trial PRUNED. Worker processes reach the study through its
storage: without `storage`, a journal file for the length of the search. A rerun
does not run a pruned trial again: it tells the study the steps the pruned run logged
and PRUNED (remove the pruner, or delete the run, to run it to its end).
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from luigiflow._core.parameters import checked_config_value
from luigiflow._core.suggest import did_you_mean
from luigiflow._engine import session as _session
from luigiflow._engine import steps
from luigiflow._errors import ConfigError, LuigiflowError, TrialPrunedError
from luigiflow._ops.sweep.config import PRUNERS
from luigiflow._store import schema
from luigiflow._store.records import KILLED, RunRecord

if TYPE_CHECKING:
    import luigi

    from luigiflow._ops.sweep.config import ExperimentConfig


class SearchSummary:
    """What one search did: trials asked and built now, the tasks executed by them."""

    def __init__(self) -> None:
        self.asked = 0
        self.executed: list[luigi.Task] = []
        self.failed: list[luigi.Task] = []
        self.pruned: list[luigi.Task] = []  # stopped by the pruner now or in an earlier run


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
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _storage(sweep.settings) as storage:
        return _search(optuna, config, build, storage)


@contextlib.contextmanager
def _storage(settings: dict[str, Any]) -> Iterator[Any]:
    """The study's storage: the configured one; without one, memory, or, when trials
    report to a pruner (from worker processes too), a journal file kept for the search."""
    if settings.get("storage") or not settings.get("pruner"):
        yield settings.get("storage")
        return
    folder = tempfile.mkdtemp(prefix="luigiflow-study-")
    try:
        yield ("journal", str(pathlib.Path(folder) / "study.log"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _open_storage(optuna: Any, storage: Any) -> Any:
    if isinstance(storage, tuple):  # ("journal", path): picklable, unlike the storage
        from optuna.storages.journal import JournalFileBackend  # Optuna 4.0+

        return optuna.storages.JournalStorage(JournalFileBackend(storage[1]))
    return storage


def _make_pruner(optuna: Any, pruner: tuple[str, dict[str, Any]] | None, where: str) -> Any:
    if pruner is None:
        return None
    name, options = pruner
    try:
        return getattr(optuna.pruners, PRUNERS[name])(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: [sweep.optuna] pruner {name}: {exc}") from None


def _search(
    optuna: Any, config: ExperimentConfig, build: Callable[[list[Any]], Any], storage: Any
) -> SearchSummary:
    sweep = config.sweep
    assert sweep is not None and sweep.metric is not None
    settings = sweep.settings
    name = settings.get("study", f"luigiflow-{config.path.stem}")
    pruner = _make_pruner(optuna, settings.get("pruner"), str(config.path))
    study = optuna.create_study(
        study_name=name,
        storage=_open_storage(optuna, storage),
        load_if_exists=True,
        direction="maximize" if sweep.goal == "max" else "minimize",
        sampler=optuna.samplers.TPESampler(seed=settings.get("seed")),
        pruner=pruner,
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
        summary.asked += len(asked)
        stopped = {}  # task -> its pruned run: told again, not built again
        if pruner is not None:
            stopped = {t: r for t in tasks if (r := _pruned_run(t)) is not None}
        for trial, task in zip(asked, tasks, strict=True):
            if pruner is not None and task not in stopped:
                # Optuna's Trial(study, trial_id) is how another process reports to a
                # trial; the id is not public on the trial ask() returns.
                trial_id = trial._trial_id
                steps.watch(
                    task, Watcher(storage, name, trial_id, sweep.metric, settings["pruner"])
                )
        result = build([t for t in tasks if t not in stopped])
        summary.executed += [t for t in result.executed if t not in summary.executed]
        for trial, task, combo in zip(asked, tasks, combos, strict=True):
            steps.watch(task, None)
            pruned = stopped.get(task) or _pruned_now(task, result)
            if pruned is not None:
                _tell_pruned(optuna, study, trial, pruned, sweep.metric, task in stopped)
                summary.pruned.append(task)
                sweep.pruned_runs.append(pruned.info.run_id)
                continue
            value = _metric(task, sweep.metric) if task not in result.failed else None
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                summary.failed.append(task)
                continue
            study.tell(trial, value)
            sweep.combinations.append(combo)
    if not sweep.combinations:
        raise LuigiflowError(f"{config.path}: every trial of the search failed or was pruned")
    return summary


class Watcher:
    """Reports a trial task's per-step metric to its Optuna trial and stops the task
    when the study's pruner says so. Made in the search's process, called in whichever
    process runs the task: it holds only what opens the study again there."""

    def __init__(
        self,
        storage: Any,
        study: str,
        trial_id: int,
        metric: str,
        pruner: tuple[str, dict[str, Any]],
    ) -> None:
        self.storage, self.study, self.trial_id = storage, study, trial_id
        self.metric, self.pruner = metric, pruner
        self.name = f"{pruner[0]} pruner"
        self._trial: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_trial": None}  # the open study stays behind

    def __call__(self, key: str, value: float, step: int) -> None:
        if key != self.metric:
            return
        import optuna

        if self._trial is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.load_study(
                study_name=self.study,
                storage=_open_storage(optuna, self.storage),
                pruner=_make_pruner(optuna, self.pruner, "the search"),
            )
            self._trial = optuna.trial.Trial(study, self.trial_id)
        self._trial.report(value, step)
        if self._trial.should_prune():
            raise TrialPrunedError(
                f"trial {self._trial.number} of study {self.study!r} pruned by the "
                f"{self.name} at step {step} ({key}={value:g}); its run is KILLED, not a result"
            )


def _pruned_run(task: Any) -> RunRecord | None:
    """A run of this trial's identity that a pruner stopped (and no FINISHED one)."""
    if task.find_run() is not None:
        return None
    store = _session.current().store
    exp_id = store.experiment_id(task.get_experiment_name())
    if exp_id is None:
        return None
    for run in store.runs_with_identity(exp_id, task.identity, 20):
        if run.info.status == KILLED and schema.PRUNED_TAG in run.data.tags:
            return run
    return None


def _pruned_now(task: Any, result: Any) -> RunRecord | None:
    detail = result.failure_details.get(task) if task in result.failed else None
    if detail is None or not detail.run_id:
        return None
    run = _session.current().store.get_run(detail.run_id)
    return run if schema.PRUNED_TAG in run.data.tags else None


def _tell_pruned(
    optuna: Any, study: Any, trial: Any, run: RunRecord, metric: str, replay: bool
) -> None:
    """Tell the study a trial was pruned; a pruned run of an earlier search is replayed
    first (the values it logged per step, up to where it stopped), so the pruner and
    sampler see the same history as then."""
    if replay:
        last = json.loads(run.data.tags[schema.PRUNED_TAG]).get("step")
        history = _session.current().store.metric_history(run.info.run_id)
        for point in sorted(history, key=lambda p: p.step):
            if point.key == metric and (last is None or point.step <= last):
                trial.report(point.value, point.step)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)


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
