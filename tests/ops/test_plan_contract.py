"""`plan` decides reused / will run and says why, against either store (contract)."""

from __future__ import annotations

from luigiflow._ops.plan import REUSED, WILL_RUN, make_plan
from tests.conftest import add_run
from tests.dags import Leaf, Middle, Source


def test_plan_reuses_complete_chain_and_explains_a_changed_parameter(session):
    add_run(session.store, Source(size=3))
    add_run(session.store, Middle(size=3, factor=2))
    add_run(session.store, Leaf(size=3, factor=2, label="x"))
    [same] = make_plan([Leaf(size=3, factor=2, label="x")], session=session)
    assert same.status == REUSED
    [changed] = make_plan([Leaf(size=3, factor=5, label="x")], session=session)
    assert changed.status == WILL_RUN
    middle = changed.upstream["middle"]
    assert middle.status == WILL_RUN
    assert any("parameter factor changed: 2 -> 5" in r for r in middle.reasons)
    assert middle.upstream["source"].status == REUSED
    assert any("upstream will run: middle" in r for r in changed.reasons)


def test_plan_of_a_new_task_says_no_run_yet(session):
    [entry] = make_plan([Source(size=11)], session=session)
    assert entry.status == WILL_RUN
    assert entry.reasons == ["no run of this task yet"]


def test_plan_says_a_run_of_an_older_store_format_runs_again(session):
    from luigiflow._store import schema

    # As a release before store format 2 recorded it: same family and parameters, an
    # identity computed the old way, no format tag.
    old = add_run(
        session.store,
        Source(size=4),
        tags={schema.IDENTITY_TAG: "0" * 64, schema.STORE_FORMAT_TAG: "1"},
    )
    [entry] = make_plan([Source(size=4)], session=session)
    assert entry.status == WILL_RUN
    [reason] = entry.reasons
    assert old.info.run_id in reason and "store format 1" in reason
    assert f"store format {schema.STORE_FORMAT}" in reason


def test_the_nearest_run_has_fewest_changed_parameters_and_is_the_newest_among_equals(session):
    add_run(session.store, Middle(size=3, factor=2), start_time=1_000)  # 1 change, older
    add_run(session.store, Middle(size=4, factor=7), start_time=2_000)  # 1 change, newer
    add_run(session.store, Middle(size=9, factor=9), start_time=3_000)  # 2 changes, newest
    [entry] = make_plan([Middle(size=3, factor=7)], session=session)
    assert entry.status == WILL_RUN
    assert [(c.name, c.old, c.new) for c in entry.changed] == [("size", "4", "3")]
