"""Basic auth as docs/team.md sets it up: `mlflow server --app-name basic-auth` with
MLflow's auth extra (Flask-WTF), a static `MLFLOW_FLASK_SERVER_SECRET_KEY`, an admin from
its configuration file and MLflow's default permission READ. Clients give
MLFLOW_TRACKING_USERNAME/PASSWORD; a build with them runs as on an open server, one
without them or with a wrong password fails in one line naming the server and those
variables, and a user without EDIT on an experiment another user created is told which
experiment, which permission to ask for and who can grant it.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from tests.servers import auth_request, mlflow_basic_auth_server
from tests.team.artifact_tasks import Doubled, Raw

pytestmark = [pytest.mark.xdist_group("servers"), pytest.mark.slow]

USERS = {"alice": "alice-password-1", "bob": "bob-password-2"}
# As docs/team.md recommends: the server checks a password's hash once a minute per user,
# not on every request.
CACHE = "auth_cache_ttl_seconds = 60\n"


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("auth-server")
    with mlflow_basic_auth_server(folder, CACHE) as url:
        for user, password in USERS.items():
            auth_request(url, "users/create", {"username": user, "password": password})
        yield url


@pytest.fixture
def login(auth_server, store, monkeypatch, tmp_path: pathlib.Path) -> Callable[..., None]:
    """login(user, password=None): this process's builds talk to the basic-auth server as
    `user` (None: no credentials at all)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials of the machine
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)

    def become(user: str | None, password: str | None = None) -> None:
        if user is None:
            monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
            monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
            return
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password or USERS[user])

    return become


def test_a_build_with_credentials_runs_on_a_basic_auth_server(login):
    import luigiflow as lf

    login("alice")
    task = Doubled(size=3)
    result = lf.build([task])
    assert sorted(map(str, result.executed)) == ["Doubled(size=3)", "Raw(size=3)"]
    assert np.array_equal(task.load_output("doubled"), np.arange(3) * 2)
    assert lf.build([task]).executed == []


@pytest.mark.parametrize("password", [None, "not-her-password"], ids=["none", "wrong"])
def test_missing_or_wrong_credentials_are_one_line_naming_the_server(
    login, auth_server, capsys, password
):
    import luigiflow as lf
    from luigiflow.cli import main

    login(None if password is None else "alice", password)
    with pytest.raises(lf.LuigiflowError) as caught:
        lf.build([Raw(size=11)])
    error = caught.value
    if isinstance(error, lf.BuildError):
        [error] = error.failures.values()
    text = str(error)
    assert isinstance(error, lf.TrackingError), text
    assert auth_server in text and "HTTP 401" in text, text
    assert "MLFLOW_TRACKING_USERNAME" in text and "MLFLOW_TRACKING_PASSWORD" in text, text
    assert "is an MLflow tracking server" not in text and "\n" not in text, text
    assert (password or "<nothing>") not in text

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["runs", "Raw"])
    assert exited.value.code == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("TrackingError: ") and "MLFLOW_TRACKING_USERNAME" in line, line


def test_a_user_denied_in_an_experiment_another_created_is_told_what_to_ask_for(login, auth_server):
    import luigiflow as lf

    login("alice")
    lf.build([Raw(size=4)])  # alice creates (or already holds) experiment Raw: MANAGE
    login("bob")
    denied = Raw(size=5)
    with pytest.raises(lf.BuildError) as caught:
        lf.build([denied])
    [error] = caught.value.failures.values()
    text = str(error)
    assert isinstance(error, lf.TrackingError), text
    assert auth_server in text and "bob" in text and "experiment 'Raw'" in text, text
    assert "EDIT permission" in text and "MANAGE" in text and "admin" in text, text
    assert "\n" not in text, text

    # What the message says to do: a user with MANAGE on the experiment (alice, who
    # created it) grants EDIT, with MLflow's client of the basic-auth app.
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    login("alice")
    raw_id = MlflowClient(auth_server).get_experiment_by_name("Raw").experiment_id
    grant(get_app_client("basic-auth", tracking_uri=auth_server), raw_id, "bob", "EDIT")
    login("bob")
    assert lf.build([denied]).executed == [denied]


def grant(auth, experiment_id: str, user: str, permission: str) -> None:
    """As docs/team.md shows: MLflow 3.17's call, or the one of earlier releases."""
    if hasattr(auth, "grant_user_permission"):
        auth.grant_user_permission(user, "experiment", experiment_id, permission)
    else:
        auth.create_experiment_permission(experiment_id, user, permission)
