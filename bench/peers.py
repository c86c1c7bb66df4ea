"""The same fan-in graph written for each system the benchmark compares."""

from __future__ import annotations

import os
import time
from typing import Any

import luigi

QUIET = {"local_scheduler": True, "log_level": "CRITICAL"}


def warm_up(system: str) -> None:
    """One-time costs of a process: imports, store migration, compiling each query."""
    if system in ("luigiflow", "blog", "mlflow", "floor"):
        import mlflow

        from luigiflow._store import client, current

        client.get_client().search_experiments()  # creates and migrates the store
        mlflow.search_experiments()
        store = current.get_store()
        scratch = store.experiment_id("warm-up", create=True)
        assert scratch is not None
        if system == "luigiflow":  # SQLAlchemy compiles each query shape once
            store.find_finished(scratch, "0" * 64)
            list(store.finished_runs(scratch))
        elif system == "blog":
            _blog_search("warm-up", {"task_family": "warm-up"})
    elif system == "gokart":
        import gokart  # noqa: F401


class FanGraph:
    def __init__(self, build_fn: Any) -> None:
        self.build = build_fn


def fan_graph(system: str) -> FanGraph:
    return {"luigiflow": _luigiflow, "luigi": _luigi, "gokart": _gokart, "blog": _blog}[system]()


def _luigiflow() -> FanGraph:
    import luigiflow as lf

    class Prep(lf.MlflowTask):
        artifacts = {"o": "o.json"}

        def run_task(self) -> None:
            self.save({"o": 0})

    class Train(lf.MlflowTask):
        artifacts = {"o": "o.json"}
        i = luigi.IntParameter()

        def requires(self) -> Any:
            return {"prep": Prep()}

        def run_task(self) -> None:
            self.save({"o": self.i})

    class Aggregate(lf.MlflowTask):
        artifacts = {"o": "o.json"}
        n = luigi.IntParameter()

        def requires(self) -> Any:
            return {f"t{i}": Train(i=i) for i in range(self.n)}

        def run_task(self) -> None:
            self.save({"o": self.n})

    return FanGraph(lambda n: lf.build([Aggregate(n=n)], log_level="CRITICAL"))


def _luigi() -> FanGraph:
    import json

    class Prep(luigi.Task):
        def output(self) -> Any:
            return luigi.LocalTarget("luigi/prep.json")

        def run(self) -> None:
            with self.output().open("w") as f:
                json.dump(0, f)

    class Train(luigi.Task):
        i = luigi.IntParameter()

        def requires(self) -> Any:
            return Prep()

        def output(self) -> Any:
            return luigi.LocalTarget(f"luigi/train_{self.i}.json")

        def run(self) -> None:
            with self.output().open("w") as f:
                json.dump(self.i, f)

    class Aggregate(luigi.Task):
        n = luigi.IntParameter()

        def requires(self) -> Any:
            return [Train(i=i) for i in range(self.n)]

        def output(self) -> Any:
            return luigi.LocalTarget(f"luigi/aggregate_{self.n}.json")

        def run(self) -> None:
            with self.output().open("w") as f:
                json.dump(self.n, f)

    return FanGraph(lambda n: luigi.build([Aggregate(n=n)], **QUIET))


def _gokart() -> FanGraph:
    import gokart

    class Prep(gokart.TaskOnKart):
        def run(self) -> None:
            self.dump(0)

    class Train(gokart.TaskOnKart):
        i = luigi.IntParameter()

        def requires(self) -> Any:
            return Prep()

        def run(self) -> None:
            self.dump(self.i)

    class Aggregate(gokart.TaskOnKart):
        n = luigi.IntParameter()

        def requires(self) -> Any:
            return [Train(i=i) for i in range(self.n)]

        def run(self) -> None:
            self.dump(self.n)

    return FanGraph(lambda n: luigi.build([Aggregate(n=n, workspace_directory="./gk")], **QUIET))


def _blog_search(experiment: str, tags: dict[str, str]) -> Any:
    """The blog design: one search_runs on tags inside every complete()."""
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = " AND ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = mlflow.search_runs(
        [exp.experiment_id], query + " AND attributes.status = 'FINISHED'", output_format="list"
    )
    return runs[0] if runs else None


class _BlogTask(luigi.Task):
    def tags(self) -> dict[str, str]:
        return {"task_family": self.get_task_family(), **self.to_str_params()}

    def complete(self) -> bool:
        return _blog_search(self.get_task_family(), self.tags()) is not None

    def run(self) -> None:
        import json
        import tempfile

        import mlflow

        mlflow.set_experiment(self.get_task_family())
        with mlflow.start_run(tags=self.tags()):
            mlflow.log_params(self.to_str_params())
            folder = tempfile.mkdtemp()
            path = os.path.join(folder, "o.json")
            with open(path, "w") as f:
                json.dump(0, f)
            mlflow.log_artifact(path)


