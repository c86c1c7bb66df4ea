"""Under a central scheduler (luigid) a build sets Luigi's worker settings it needs for
the build's duration only, and keeps every one the user set (_ops/build.py)."""

from __future__ import annotations

import luigi
import luigi.configuration
import luigi.worker

from luigiflow._ops import build


def _worker_settings() -> luigi.worker.worker:
    return luigi.worker.worker()


def test_under_luigid_a_worker_asks_for_work_again_within_a_second_and_waits_for_others():
    before = _worker_settings()
    assert (before.keep_alive, before.wait_interval, before.wait_jitter) == (False, 1.0, 5.0)
    with build._waiting_for_other_workers(shared=True):
        during = _worker_settings()
        # Luigi's default (1 s plus up to 5 s of jitter) left idle clients asleep while
        # the tasks another client's run unblocked waited for them.
        assert during.keep_alive is True
        assert during.wait_interval + during.wait_jitter <= 1.0
    after = _worker_settings()
    assert (after.keep_alive, after.wait_interval, after.wait_jitter) == (False, 1.0, 5.0)


def test_a_users_own_worker_settings_are_kept():
    config = luigi.configuration.get_config()
    if not config.has_section("worker"):
        config.add_section("worker")
    config.set("worker", "wait_jitter", "3.0")
    try:
        with build._waiting_for_other_workers(shared=True):
            assert _worker_settings().wait_jitter == 3.0
            assert _worker_settings().wait_interval == 0.5
        assert _worker_settings().wait_jitter == 3.0
    finally:
        config.remove_option("worker", "wait_jitter")


def test_without_a_central_scheduler_nothing_is_set():
    with build._waiting_for_other_workers(shared=False):
        settings = _worker_settings()
        assert (settings.keep_alive, settings.wait_interval) == (False, 1.0)
