"""A task run's start and end written in SQL (`_store/sqlite_writes`) leave the same rows
in MLflow's tables as MLflow's client writing them: the same graph is built on two
stores, one each way, and every row is compared."""

from __future__ import annotations

import math
import os
import pathlib
import shutil
import sqlite3
from typing import Any

import luigi
import pytest

import luigiflow as lf
from luigiflow._store import current, schema, sqlite_reads, sqlite_writes


class Data(lf.MlflowTask):
    """Live metrics at steps, metrics and a param through MLflow's own API, NaN and
    infinities, a unicode parameter, one artifact."""

    label = luigi.Parameter(default="naïve ✓ 'quoted'")
    artifacts = {"rows": "rows.json"}

    def run_task(self) -> None:
        import mlflow

        self.log_metric("loss", 3.0, step=1)
        self.log_metric("loss", 2.0, step=2)
        mlflow.log_metric("user_metric", 1.5)
        mlflow.log_metric("curve", 5.0, step=9)  # a training curve, then a saved final value
        mlflow.log_param("user_param", "x")
        metrics = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "loss": 1.0, "z": 0.0}
        metrics["curve"] = 0.5
        self.save({"rows": [1, 2, 3]}, metrics=metrics)


class Side(lf.MlflowTask):
    """Two of these read the same upstream artifact: one dataset row, two inputs."""

    side = luigi.Parameter()
    data = lf.FileParameter(default="input.csv")
    artifacts = {"part": "part.json"}

    def requires(self) -> dict[str, Any]:
        return {"data": Data()}

    def run_task(self) -> None:
        rows = self.input()["data"]["rows"].load()
        self.save({"part": rows}, metrics={"size": len(rows)})


class Tiny(lf.MlflowTask):
    i = luigi.IntParameter()

    def run_task(self) -> None:
        self.log_metric("i", self.i)


class Join(lf.MlflowTask):
    """Several upstream runs in other experiments."""

    def requires(self) -> dict[str, Any]:
        ups: dict[str, Any] = {f"side_{s}": Side(side=s) for s in ("a", "b")}
        ups.update({f"tiny_{i}": Tiny(i=i) for i in range(3)})
        return ups

    def run_task(self) -> None:
        self.save({}, metrics={"joined": 1})


class BadMetric(lf.MlflowTask):
    """MLflow refuses this metric name: the run ends FAILED, the same either way."""

    def run_task(self) -> None:
        self.save({}, metrics={"bad$name": 1.0})


# An experiment by its name: the build creates experiments in the order its tasks run,
# which Luigi does not fix among tasks of equal priority (nor luigiflow, see luigi_compat).
EXPERIMENT = "(SELECT name FROM experiments e WHERE e.experiment_id = {0}.experiment_id)"
TABLES = {
    "runs": "name, source_type, source_name, entry_point_name, user_id, status, "
    "source_version, lifecycle_stage, artifact_uri, "
    + EXPERIMENT.format("runs")
    + ", deleted_time, "
    "start_time IS NOT NULL, end_time IS NOT NULL, end_time >= start_time",
    "tags": "run_uuid, key, value",
    "params": "run_uuid, key, value",
    "metrics": "run_uuid, key, value, step, is_nan",
    "latest_metrics": "run_uuid, key, value, step, is_nan",
    "datasets": EXPERIMENT.format("datasets")
    + ", name, digest, dataset_source_type, dataset_source, "
    "dataset_schema, dataset_profile, (SELECT COUNT(*) FROM inputs WHERE source_id = "
    "dataset_uuid)",
    "inputs": "source_type, (SELECT name || '@' || digest FROM datasets WHERE "
    "dataset_uuid = source_id), destination_type, destination_id, step, (SELECT name || "
    "'=' || value FROM input_tags t WHERE t.input_uuid = inputs.input_uuid)",
}
# Differ between any two builds: times, the worker's process, the run's own duration.
VOLATILE = {schema.HEARTBEAT_TAG, schema.WORKER_TAG, schema.DURATION_TAG}


