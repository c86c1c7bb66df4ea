"""A daily backfill as a Luigi user writes it: one luigiflow task per day, driven by
Luigi's range tools (RangeDaily, RangeHourly)."""

from __future__ import annotations

import datetime

import luigi

import luigiflow as lf


class DailyEvents(lf.MlflowTask):
    artifacts = {"events": "events.json"}
    date = luigi.DateParameter()

    def run_task(self) -> None:
        self.save({"events": {"day": self.date.isoformat(), "n": self.date.day}})


class HourlyEvents(lf.MlflowTask):
    artifacts = {"events": "events.json"}
    hour = luigi.DateHourParameter()

    def run_task(self) -> None:
        self.save({"events": {"hour": self.hour.isoformat(), "n": self.hour.hour}})


START = datetime.date(2026, 1, 1)
