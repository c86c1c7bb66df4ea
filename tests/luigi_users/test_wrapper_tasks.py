"""plan, its graph export and the build summary see through plain Luigi tasks
(`WrapperTask`, range tasks): every luigiflow task below is shown with its reason."""

from __future__ import annotations

import pytest

import luigiflow as lf
from luigiflow._ops.graph import export
from luigiflow._ops.plan import REUSED, WILL_RUN, make_plan
from tests.conftest import REPO, luigiflow_cli
from tests.luigi_users.wrapped_tasks import Default, Model, Prepare


def _statuses(plan) -> dict[str, str]:
    return {entry.task.task_id: entry.status for root in plan for entry in root.walk()}


def test_plan_shows_every_task_below_a_wrapper(store: str) -> None:
    plan = make_plan([Default()])
    statuses = _statuses(plan)
    assert statuses[Default().task_id] == WILL_RUN
    assert statuses[Model().task_id] == WILL_RUN
    for part in ("companies", "shuttles", "reviews"):
        assert statuses[Prepare(part=part).task_id] == WILL_RUN
    assert any("will run" in r for r in plan[0].reasons), plan[0].reasons
    mermaid = export(plan, "mermaid")
    assert mermaid.count("will_run") >= 5, mermaid


def test_plan_after_a_partial_build_names_what_is_missing(store: str) -> None:
    lf.build([Model()])
    plan = make_plan([Default()])
    statuses = _statuses(plan)
    assert statuses[Model().task_id] == REUSED
    assert statuses[Prepare(part="reviews").task_id] == WILL_RUN
    assert "reviews" in " ".join(plan[0].reasons), plan[0].reasons
    lf.build([Default()])
    statuses = _statuses(make_plan([Default()]))
    assert set(statuses.values()) == {REUSED}, statuses


@pytest.mark.slow
def test_run_reports_a_complete_wrapper_as_complete(store: str, tmp_path) -> None:
    args = ("--module", "tests.luigi_users.wrapped_tasks", "Default")
    luigiflow_cli("run", *args, cwd=REPO)
    again = luigiflow_cli("run", *args, "--workers", "1", cwd=REPO)
    line = next(row for row in again.stdout.splitlines() if "Default(" in row and "│" in row)
    assert "complete" in line and "not run" not in line, again.stdout
    planned = luigiflow_cli("plan", *args, cwd=REPO)
    assert "Prepare" in planned.stdout and "Model" in planned.stdout, planned.stdout
