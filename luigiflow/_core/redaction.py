"""Secrets kept out of the shared store: names that look secret have their values redacted.

A parameter or setting whose name contains TOKEN, SECRET, PASSWORD or KEY (any case) is
recorded as `<redacted>`; and the known secret values of a run (those parameters, the
values of environment variables with such names, the signing keys) are scrubbed from any
free text luigiflow writes (error messages, tracebacks, the git diff).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|KEY", re.IGNORECASE)
# Shorter values are too likely to occur by chance in unrelated text to be worth scrubbing.
MIN_SCRUBBED_LENGTH = 4


def looks_secret(name: str) -> bool:
    """The name of a parameter, setting or variable suggests its value is a secret."""
    return bool(SECRET_NAME.search(name))


# The password of a URL with credentials (https://user:token@host, postgresql://u:p@h).
_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]+):([^/\s@]+)@")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every occurrence of each secret value, and every password inside a
    URL, replaced by `<redacted>`."""
    text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
    for value in sorted(
        {s for s in secrets if len(s) >= MIN_SCRUBBED_LENGTH}, key=len, reverse=True
    ):
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
