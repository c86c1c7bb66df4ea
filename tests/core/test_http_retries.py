"""MLflow's HTTP retry variables: luigiflow bounds them, widens its own to the outage
window once a server answered, and never overrides a value the user set (_settings)."""

from __future__ import annotations

import os

import pytest

from luigiflow import _settings

RETRIES = _settings.HTTP_MAX_RETRIES


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _settings.HTTP_RETRY_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(_settings.OUTAGE_WINDOW_S, raising=False)
    _settings._ours.clear()


@pytest.mark.usefixtures("unset")
def test_luigiflows_own_retry_count_is_widened_to_the_outage_window() -> None:
    _settings.bound_http_retries()
    assert os.environ[RETRIES] == _settings.HTTP_RETRY_DEFAULTS[RETRIES]
    _settings.ride_out_outages()
    retries = int(os.environ[RETRIES])
    assert 2**retries - 2 >= _settings.outage_window() > 2 ** (retries - 1) - 2
    _settings.ride_out_outages()  # again (another server answered): still ours, unchanged
    assert int(os.environ[RETRIES]) == retries


@pytest.mark.usefixtures("unset")
def test_a_retry_count_the_user_sets_after_luigiflow_set_its_own_is_kept() -> None:
    _settings.bound_http_retries()
    os.environ[RETRIES] = "0"  # the user's own, later in the same process (a notebook)
    _settings.ride_out_outages()
    assert os.environ[RETRIES] == "0"
    _settings.bound_http_retries()
    assert os.environ[RETRIES] == "0"
