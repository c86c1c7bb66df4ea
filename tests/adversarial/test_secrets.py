"""Secret parameter values as an attacker who reads the store or the build log would look
for them: not guessable from the identity tag, in no rendering (as is, repr, URL-encoded)
in the store, `show` or `luigiflow run`'s output, under the broader name rules and the
user's own pattern."""

from __future__ import annotations

import os
import re
import urllib.parse

import luigi
import pytest

import luigiflow as lf
from luigiflow import _settings
from luigiflow._core import redaction
from luigiflow._core.identity import compute_identity, encode_value
from luigiflow._errors import ConfigError
from tests.adversarial.cli_inprocess import read_command
from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of

GUESSABLE = "Summer2024!"


class GuessableLogin(lf.MlflowTask):
    artifacts = {"o": "o.json"}
    api_token = luigi.Parameter()
    n = luigi.IntParameter(default=1)

    def run_task(self):
        self.save({"o": self.n})


def fresh(**params: object) -> GuessableLogin:
    luigi.task_register.Register.clear_instance_cache()  # Luigi caches instances by params
    return GuessableLogin(**params)


def test_the_identity_tag_cannot_confirm_a_guessed_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("LUIGIFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LUIGIFLOW_SIGNING_KEY", raising=False)
    task = fresh(api_token=GUESSABLE)
    # What an attacker computes from the run's recorded facts and the right guess.
    for guess in ("password", GUESSABLE):
        params = {"api_token": encode_value(guess), "n": encode_value(1)}
        module = "tests.adversarial.test_secrets"
        assert compute_identity(module, "GuessableLogin", 0, params, {}) != task.identity
    # Still an identity: the same secret is the same task, another secret another task.
    assert fresh(api_token=GUESSABLE).identity == task.identity
    assert fresh(api_token="Winter2024!").identity != task.identity
    # The key is this user's own (made once, never in the store) or the team key, which
    # every holder shares: two holders of one team key agree.
    assert (tmp_path / "cache" / "identity.key").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("LUIGIFLOW_SIGNING_KEY", "team-key-for-identity-1")
    team = fresh(api_token=GUESSABLE).identity
    assert team != task.identity
    monkeypatch.setenv("LUIGIFLOW_CACHE_DIR", str(tmp_path / "another-user"))
    assert fresh(api_token=GUESSABLE).identity == team


def test_an_identity_key_that_cannot_be_made_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("LUIGIFLOW_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    monkeypatch.delenv("LUIGIFLOW_SIGNING_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"identity key .* set LUIGIFLOW_CACHE_DIR"):
        fresh(api_token=GUESSABLE).identity  # noqa: B018


def test_broader_secret_names_and_a_user_pattern(monkeypatch):
    monkeypatch.delenv("LUIGIFLOW_SECRET_PATTERN", raising=False)
    secret = [
        "db_passwd", "credentials", "aws_credential", "auth", "basic_auth", "oauth",
        "user_pwd", "PWD_HASH", "private_key", "gpgPassphrase", "session_cookie",
        "Authorization", "userPass", "api_token", "client_secret",
    ]  # fmt: skip
    plain = ["author", "passes", "credit", "n_layers", "epochs", "compass", "path"]
    assert [n for n in secret if not redaction.looks_secret(n)] == []
    assert [n for n in plain if redaction.looks_secret(n)] == []
    assert not redaction.looks_secret("dsn")
    monkeypatch.setenv("LUIGIFLOW_SECRET_PATTERN", r"^dsn$|_salt$")
    assert redaction.looks_secret("dsn") and redaction.looks_secret("hash_salt")
    assert not redaction.looks_secret("dsn_count")
    monkeypatch.setenv("LUIGIFLOW_SECRET_PATTERN", "([unclosed")
    with pytest.raises(ConfigError, match="LUIGIFLOW_SECRET_PATTERN"):
        _settings.validate()


def test_scrub_catches_repr_json_and_url_encoded_forms():
    secret = 'Pa"ss\\w/rd 7&x'
    text = " | ".join(
        [secret, repr(secret), urllib.parse.quote(secret), urllib.parse.quote_plus(secret)]
    )
    lower_escapes = re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), urllib.parse.quote(secret))
    text += " | " + lower_escapes  # as some encoders write them
    scrubbed = redaction.scrub(text, [secret])
    assert scrubbed.count("<redacted>") == 5, scrubbed
    for form in redaction.renderings(secret):
        assert form not in scrubbed


LOGIN = """
import urllib.parse

import luigi
import luigiflow as lf


class Login(lf.MlflowTask):
    artifacts = {"o": "o.json"}
    db_passwd = luigi.Parameter()
    credentials = luigi.Parameter()
    dsn = luigi.Parameter()

    def run_task(self):
        raise RuntimeError(
            f"login refused: {self.db_passwd!r} "
            f"https://h/?c={urllib.parse.quote(self.credentials)} {self.dsn}"
        )
"""
PASSWD = 'Pa"ss\\word 77'
CREDENTIALS = "cr ed/en&tials=99"
DSN = "postgresql-dsn-4455"


def forms() -> set[str]:
    return {f for s in (PASSWD, CREDENTIALS, DSN) for f in redaction.renderings(s)}


@pytest.mark.slow
def test_no_rendering_of_a_secret_in_the_store_show_or_the_run_output(
    store, client, tmp_path, monkeypatch, capsys
):
    (tmp_path / "login.py").write_text(LOGIN)
    monkeypatch.setenv("LUIGIFLOW_SECRET_PATTERN", "^dsn$")
    args = ["--db-passwd", PASSWD, "--credentials", CREDENTIALS, "--dsn", DSN]
    out = cli(
        "run", "--module", "login", "Login", *args, cwd=tmp_path, env=dict(os.environ), check=False
    )
    assert out.returncode == 1 and "FAILED Login(" in out.stderr, out.stdout + out.stderr
    printed = out.stdout + out.stderr
    assert "login refused: '<redacted>' https://h/?c=<redacted> <redacted>" in printed
    assert [f for f in forms() if f in printed] == []  # header, summary table, FAILED line

    [run] = runs_of(client, "Login")
    assert set(run.data.params.values()) == {"<redacted>"}
    stored = [p for p in tmp_path.glob("mlflow.db*") if p.is_file()]
    stored += [p for p in (tmp_path / "mlruns").rglob("*") if p.is_file()]
    assert any(p.name == "traceback.txt" for p in stored)
    leaks = [(f, p.name) for p in stored for f in forms() if f.encode() in p.read_bytes()]
    assert leaks == []

    code, shown, err = read_command(capsys, "show", run.info.run_id)
    assert code == 0, err
    assert "login refused" in shown and [f for f in forms() if f in shown] == []