def _blog() -> FanGraph:
    class Prep(_BlogTask):
        pass

    class Train(_BlogTask):
        i = luigi.IntParameter()

        def requires(self) -> Any:
            return Prep()

    class Aggregate(_BlogTask):
        n = luigi.IntParameter()

        def requires(self) -> Any:
            return [Train(i=i) for i in range(self.n)]

    return FanGraph(lambda n: luigi.build([Aggregate(n=n)], **QUIET))


def wide_check(system: str, n: int) -> dict[str, float]:
    """n finished independent roots asked again: the completeness check alone."""
    import luigiflow as lf

    class Root(lf.MlflowTask):
        artifacts = {}
        i = luigi.IntParameter()

        def run_task(self) -> None:
            pass

    roots = [Root(i=i) for i in range(n)]
    lf.build(roots, log_level="CRITICAL")  # populate (not timed)
    luigi.task_register.Register.clear_instance_cache()
    roots = [Root(i=i) for i in range(n)]
    from luigiflow._store import current

    start = time.perf_counter()
    if system == "luigiflow":
        result = lf.build(roots, log_level="CRITICAL")
        assert not result.executed
    else:  # the blog: one search per task, on the same runs
        store = current.get_store()
        exp_id = store.experiment_id("Root", create=False)
        assert exp_id is not None
        for task in roots:
            assert store.find_finished(exp_id, task.identity) is not None
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "ms_per_task": seconds * 1000 / n}


def artifact(system: str, mib: int) -> dict[str, float]:
    """Store one big file the task wrote: luigiflow's save of a file written at
    `artifact_path_for` (no copy; its BLAKE3 checksum is the cost) vs MLflow's
    log_artifact (a copy), and the checksum alone (`hash`)."""
    import pathlib

    import luigiflow as lf

    chunk = os.urandom(1 << 20)

    def write(path: pathlib.Path) -> None:
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(chunk)

    timing: dict[str, float] = {}

    class Big(lf.MlflowTask):
        artifacts = {"blob": "blob.bin"}

        def run_task(self) -> None:
            path = self.artifact_path_for("blob")
            write(path)
            timing["start"] = time.perf_counter()
            self.save({"blob": path})

    if system == "luigiflow":
        lf.build([Big()], log_level="CRITICAL")
        return {"seconds": time.perf_counter() - timing["start"], "ms_per_task": 0.0}
    if system == "hash":  # the floor: the checksum luigiflow records, of the same file
        from luigiflow._store import checksums

        data = pathlib.Path("hashed.bin")
        write(data)
        start = time.perf_counter()
        checksums.digest(data)
        return {"seconds": time.perf_counter() - start, "ms_per_task": 0.0}
    import mlflow

    big = pathlib.Path("big.bin")
    write(big)
    mlflow.set_experiment("mlflow-copy")
    with mlflow.start_run():
        start = time.perf_counter()
        mlflow.log_artifact(str(big))
    return {"seconds": time.perf_counter() - start, "ms_per_task": 0.0}


def mlflow_floor(n: int) -> dict[str, float]:
    """The floor of any design that records a full MLflow run per task: for each task of
    the fan graph, create the run (with tags), log its params in one batch, terminate it
    (MLflow's three writes), in one process on the same kind of store."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.create_experiment("floor")
    tasks = n + 2
    start = time.perf_counter()
    for i in range(tasks):
        run = client.create_run(exp, tags={"task": "Train", "identity": f"{i:064d}"})
        client.log_batch(run.info.run_id, params=[Param("i", str(i))])
        client.set_terminated(run.info.run_id, "FINISHED")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "ms_per_task": seconds * 1000 / tasks}


def trust_costs() -> dict[str, float]:
    """Wrap what trust adds per task (the exactly-once claim query, artifact checksums
    made and checked) with timers; `cold_profile` reads them after a build."""
    from luigiflow._engine import claim
    from luigiflow._store import checksums

    spent = {"claim": 0.0, "checksum_make": 0.0, "checksum_check": 0.0}

    def timed(owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start

        setattr(owner, name, wrapper)

    timed(claim.Claim, "settle", "claim")
    timed(checksums, "make_record", "checksum_make")
    timed(checksums, "problem", "checksum_check")
    return spent
