"""Secrets kept out of the shared store: names that look secret have their values redacted.

A parameter or setting whose name looks secret (it contains TOKEN, SECRET, PASSWORD,
PASSWD, PASSPHRASE, CREDENTIAL, PRIVATE, KEY, COOKIE or AUTHORIZATION, or one of its
words is AUTH, OAUTH, PWD, PASS, CRED or CREDS; any case), or matches the user's
LUIGIFLOW_SECRET_PATTERN, is recorded as `<redacted>`; and the known secret values of a
run (those parameters, the values of environment variables with such names, the signing
keys) are scrubbed from any free text luigiflow writes (error messages, tracebacks, the
git diff), in every form they are commonly written in (as is, repr, JSON, URL-encoded).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

from luigiflow import _settings
from luigiflow._errors import mask_credentials

REDACTED = "<redacted>"
# Anywhere in the name (`db_password`, `apikey`, `my_credentials`).
SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE|KEY|COOKIE|AUTHORIZATION",
    re.IGNORECASE,
)
# Only as a whole word of the name (`basic_auth`, `db-pwd`, `userPass`): as substrings
# they are in ordinary names (author, passes, credit).
SECRET_WORDS = frozenset({"auth", "oauth", "pwd", "pass", "cred", "creds"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z0-9]+(?![a-z])")
# Environment variables whose names match the rules but hold no secret: scrubbing their
# values would blank the working folder or the SSH agent's socket path out of every text.
NOT_SECRET_VARIABLES = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK"})
# Shorter values are too likely to occur by chance in unrelated text to be worth scrubbing.
MIN_SCRUBBED_LENGTH = 4


def looks_secret(name: str) -> bool:
    """The name of a parameter, setting or variable suggests its value is a secret."""
    if SECRET_NAME.search(name):
        return True
    if any(word.lower() in SECRET_WORDS for word in _WORD.findall(name)):
        return True
    pattern = _settings.secret_pattern()
    return bool(pattern is not None and pattern.search(name))


def secret_values() -> list[str]:
    """Values never to be written to a store: the signing keys and the values of
    environment variables whose names look secret."""
    values = [
        v for k, v in os.environ.items() if v and k not in NOT_SECRET_VARIABLES and looks_secret(k)
    ]
    # The password in a tracking URI with credentials, also where a message shows it
    # decoded or apart from its URL (a driver's "password authentication failed").
    with contextlib.suppress(ValueError):
        password = urllib.parse.urlsplit(os.environ.get(_settings.TRACKING_URI, "")).password
        if password:
            values += [password, urllib.parse.unquote(password)]
    return values + _settings.signing_key_texts()


def secrets_of(task: Any) -> list[str]:
    """Every secret value that must not appear in text shown or written for `task`: its
    secret-looking parameters' values (as given and as Luigi writes them), and
    `secret_values()`."""
    values = secret_values()
    for name, param in task.get_params():
        if not looks_secret(name):
            continue
        value = getattr(task, name, None)
        if value is None:
            continue
        values.append(str(value))
        with contextlib.suppress(Exception):  # a value its parameter cannot serialize
            values.append(str(param.serialize(value)))
    return values


_PERCENT = re.compile(r"%[0-9A-F]{2}")


def renderings(secret: str) -> set[str]:
    """The forms a secret value takes in text: as is, inside its repr or JSON string, and
    URL-encoded (a password in a query string or a URL's user part)."""
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
    }
    # Some encoders write %2f where Python writes %2F.
    forms |= {_PERCENT.sub(lambda m: m.group().lower(), f) for f in forms}
    return {f for f in forms if len(f) >= MIN_SCRUBBED_LENGTH}


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every occurrence of each secret value, and every password inside a
    URL, replaced by `<redacted>`."""
    text = mask_credentials(text)
    forms = {f for s in secrets if len(s) >= MIN_SCRUBBED_LENGTH for f in renderings(s)}
    for value in sorted(forms, key=len, reverse=True):  # longest first: no half-scrubbed form
        text = text.replace(value, REDACTED)
    return text


# How a redacted parameter value is recorded in the canonical params (luigiflow.params):
# not a value `decode_value` knows, so nothing can mistake it for the real one.
REDACTED_ENCODED = ["redacted"]


def redact_encoded(params: dict[str, object]) -> dict[str, object]:
    """Encoded parameter values with those of secret-looking names replaced."""
    return {k: REDACTED_ENCODED if looks_secret(k) else v for k, v in params.items()}


def redact_config_text(text: str) -> str:
    """A TOML/INI config's text with the values of secret-looking keys replaced.

    Line by line (`key = value`), so comments and layout stay as the user wrote them.
    """
    lines = []
    for line in text.splitlines(keepends=True):
        match = _ASSIGNMENT.match(line)
        if match and looks_secret(match.group("key")):
            end = "\n" if line.endswith("\n") else ""
            line = f'{match.group("lead")}"{REDACTED}"{end}'
        lines.append(line)
    return "".join(lines)


_ASSIGNMENT = re.compile(r"""^(?P<lead>\s*["']?(?P<key>[\w.-]+)["']?\s*[=:]\s*)(?P<value>.*)$""")