def _dump(db: pathlib.Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables a run writes, with run ids, paths and times replaced."""
    with sqlite3.connect(db) as conn:
        names = dict(conn.execute("SELECT run_uuid, name FROM runs").fetchall())
        experiments = dict(conn.execute("SELECT experiment_id, name FROM experiments").fetchall())
        stamps = {r[0] for r in conn.execute("SELECT timestamp FROM metrics")}
        dumped = {}
        for table, columns in TABLES.items():
            rows = []
            for row in conn.execute(f"SELECT {columns} FROM {table}"):
                if table in ("tags",) and row[1] in VOLATILE:
                    row = (*row[:2], "<volatile>")
                rows.append(tuple(_plain(v, names, experiments, db.parent) for v in row))
            dumped[table] = sorted(rows, key=repr)
        dumped["metric times"] = [(len(stamps) > 0,)]
    return dumped


def _plain(
    value: Any, names: dict[str, str], experiments: dict[int, str], root: pathlib.Path
) -> Any:
    if not isinstance(value, str):
        return value
    for run_id, name in names.items():  # whole, and as a dataset digest (16 characters)
        value = value.replace(run_id, f"<{name}>").replace(run_id[:16], f"<{name}>")
    for exp_id, exp_name in experiments.items():  # in artifact locations and UI links
        value = value.replace(f"/mlruns/{exp_id}/", f"/mlruns/<{exp_name}>/")
        value = value.replace(f"/experiments/{exp_id}/", f"/experiments/<{exp_name}>/")
    return value.replace(str(root), "<root>")


def _build_on(root: pathlib.Path, template_db: pathlib.Path, direct: bool) -> pathlib.Path:
    root.mkdir()
    db = root / "mlflow.db"
    shutil.copy(template_db, db)
    (root / "input.csv").write_text("a,b\n1,2\n")
    os.chdir(root)
    uri = f"sqlite:///{db}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    import mlflow

    mlflow.set_tracking_uri(uri)
    store = current.get_store(uri)
    assert isinstance(store, sqlite_reads.SqliteStore)
    store.direct_writes = direct
    assert lf.build([Join()]).success
    failed = lf.build([BadMetric()], raise_on_failure=False)
    assert not failed.success
    return db


def test_a_run_written_in_sql_is_the_run_mlflow_writes(
    tmp_path: pathlib.Path, template_db: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LUIGIFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")
    direct = _dump(_build_on(tmp_path / "direct", template_db, direct=True))
    through = _dump(_build_on(tmp_path / "mlflow", template_db, direct=False))
    assert len(direct["runs"]) == 1 + 2 + 3 + 1 + 1
    for table in direct:
        assert direct[table] == through[table], table
    # the cases the comparison is meant to cover did happen
    metrics = {(r[1], r[4]) for r in direct["latest_metrics"] if r[0] == "<Data()>"}
    assert ("nan", 1) in metrics and ("user_metric", 0) in metrics
    shown = {r[1]: (r[2], r[3]) for r in direct["latest_metrics"] if r[0] == "<Data()>"}
    assert shown["curve"] == (0.5, 9) and shown["loss"] == (1.0, 2)  # what the task saved
    assert any(r[-1] == 2 for r in direct["datasets"])  # one dataset, read by two runs
    failed = [r for r in direct["runs"] if r[0] == "BadMetric()"]
    assert failed[0][5] == "FAILED"


def test_long_tags_and_odd_metrics_are_stored_as_mlflow_stores_them(store: str, client):
    mlflow_way = current.get_store(store)
    assert isinstance(mlflow_way, sqlite_reads.SqliteStore)
    exp = mlflow_way.experiment_id("Odd", create=True)
    assert exp is not None
    values = {"long": "x" * 9000, "plain": "v"}
    metrics = {"m": 2.0, "nan": math.nan, "big": 1e308 * 10}
    written = []
    for direct in (True, False):
        mlflow_way.direct_writes = direct
        run = mlflow_way.create_run(exp, f"r{direct}", {"a": "1"}, params={"p": "é" * 10})
        mlflow_way.finish_run(run.run_id, "FINISHED", metrics, {"m": 3}, 1000, values, [])
        got = client.get_run(run.run_id)
        written.append((got.data.params, got.data.tags, got.data.metrics, got.info.status))
        history = client.get_metric_history(run.run_id, "m")
        written.append([(h.value, h.step, h.timestamp) for h in history])
    (direct_run, direct_history, through_run, through_history) = written
    assert direct_history == through_history == [(2.0, 3, 1000)]
    assert len(direct_run[1]["long"]) == 8000  # cut by MLflow's rule
    for mine, theirs in zip(direct_run, through_run, strict=True):
        if isinstance(mine, dict):
            mine = sorted((k, v) for k, v in mine.items() if k != "mlflow.runName")
            theirs = sorted((k, v) for k, v in theirs.items() if k != "mlflow.runName")
        assert repr(mine) == repr(theirs)  # repr: NaN equals itself


def test_a_schema_the_writes_do_not_fit_is_left_to_mlflow_judged_in_each_transaction(
    store: str,
):
    """A newer revision with the same columns is written in SQL; a required column the
    writes do not know (added under a live writer, as a migration would) or one they
    name that is gone sends the write to MLflow's client, and nothing is written."""
    from luigiflow._store import sqlite_file

    path = sqlite_file.sqlite_path(store)
    exp = current.get_store(store).experiment_id("Schema", create=True)
    assert exp is not None
    writer = sqlite_writes.SqliteWriter(str(path))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00dcafe1234'")
    writer.create_run(exp, "newer", {}, {})  # a revision nobody knows, the same columns
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE runs ADD COLUMN owner_team VARCHAR(20) NOT NULL DEFAULT 'x'")
    writer.create_run(exp, "defaulted", {}, {})  # a new column MLflow may leave out
    for change in (
        # As alembic's batch mode adds a required column on SQLite: the table rebuilt.
        "CREATE TABLE tags_new (key VARCHAR(250) NOT NULL, value VARCHAR(8000), "
        "run_uuid VARCHAR(32) NOT NULL, required_note VARCHAR(20) NOT NULL, "
        "PRIMARY KEY (key, run_uuid)); "
        "INSERT INTO tags_new SELECT key, value, run_uuid, 'x' FROM tags; "
        "DROP TABLE tags; ALTER TABLE tags_new RENAME TO tags;",
        "ALTER TABLE runs DROP COLUMN deleted_time",
    ):
        fresh = str(path) + ".copy"
        with sqlite3.connect(path) as conn:
            conn.execute(f"VACUUM INTO '{fresh}'")
        with sqlite3.connect(fresh) as conn:
            conn.executescript(change)
        stale = sqlite_writes.SqliteWriter(fresh)
        with pytest.raises(sqlite_writes.Unwritable, match="missing"):
            stale.create_run(exp, "r", {}, {})
        with sqlite3.connect(fresh) as conn:  # and nothing was written
            assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (2,)
        os.remove(fresh)
    with sqlite3.connect(path) as conn:  # under the writer that already judged the schema
        conn.execute("ALTER TABLE runs DROP COLUMN deleted_time")
    with pytest.raises(sqlite_writes.Unwritable, match=r"runs\.deleted_time"):
        writer.create_run(exp, "r", {}, {})


def test_mlflows_client_reads_and_filters_runs_written_in_sql(store: str, client):
    from tests.dags import Leaf

    assert isinstance(current.get_store(store), sqlite_reads.SqliteStore)
    result = lf.build([Leaf(size=4)])
    run = client.get_run(result.runs[Leaf(size=4)])
    assert run.info.status == "FINISHED" and run.data.params["size"] == "4"
    found = client.search_runs(
        [run.info.experiment_id], "params.size = '4' AND attributes.status = 'FINISHED'"
    )
    assert [r.info.run_id for r in found] == [run.info.run_id]
    assert Leaf(size=4).load_output() is not None


def test_a_run_started_and_finished_through_the_port_reads_back(run_store):
    # The same contract for the in-memory store of the fast tier and the SQL one.
    from luigiflow._store.port import DatasetRef

    exp = run_store.experiment_id("Port", create=True)
    assert exp is not None
    run = run_store.create_run(exp, "Port()", {schema.IDENTITY_TAG: "abc"}, params={"alpha": "0.5"})
    assert run.info.status == "RUNNING" and run.data.params == {"alpha": "0.5"}
    inputs = [DatasetRef("up.model", "d1", "runs:/x/model.pkl")]
    run_store.finish_run(run.run_id, "FINISHED", {"loss": 0.25}, {"loss": 7}, 5, {"t": "v"}, inputs)
    done = run_store.get_run(run.run_id)
    assert done.info.status == "FINISHED" and done.info.end_time is not None
    assert done.data.params == {"alpha": "0.5"} and done.data.metrics == {"loss": 0.25}
    assert done.data.tags["t"] == "v" and done.data.tags[schema.IDENTITY_TAG] == "abc"
    assert [r.run_id for r in run_store.runs_with_identity(exp, "abc", 5)] == [run.run_id]


def test_an_interrupt_while_waiting_for_the_write_lock_leaves_no_transaction_open(store: str):
    """Ctrl-C while another writer holds the store: SQLite's busy wait cannot be cut short,
    so the interrupt is raised as soon as `BEGIN IMMEDIATE` returns. The transaction it
    began must not stay open on the writer's connection (never closed): it held the write
    lock, so every other process got "database is locked" and every later build in this
    process (a notebook) "cannot start a transaction within a transaction"."""
    import signal
    import sys
    import threading

    from luigiflow._store import sqlite_file

    path = str(sqlite_file.sqlite_path(store))
    writer = sqlite_writes.SqliteWriter(path)
    exp = current.get_store(store).experiment_id("Interrupted", create=True)
    assert exp is not None
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's write in progress
    main = threading.main_thread().ident
    assert main == threading.get_ident()

    def interrupt_while_waiting() -> None:
        # The main thread is blocked inside BEGIN IMMEDIATE: its frame is _transaction's.
        while (frame := sys._current_frames().get(main)) is None or (
            frame.f_code.co_name != "_transaction"
        ):
            threading.Event().wait(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        holder.execute("ROLLBACK")  # the other writer is done: BEGIN returns

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        helper = threading.Thread(target=interrupt_while_waiting)
        helper.start()
        with pytest.raises(KeyboardInterrupt):
            writer.create_run(exp, "Interrupted()", {}, {})
        helper.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # not "database is locked"
    other.execute("ROLLBACK")
    run = writer.create_run(exp, "Interrupted()", {}, {"p": "1"})  # the next build writes
    writer.finish_run(run.run_id, "FINISHED", [], {}, [])
    assert current.get_store(store).get_run(run.run_id).info.status == "FINISHED"


def test_a_tag_set_in_sql_is_the_tag_mlflow_sets(store: str, client):
    """Heartbeats and checkpoints tag an active run: the same rows either way."""
    sql_way = current.get_store(store)
    assert isinstance(sql_way, sqlite_reads.SqliteStore)
    exp = sql_way.experiment_id("Tagged", create=True)
    assert exp is not None
    written = []
    for direct in (True, False):
        sql_way.direct_writes = direct
        run = sql_way.create_run(exp, f"r{direct}", {"a": "1"})
        for key, value in (("beat", "1.0"), ("beat", "2.0"), ("long", "y" * 9000)):
            sql_way.set_tag(run.run_id, key, value)
        tags = client.get_run(run.run_id).data.tags
        written.append({k: tags[k] for k in ("a", "beat", "long")})
    assert written[0] == written[1]
    assert written[0]["beat"] == "2.0" and len(written[0]["long"]) == 8000


def test_a_live_metric_logged_in_sql_is_the_metric_mlflow_logs(store: str, client):
    """`self.log_metric` while a task runs: the same history and shown value either way."""
    sql_way = current.get_store(store)
    assert isinstance(sql_way, sqlite_reads.SqliteStore)
    exp = sql_way.experiment_id("Live", create=True)
    assert exp is not None
    # Steps differ: of two values at one step MLflow shows the later (by the millisecond).
    points = [(1.0, 0), (0.5, 2), (math.nan, 4), (3.0, 1), (math.inf, 6), (-1.0, 5), (2.0, 3)]
    written = []
    for direct in (True, False):
        sql_way.direct_writes = direct
        run = sql_way.create_run(exp, f"r{direct}", {"a": "1"})
        for value, step in points:
            sql_way.log_metric(run.run_id, "loss", value, step=step)
        history = client.get_metric_history(run.run_id, "loss")
        shown = client.get_run(run.run_id).data.metrics["loss"]
        written.append((repr(sorted((h.step, repr(h.value)) for h in history)), repr(shown)))
    assert written[0] == written[1]
    assert written[0][0].count("(") == len(points)


def test_an_experiment_created_in_sql_is_the_experiment_mlflow_creates(store: str, client):
    ours = current.get_store(store)
    assert isinstance(ours, sqlite_reads.SqliteStore)
    made = ours.experiment_id("made in SQL", create=True)
    kind = {schema.EXPERIMENT_KIND_TAG: schema.EXPERIMENT_KIND}
    theirs = client.create_experiment("made by MLflow", tags=kind)
    assert int(made) == int(theirs) - 1  # the same id sequence

    def rows(exp_id: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        with sqlite3.connect(store.removeprefix("sqlite:///")) as conn:
            conn.row_factory = sqlite3.Row
            row = dict(
                conn.execute(
                    "SELECT * FROM experiments WHERE experiment_id = ?", (exp_id,)
                ).fetchone()
            )
            tags = conn.execute(
                "SELECT key, value FROM experiment_tags WHERE experiment_id = ?", (exp_id,)
            ).fetchall()
        for key in ("experiment_id", "name", "creation_time", "last_update_time"):
            row.pop(key)
        row["artifact_location"] = row["artifact_location"].rsplit("/", 1)[0]
        return row, [tuple(t) for t in tags]

    assert rows(made) == rows(theirs)
    assert client.get_experiment(made).artifact_location.endswith(f"/mlruns/{made}")
    # A name already taken is left to MLflow's client (which finds the experiment).
    assert ours._create_experiment("made by MLflow") == theirs
