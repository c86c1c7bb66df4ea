"""Luigi's range tools drive luigiflow tasks unchanged: completeness of a whole range
comes from one batched store lookup (MlflowTask.bulk_complete), never from output paths."""

from __future__ import annotations

import datetime
import subprocess
import sys

import luigi
import pytest
from luigi.tools.range import RangeDaily, RangeHourly

import luigiflow as lf
from tests.conftest import REPO, luigiflow_cli, runs_of
from tests.luigi_users.daily_tasks import START, DailyEvents, HourlyEvents

DAYS = 31
# Range tools only look `days_back` (100) days behind now: pin now after the range.
NOW = int(datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC).timestamp())


def _stop(days: int) -> datetime.date:
    return START + datetime.timedelta(days=days)


def test_bulk_complete_answers_a_whole_range_from_the_store(store: str) -> None:
    dates = [_stop(i) for i in range(DAYS)]
    assert DailyEvents.bulk_complete(dates) == []
    lf.build([DailyEvents(date=d) for d in dates[:10]])
    # Luigi calls bulk_complete with a partial of the class and a one-shot iterator.
    done = DailyEvents.bulk_complete.__func__(DailyEvents, iter(dates))  # type: ignore[attr-defined]
    assert list(done) == dates[:10]


def test_range_daily_through_luigi_build_executes_only_new_days(store: str, client) -> None:
    ok = luigi.build(
        [RangeDaily(of=DailyEvents, start=START, stop=_stop(DAYS), now=NOW)],
        local_scheduler=True,
        detailed_summary=True,
    )
    assert ok.status.name == "SUCCESS", ok.summary_text
    assert len(runs_of(client, "DailyEvents", "FINISHED")) == DAYS
    result = lf.build([RangeDaily(of=DailyEvents, start=START, stop=_stop(DAYS + 5), now=NOW)])
    assert len(result.executed) == 5
    assert len(runs_of(client, "DailyEvents", "FINISHED")) == DAYS + 5
    assert DailyEvents(date=_stop(DAYS + 4)).load_output("events")["n"] == _stop(DAYS + 4).day


def test_range_hourly_through_lf_build(store: str, client) -> None:
    start = datetime.datetime(2026, 1, 1, 0)
    first = RangeHourly(of=HourlyEvents, start=start, stop=start.replace(hour=20), now=NOW)
    result = lf.build([first])
    assert len(result.executed) == 20
    longer = RangeHourly(of=HourlyEvents, start=start, stop=start.replace(day=2, hour=8), now=NOW)
    grown = lf.build([longer])
    assert len(grown.executed) == 12
    assert len(runs_of(client, "HourlyEvents", "FINISHED")) == 32


@pytest.mark.slow
def test_range_daily_through_the_luigi_and_luigiflow_commands(store: str, client, tmp_path) -> None:
    luigi_cmd = [
        sys.executable,
        "-m",
        "luigi",
        "--module",
        "tests.luigi_users.daily_tasks",
        "RangeDaily",
        "--of",
        "DailyEvents",
        "--start",
        START.isoformat(),
        "--stop",
        _stop(DAYS).isoformat(),
        "--now",
        str(NOW),
        "--local-scheduler",
    ]
    out = subprocess.run(luigi_cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(runs_of(client, "DailyEvents", "FINISHED")) == DAYS
    out = luigiflow_cli(
        "run",
        "--module",
        "tests.luigi_users.daily_tasks",
        "RangeDaily",
        "--of",
        "DailyEvents",
        "--start",
        START.isoformat(),
        "--stop",
        _stop(DAYS + 3).isoformat(),
        "--now",
        str(NOW),
        cwd=REPO,
    )
    assert "executed 3" in out.stdout, out.stdout
    assert len(runs_of(client, "DailyEvents", "FINISHED")) == DAYS + 3
