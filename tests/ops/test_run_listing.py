"""`runs --limit N` reads only the head of the store's listing (duplicates counted by the
store) and shows the rows the whole listing would; the whole listing is the one read
through MLflow's client, which has no reads by identity."""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import sqlite3
import time

import pytest

from luigiflow._errors import RunNotFoundError
from luigiflow._ops.run_listing import run_listing
from luigiflow._store import current, schema, sqlite_reads
from luigiflow._store.mlflow_store import MlflowStore
from luigiflow._store.port import IdentityReads
from tests.store.mixed import populate


def _scatter(store: MlflowStore) -> None:
    """Runs of one family `Scattered` in two experiments neither of which is named for it:
    a duplicate across the experiments, equal start times in both, failed and deleted runs."""
    now = int(time.time() * 1000)
    for exp_name, runs in {
        "scatter-a": [("s1", now, "FINISHED"), ("s2", now + 1, "FAILED"), ("s3", now + 2, None)],
        "scatter-b": [("s1", now + 3, "FINISHED"), ("s4", now, "FINISHED"), ("s5", now, "KILLED")],
    }.items():
        exp = store.experiment_id(exp_name, create=True)
        assert exp is not None
        for identity, start, status in runs:
            tags = {schema.IDENTITY_TAG: identity, schema.FAMILY_TAG: "Scattered"}
            run = store.create_run(exp, "Scattered-test", tags, start_time=start)
            store.terminate(run.info.run_id, status or "FINISHED")
            if status is None:
                store.delete_run(run.info.run_id)
        # A run of another family in the same experiment is not listed.
        other = store.create_run(exp, "x", {schema.FAMILY_TAG: "Other"}, start_time=now)
        store.terminate(other.info.run_id, "FINISHED")


@pytest.fixture(scope="module")
def populated_db(template_db: pathlib.Path, tmp_path_factory: pytest.TempPathFactory):
    """The mixed and scattered runs, written once for the module's ~80 read-only tests
    (writing them through MLflow's client for each test was most of the module's time)."""
    folder = tmp_path_factory.mktemp("listing")
    db = folder / "mlflow.db"
    shutil.copy(template_db, db)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # MLflow places experiments' artifact folders under the cwd
        theirs = MlflowStore(f"sqlite:///{db}")
        populate(theirs)
        _scatter(theirs)
    # A consistent copy that no connection holds open (the store may be in WAL mode).
    copy = folder / "populated.db"
    with (
        contextlib.closing(sqlite3.connect(db)) as source,
        contextlib.closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
    return copy


@pytest.fixture
def stores(store: str, populated_db: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    shutil.copy(populated_db, store.removeprefix("sqlite:///"))  # before any store opens it
    theirs = MlflowStore(store)
    ours = sqlite_reads.SqliteStore(store)
    assert isinstance(ours, IdentityReads) and not isinstance(theirs, IdentityReads)
    monkeypatch.setattr(sqlite_reads, "ID_CHUNK", 2)  # the head spans several chunks
    return ours, theirs, monkeypatch


def _listing(which: MlflowStore, monkeypatch: pytest.MonkeyPatch, *args, **kwargs):
    monkeypatch.setattr(current, "get_store", lambda uri=None: which)
    rows = run_listing(*args, **kwargs)
    return json.loads(json.dumps(rows).replace("NaN", '"nan"'))  # NaN != NaN in a dict


@pytest.mark.parametrize("name", ["Fan", "Scattered"])
@pytest.mark.parametrize("status", ["finished", "failed", "killed", "all"])
@pytest.mark.parametrize("limit", [1, 3, 5, 100])
def test_the_newest_rows_are_those_of_the_whole_listing(stores, name, status, limit):
    ours, theirs, monkeypatch = stores
    head = _listing(ours, monkeypatch, name, status=status, limit=limit)
    whole = _listing(ours, monkeypatch, name, status=status)  # no limit: every run read
    assert head == whole[:limit]
    # Runs of two experiments that started at once come in the order the store lists
    # experiments, which differs between stores: the rows are the same.
    real = _listing(theirs, monkeypatch, name, status=status)
    assert sorted(whole, key=lambda r: r["run_id"]) == sorted(real, key=lambda r: r["run_id"])
    assert len(whole) >= (1 if status in ("failed", "killed") else 3)


def test_duplicates_are_counted_beyond_the_rows_shown(stores):
    ours, _, monkeypatch = stores
    [newest] = _listing(ours, monkeypatch, "Scattered", limit=1)
    # s1's other FINISHED run is in the other experiment, older than the row shown.
    assert newest["identity"] == "s1" and newest["duplicate"]
    [fan] = _listing(ours, monkeypatch, "Fan", limit=1)
    assert not fan["duplicate"]


def test_a_name_that_is_nothing_says_so_on_the_short_path_too(stores):
    ours, _, monkeypatch = stores
    with pytest.raises(RunNotFoundError, match="no experiment and no task family named 'Fann'"):
        _listing(ours, monkeypatch, "Fann", limit=20)


QUOTE = 'it\'s "odd" ünïcode'
SHAPES = [
    {"where": {"quote": QUOTE}},
    {"where": {"quote": QUOTE, "empty": ""}},
    {"sort_by": "score"},
    {"sort_by": "score", "ascending": True},
    {"sort_by": "bad"},  # NaN everywhere: the order a sort leaves them in
    {"sort_by": "score", "where": {"empty": ""}},
    {"linked": "every other run"},
    {"linked": "every other run", "sort_by": "score", "status": "all"},
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("limit", [1, 2, 5, 100])
@pytest.mark.parametrize("which", ["sql", "mlflow"])
def test_filtered_and_sorted_rows_with_a_limit_are_the_head_of_the_whole(
    stores, shape, limit, which
):
    ours, theirs, monkeypatch = stores
    store = ours if which == "sql" else theirs
    kwargs = dict(shape)
    if kwargs.get("linked"):
        listed = _listing(store, monkeypatch, "Fan", status=kwargs.get("status", "finished"))
        kwargs["linked"] = {r["run_id"] for r in listed[::2]}
    whole = _listing(store, monkeypatch, "Fan", **kwargs)
    assert whole, "the shape selects some runs"
    assert _listing(store, monkeypatch, "Fan", limit=limit, **kwargs) == whole[:limit]


@pytest.mark.parametrize(
    ("name", "shape", "error"),
    [
        ("Fan", {"where": {"qoute": "x"}}, "have no parameter 'qoute'"),
        ("Fan", {"where": {"quote": QUOTE, "qoute": "x"}}, "have no parameter 'qoute'"),
        ("Fan", {"sort_by": "scor"}, "have no metric 'scor'"),
        ("Scattered", {"where": {"index": "1"}}, "have no parameter 'index'"),
        ("Fann", {"sort_by": "score"}, "no experiment and no task family named 'Fann'"),
    ],
)
def test_mistakes_read_the_same_with_a_limit(stores, name, shape, error):
    from luigiflow._errors import LuigiflowError

    ours, _, monkeypatch = stores
    messages = []
    for limit in (None, 2):
        with pytest.raises(LuigiflowError, match=error) as caught:
            _listing(ours, monkeypatch, name, limit=limit, **shape)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
