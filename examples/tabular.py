"""A real tabular pipeline: load -> split -> process -> train -> evaluate.

Shaped like the seeds' credit-card project, on scikit-learn's bundled breast-cancer
data (nothing is downloaded). Run it with `scripts/main` or, step by step, with
`luigiflow run --module examples.tabular Evaluate --logic pca --algorithm rf`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, ClassVar

import luigi
import numpy as np
import pandas as pd

import luigiflow as lf

TARGET = "target"


# Luigi runs each task of a multi-worker build in a process forked from the build's, so a
# library imported inside run_task is imported again by every task: about a CPU-second of
# scikit-learn each, most of a cold build of the grid. Imported once in the build's own
# process as soon as Luigi finds a task to run (it then lists that task's dependencies),
# it is inherited by every forked task, while a build that reuses everything (or
# `luigiflow plan`) still never imports it.
@luigi.Task.event_handler(luigi.Event.DEPENDENCY_DISCOVERED)
def _import_scikit_learn_before_tasks_fork(task: luigi.Task, dependency: luigi.Task) -> None:
    if type(task).__module__ != __name__:
        return
    import sklearn.datasets
    import sklearn.decomposition
    import sklearn.ensemble
    import sklearn.linear_model
    import sklearn.metrics
    import sklearn.model_selection
    import sklearn.neighbors
    import sklearn.pipeline
    import sklearn.preprocessing  # noqa: F401


class LoadData(lf.MlflowTask):
    """The raw table; `retrieved_on` is the data version (a snapshot date)."""

    experiment_name = "tabular-load"
    artifacts = {"table": "table.parquet"}
    retrieved_on = luigi.DateParameter(default=dt.date(2026, 1, 1))

    def run_task(self) -> None:
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer(as_frame=True)
        table = bunch.frame.rename(columns=lambda c: c.replace(" ", "_"))
        self.save({"table": table}, metrics={"rows": len(table), "columns": table.shape[1] - 1})


class Split(lf.MlflowTask):
    """A stratified train/test split."""

    experiment_name = "tabular-split"
    artifacts = {"train": "train.parquet", "test": "test.parquet"}
    retrieved_on = luigi.DateParameter(default=dt.date(2026, 1, 1))
    test_size = luigi.FloatParameter(default=0.25)

    def requires(self) -> dict[str, luigi.Task]:
        return {"data": LoadData(retrieved_on=self.retrieved_on)}

    def run_task(self) -> None:
        from sklearn.model_selection import train_test_split

        table = self.load("data")
        train, test = train_test_split(
            table, test_size=self.test_size, stratify=table[TARGET], random_state=self.seed
        )
        self.save(
            {"train": train.reset_index(drop=True), "test": test.reset_index(drop=True)},
            metrics={"train_rows": len(train), "test_rows": len(test)},
        )


def _plain() -> Any:
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer()


def _standardized() -> Any:
    from sklearn.preprocessing import StandardScaler

    return StandardScaler()


def _pca() -> Any:
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), PCA(n_components=10, random_state=0))


# Processing logics by name: adding one is adding one entry, no if/else.
PROCESSORS: dict[str, Callable[[], Any]] = {
    "plain": _plain,
    "standardized": _standardized,
    "pca": _pca,
}


class Process(lf.MlflowTask):
    """Fit a feature processor on the train split; save it and the processed features."""

    experiment_name = "tabular-process"
    artifacts = {"processor": "processor.joblib", "train": "train.npz", "test": "test.npz"}
    retrieved_on = luigi.DateParameter(default=dt.date(2026, 1, 1))
    logic = luigi.ChoiceParameter(choices=list(PROCESSORS), default="plain")

    def requires(self) -> dict[str, luigi.Task]:
        return {"split": Split(retrieved_on=self.retrieved_on)}

    def run_task(self) -> None:
        train = self.load("split", "train")
        test = self.load("split", "test")
        processor = PROCESSORS[self.logic]()
        x_train = processor.fit_transform(train.drop(columns=[TARGET]))
        x_test = processor.transform(test.drop(columns=[TARGET]))
        self.save(
            {
                "processor": processor,
                "train": (
                    {"x": np.asarray(x_train), "y": train[TARGET].to_numpy()},
                    _save_npz,
                ),
                "test": ({"x": np.asarray(x_test), "y": test[TARGET].to_numpy()}, _save_npz),
            },
            metrics={"features": int(np.asarray(x_train).shape[1])},
        )


def _save_npz(arrays: dict[str, np.ndarray], path: str) -> None:
    with open(path, "wb") as f:  # np.savez would append ".npz" to a bare path
        np.savez(f, **arrays)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:  # data only: never unpickle
        return {k: data[k] for k in data.files}


class Algorithm:
    """A training algorithm; subclasses register themselves by `name`.

    Adding an algorithm is adding one subclass here: `Train` and `Evaluate` accept
    every registered name (`--algorithm knn`), and config files and sweeps can name it.
    """

    name: ClassVar[str]
    registry: ClassVar[dict[str, type[Algorithm]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Algorithm.registry[cls.name] = cls

    def build(self, seed: int) -> Any:
        raise NotImplementedError


class LogisticRegression(Algorithm):
    name = "logreg"

    def build(self, seed: int) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=5000, random_state=seed)


class RandomForest(Algorithm):
    name = "rf"

    def build(self, seed: int) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)


class GradientBoosting(Algorithm):
    name = "gb"

    def build(self, seed: int) -> Any:
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(random_state=seed)


class NearestNeighbors(Algorithm):
    name = "knn"

    def build(self, seed: int) -> Any:
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=7)


ALGORITHMS = Algorithm.registry


class Train(lf.MlflowTask):
    """Fit the chosen algorithm on the processed train split."""

    experiment_name = "tabular-train"
    artifacts = {"model": "model.joblib"}
    retrieved_on = luigi.DateParameter(default=dt.date(2026, 1, 1))
    logic = luigi.ChoiceParameter(choices=list(PROCESSORS), default="plain")
    algorithm = luigi.ChoiceParameter(choices=list(ALGORITHMS), default="logreg")

    def requires(self) -> dict[str, luigi.Task]:
        return {"features": Process(retrieved_on=self.retrieved_on, logic=self.logic)}

    def run_task(self) -> None:
        train = _load_npz(self.input()["features"]["train"].path)
        model = ALGORITHMS[self.algorithm]().build(self.seed)
        model.fit(train["x"], train["y"])
        self.save({"model": model}, metrics={"train_accuracy": model.score(train["x"], train["y"])})


class Evaluate(lf.MlflowTask):
    """Metrics of the trained model on the held-out test split."""

    experiment_name = "tabular-evaluate"
    artifacts = {"report": "report.json"}
    retrieved_on = luigi.DateParameter(default=dt.date(2026, 1, 1))
    logic = luigi.ChoiceParameter(choices=list(PROCESSORS), default="plain")
    algorithm = luigi.ChoiceParameter(choices=list(ALGORITHMS), default="logreg")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "model": Train(
                retrieved_on=self.retrieved_on, logic=self.logic, algorithm=self.algorithm
            ),
            "features": Process(retrieved_on=self.retrieved_on, logic=self.logic),
        }

    def run_task(self) -> None:
        from sklearn import metrics

        model = self.load("model")
        test = _load_npz(self.input()["features"]["test"].path)
        predicted = model.predict(test["x"])
        scores = model.predict_proba(test["x"])[:, 1]
        report = {
            "accuracy": metrics.accuracy_score(test["y"], predicted),
            "f1": metrics.f1_score(test["y"], predicted),
            "roc_auc": metrics.roc_auc_score(test["y"], scores),
        }
        self.save({"report": report}, metrics=report)


class Package(lf.MlflowTask):
    """The trained model and its fitted processor as one servable MLflow model.

    `predict(raw rows)` applies the processing and then the model; serve it with
    `luigiflow serve RUN_ID` (add --register-as NAME to put it in the Model Registry).
    """

    experiment_name = "tabular-package"
    artifacts: ClassVar[dict[str, str]] = {}
    retrieved_on = luigi.DateParameter(default=dt.date(2026, 1, 1))
    logic = luigi.ChoiceParameter(choices=list(PROCESSORS), default="plain")
    algorithm = luigi.ChoiceParameter(choices=list(ALGORITHMS), default="logreg")
    register_as = luigi.Parameter(default="", significant=False)

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "model": Train(
                retrieved_on=self.retrieved_on, logic=self.logic, algorithm=self.algorithm
            ),
            "features": Process(retrieved_on=self.retrieved_on, logic=self.logic),
            "split": Split(retrieved_on=self.retrieved_on),
        }

    def run_task(self) -> None:
        raw = self.load("split", "test").drop(columns=[TARGET])
        processor = self.load("features", "processor")
        model = self.load("model")
        uri = self.log_model_bundle(
            [processor, model],
            input_example=raw.head(5),
            registered_model_name=self.register_as or None,
        )
        self.save({}, metrics={"raw_columns": raw.shape[1]})
        self.log_metric("bundle_rows_checked", float(len(raw)))
        print(f"model bundle: {uri}")


MAIN_ALGORITHMS = ("logreg", "rf", "gb")


def grid(retrieved_on: dt.date = dt.date(2026, 1, 1)) -> list[Evaluate]:
    """Every processing logic x the three main algorithms (the README's main job)."""
    return [
        Evaluate(retrieved_on=retrieved_on, logic=logic, algorithm=algorithm)
        for logic in PROCESSORS
        for algorithm in MAIN_ALGORITHMS
    ]


def results_table(tasks: list[Evaluate], runs: dict[Any, str]) -> pd.DataFrame:
    """One row per evaluate task: run id, parameters and test metrics."""
    rows = []
    for task in tasks:
        report = task.load_output("report")
        rows.append(
            {
                "run_id": runs[task],
                "logic": task.logic,
                "algorithm": task.algorithm,
                **{k: round(v, 4) for k, v in report.items()},
            }
        )
    return pd.DataFrame(rows).sort_values("roc_auc", ascending=False, ignore_index=True)


def luigiflow_command() -> str:
    """The `luigiflow` command as it can be typed from here (the venv need not be active)."""
    import os
    import pathlib
    import sys

    script = pathlib.Path(sys.executable).parent / "luigiflow"
    if not script.exists():
        return f"{sys.executable} -m luigiflow.cli"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else str(script)


def main() -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    tasks = grid()
    console.print(f"tracking store: {lf.tracking_uri()}", highlight=False, soft_wrap=True)
    result = lf.build(tasks, workers=2)
    if result.executed:
        console.print(
            f"executed {len(result.executed)} task(s), reused {len(result.reused)} finished run(s)"
        )
    else:
        console.print(f"nothing to do: all {len(result.reused)} task(s) reused from finished runs")
    frame = results_table(tasks, result.runs)
    frame["run_id"] = frame["run_id"].str[:8]  # `luigiflow show` takes this short id
    table = Table(
        title="Evaluate: test-set metrics of this build's runs",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in frame.columns:
        numeric = frame[column].dtype.kind == "f"
        table.add_column(
            "run" if column == "run_id" else column,
            justify="right" if numeric else "left",
            no_wrap=True,
        )
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    command = luigiflow_command()
    # soft_wrap: a printed command is never broken inside a path or a run id (the
    # terminal folds the long line; copying it gives the whole command back).
    console.print(f"look at every run: {command} ui", highlight=False, soft_wrap=True)
    console.print(
        f"one result and its chain: {command} show {frame['run_id'][0]}",
        highlight=False,
        soft_wrap=True,
    )


if __name__ == "__main__":
    main()
