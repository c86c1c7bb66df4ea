"""Typed parameters accept the strings Luigi's command line would parse (README quick start)."""

from __future__ import annotations

import datetime as dt

import pytest

import luigiflow as lf
from tests.everyday_dags import Typed


def test_strings_are_parsed_like_the_command_line(store):
    task = Typed(
        day="2026-01-01", count="3", ratio="0.25", flag="true", items="[1, 2]", span="2 days"
    )
    assert task.day == dt.date(2026, 1, 1)
    assert task.count == 3
    assert task.ratio == 0.25
    assert task.flag is True
    assert list(task.items) == [1, 2]
    assert task.span == dt.timedelta(days=2)
    typed = Typed(
        day=dt.date(2026, 1, 1),
        count=3,
        ratio=0.25,
        flag=True,
        items=[1, 2],
        span=dt.timedelta(days=2),
    )
    assert task.identity == typed.identity  # the same task, however it was written


def test_a_string_that_does_not_parse_is_one_line_naming_task_and_parameter(store):
    with pytest.raises(lf.ParameterError) as caught:
        Typed(day="01/02/2026", count="three")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("Typed: ")
    assert "'day'" in message and "'01/02/2026'" in message
    assert "'count'" in message and "'three'" in message
    assert "YYYY-MM-DD" in message  # says what would parse


def test_build_with_a_date_string_runs(store):
    result = lf.build([Typed(day="2026-03-04")])
    assert [t.day for t in result.executed] == [dt.date(2026, 3, 4)]
