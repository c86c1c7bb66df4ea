"""Parameter checks and encodings: type validation, FileParameter and its content hash."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from typing import Any

import luigi

from luigiflow._core.hashing import content_hash
from luigiflow._core.identity import UnencodableValueError, encode_value, value_text


class FileParameter(luigi.Parameter):
    """A path whose file (or folder) *content* hash enters the task identity.

    Renaming or touching the file changes nothing; editing its bytes re-runs the task
    and everything downstream; restoring the old bytes reuses the old runs.
    """

    def encode_for_identity(self, value: Any) -> Any:
        return ["file-sha256", content_hash(value)]


class StepsParameter(luigi.IntParameter):
    """The length of a training (epochs, iterations): an int that is in the identity but
    not in the seed, so a longer training of the same task follows the same trajectory
    and starts from a shorter one's last checkpoint (see docs/identity.md, Warm start).

    Example::

        class Fit(lf.MlflowTask):
            epochs = lf.StepsParameter(default=10)
    """


# Expected Python types per Luigi parameter class, checked most-specific first.
_EXPECTED_TYPES: list[tuple[type, tuple[type, ...], str]] = [
    (luigi.BoolParameter, (bool,), "a bool"),
    (luigi.IntParameter, (int,), "an integer"),
    (luigi.FloatParameter, (int, float), "a number"),
    (luigi.DateSecondParameter, (dt.datetime,), "a datetime"),
    (luigi.DateMinuteParameter, (dt.datetime,), "a datetime"),
    (luigi.DateHourParameter, (dt.datetime,), "a datetime"),
    (luigi.DateParameter, (dt.date,), "a date"),
    (luigi.TimeDeltaParameter, (dt.timedelta,), "a timedelta"),
    (luigi.ListParameter, (list, tuple), "a list"),
    (luigi.TupleParameter, (list, tuple), "a tuple"),
    (luigi.DictParameter, (Mapping,), "a dict"),
]


# How a value is written on Luigi's command line, for the error when a string does not parse.
TEXT_FORMS: list[tuple[type, str]] = [
    (luigi.BoolParameter, "true or false"),
    (luigi.DateSecondParameter, "YYYY-MM-DDTHHMMSS"),
    (luigi.DateMinuteParameter, "YYYY-MM-DDTHHMM"),
    (luigi.DateHourParameter, "YYYY-MM-DDTHH"),
    (luigi.DateParameter, "YYYY-MM-DD"),
    (luigi.TimeDeltaParameter, "e.g. '2 days', '1 w 3 h' or 'P2D'"),
    (luigi.ListParameter, 'JSON, e.g. "[1, 2]"'),
    (luigi.TupleParameter, 'JSON, e.g. "[1, 2]"'),
    (luigi.DictParameter, "JSON, e.g. '{\"a\": 1}'"),
]


def from_text(param: luigi.Parameter, value: str) -> tuple[Any, str | None]:
    """A string given for a typed parameter, parsed the way Luigi's command line parses it.

    Returns (value, None), or (the string, what is wrong) when it does not parse.
    Plain `luigi.Parameter`s keep their strings.
    """
    wanted = expected_text(param)
    if wanted is None:
        return value, None
    try:
        return param.parse(value), None
    except Exception:  # Luigi raises ValueError, KeyError, json errors...
        return value, f"cannot read {value!r} as {wanted}"


def expected_text(param: luigi.Parameter) -> str | None:
    """What a typed parameter's text must be, for an error when Luigi's `parse` fails
    ("an integer", "a date (YYYY-MM-DD)"); None for a parameter Luigi keeps as text."""
    wanted = next((w for c, _t, w in _EXPECTED_TYPES if isinstance(param, c)), None)
    if wanted is None:
        return None
    form = next((f for c, f in TEXT_FORMS if isinstance(param, c)), "")
    return wanted + (f" ({form})" if form else "")


def check_value(param: luigi.Parameter, value: Any) -> str | None:
    """Return a description of what is wrong with `value` for `param`, or None."""
    if value is None and getattr(param, "_is_optional", False):
        return None
    if isinstance(param, luigi.OptionalParameter) and value is None:
        return None
    if isinstance(param, StepsParameter) and isinstance(value, int) and value < 0:
        return f"expected a number of steps (0 or more), got {value!r}"
    for cls, types, wanted in _EXPECTED_TYPES:
        if isinstance(param, cls):
            wrong_bool = isinstance(value, bool) and bool not in types
            if wrong_bool or not isinstance(value, types):
                return f"expected {wanted}, got {type(value).__name__} {value!r}"
            return None
    if isinstance(param, FileParameter):
        if not isinstance(value, str | os.PathLike):
            return f"expected a file path, got {type(value).__name__} {value!r}"
        if not os.path.exists(value):
            return f"file {os.fspath(value)!r} does not exist"
        return None
    try:
        encode_value(value)
    except UnencodableValueError as exc:
        return str(exc)
    return None


def from_config(param: luigi.Parameter, raw: Any) -> Any:
    """A value read from a config file (TOML) for a Luigi parameter: strings go through
    Luigi's own parsing, lists become tuples for list and tuple parameters."""
    value = param.parse(raw) if isinstance(raw, str) else raw
    if isinstance(param, luigi.ListParameter | luigi.TupleParameter) and isinstance(value, list):
        value = tuple(value)
    return param.normalize(value)


def checked_config_value(param: luigi.Parameter, raw: Any, where: str, problems: list[str]) -> Any:
    """`from_config`, with what is wrong appended to `problems` (prefixed by `where`)
    instead of raised, so a file's every mistake is reported at once; None when wrong."""
    try:
        value = from_config(param, raw)
    except Exception as exc:  # Luigi raises ValueError, TypeError, json errors...
        wanted = expected_text(param) if isinstance(raw, str) else None
        problems.append(
            f"{where}: expects {wanted}, got {raw!r}"
            if wanted
            else f"{where}: {raw!r} is not valid: {exc}"
        )
        return None
    problem = check_value(param, value)
    if problem:
        problems.append(f"{where}: {problem}")
        return None
    return value


def encode_param(param: luigi.Parameter, value: Any) -> Any:
    """Encode one parameter value for the identity."""
    if isinstance(param, FileParameter):
        return param.encode_for_identity(value)
    if isinstance(param, luigi.FloatParameter) and isinstance(value, int):
        value = float(value)  # a float parameter given 1 means 1.0: same task
    return encode_value(value)


def param_text(param: luigi.Parameter, value: Any) -> str:
    """A parameter value as its own Luigi parameter serializes it (what MLflow shows)."""
    try:
        text = param.serialize(value)
    except Exception:
        return value_text(value)
    return text if isinstance(text, str) else json.dumps(text, default=str)
