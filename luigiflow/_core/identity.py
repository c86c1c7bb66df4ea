"""Canonical encoding of parameter values and the Merkle-style task identity; a value's
text as Luigi writes it (what MLflow records as a run's parameter).

Identity = sha256 over canonical JSON of: the task's importable module and family,
`version`, every significant parameter value (type-tagged, so 1, 1.0, "1" and True all
differ) and the identities of the upstream tasks. `str()` is never used for values:
its output changes between library versions and conflates types.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import json
import math
import pathlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any


class UnencodableValueError(TypeError):
    """A value has no canonical encoding (the caller turns this into a ParameterError)."""


def encode_value(value: Any) -> Any:
    """Return a JSON-ready, type-tagged, order-independent encoding of `value`."""
    # bool before int: bool is a subclass of int but must not equal it.
    if value is None:
        return None
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, enum.Enum):
        return ["enum", f"{type(value).__module__}.{type(value).__qualname__}", value.name]
    if isinstance(value, int):
        return ["int", str(value)]
    if isinstance(value, float):
        # repr round-trips exactly; nan/inf have no JSON form of their own.
        return ["float", repr(value) if math.isfinite(value) else str(value)]
    if isinstance(value, Decimal):
        return ["decimal", str(value)]
    if isinstance(value, str):
        return ["str", value]
    if isinstance(value, bytes):
        return ["bytes", value.hex()]
    # datetime before date: datetime is a subclass of date.
    if isinstance(value, dt.datetime):
        return ["datetime", value.isoformat()]
    if isinstance(value, dt.date):
        return ["date", value.isoformat()]
    if isinstance(value, dt.time):
        return ["time", value.isoformat()]
    if isinstance(value, dt.timedelta):
        return ["timedelta", repr(value.total_seconds())]
    if isinstance(value, pathlib.PurePath):
        return ["path", value.as_posix()]
    if isinstance(value, Mapping):
        items = [[encode_value(k), encode_value(v)] for k, v in value.items()]
        items.sort(key=lambda kv: json.dumps(kv[0], sort_keys=True))
        return ["dict", items]
    if isinstance(value, list | tuple):
        return ["list", [encode_value(v) for v in value]]
    if isinstance(value, set | frozenset):
        encoded = [encode_value(v) for v in value]
        return ["set", sorted(encoded, key=lambda e: json.dumps(e, sort_keys=True))]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # NumPy scalars and arrays
        return encode_value(value.tolist())
    # An injected task (luigi.TaskParameter, gokart's TaskInstanceParameter): a class by
    # its import path, an instance by its identity (luigiflow) or task id (plain Luigi).
    # Luigi is imported only here, where a value can be a task: the store reads decode
    # values with this module and must not pay for importing Luigi.
    import luigi

    if isinstance(value, type) and issubclass(value, luigi.Task):
        return ["task-class", f"{value.__module__}.{value.__qualname__}"]
    if isinstance(value, luigi.Task):
        family = value.get_task_family()
        if getattr(type(value), "__luigiflow_task__", False):
            return ["task", family, getattr(value, "identity")]  # noqa: B009
        return ["task", family, f"luigi:{value.task_id}"]
    raise UnencodableValueError(
        f"value {value!r} of type {type(value).__name__} has no canonical encoding; "
        "use a str, number, bool, date, enum, list, dict or a task"
    )


def value_text(value: Any) -> str:
    """A Python value as text, the way Luigi's command line and config write it."""
    if isinstance(value, str):
        return value
    if isinstance(value, enum.Enum):
        return str(value.name)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    return str(value)


def decode_value(encoded: Any) -> Any:
    """Invert `encode_value` (enums come back as their name, sets as sorted lists)."""
    if encoded is None:
        return None
    kind, raw = encoded[0], encoded[1:]
    simple: dict[str, Any] = {
        "bool": lambda v: v,
        "int": int,
        "float": float,
        "decimal": Decimal,
        "str": lambda v: v,
        "bytes": bytes.fromhex,
        "datetime": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat,
        "time": dt.time.fromisoformat,
        "timedelta": lambda v: dt.timedelta(seconds=float(v)),
        "path": pathlib.Path,
    }
    if kind in simple:
        return simple[kind](raw[0])
    if kind == "enum":
        return raw[1]
    if kind == "task-class":
        return raw[0]
    if kind == "task":
        return f"{raw[0]} (identity {raw[1][:12]})"
    if kind == "dict":
        return {decode_value(k): decode_value(v) for k, v in raw[0]}
    if kind in ("list", "set"):
        return [decode_value(v) for v in raw[0]]
    raise ValueError(f"unknown encoded value kind {kind!r}")


def canonical_json(obj: Any) -> str:
    """Serialize an already-encoded structure deterministically."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compute_identity(
    module: str,
    family: str,
    version: Any,
    params: Mapping[str, Any],
    upstream: Mapping[str, str],
    code: str | None = None,
    main: Mapping[str, str] | None = None,
) -> str:
    """Hash the parts that define a task instance; `params` are already encoded.

    `module` is the importable module of the task class: two classes that share a name
    (a family) in different modules are different tasks and never share runs. `main`:
    for a class defined in `__main__` (a script, notebook, stdin), where it comes from
    and its code, since every such program is the same module `__main__`.
    """
    payload: dict[str, Any] = {
        "module": module,
        "family": family,
        "version": encode_value(version),
        "params": dict(params),
        "upstream": dict(upstream),
    }
    if code is not None:
        payload["code"] = code
    if main is not None:  # absent for importable modules: their identities stay as they were
        payload["main"] = dict(main)
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def training_line(
    module: str,
    family: str,
    version: Any,
    params: Mapping[str, Any],
    upstream: Mapping[str, str],
    code: str | None,
    main: Mapping[str, str] | None = None,
    *,
    steps: str,
) -> str:
    """The identity of a task with its steps parameter `steps` left out: what runs of one
    training of any length share. The seed is derived from it, so 10 then 5 more steps
    follow the same trajectory as 15 at once."""
    rest = {name: value for name, value in params.items() if name != steps}
    return compute_identity(
        module, family, version, {**rest, "@steps": steps}, upstream, code, main
    )


def keyed_value(key: bytes, encoded: Any) -> list[str]:
    """A secret parameter's encoded value as it enters the identity: an HMAC with a key
    kept outside the store. Equal secrets still give equal identities, but whoever reads
    the identity tag cannot test guesses of the secret against it without the key."""
    digest = hmac.new(key, canonical_json(encoded).encode("utf-8"), hashlib.sha256)
    return ["keyed", digest.hexdigest()]


def seed_from_identity(identity: str) -> int:
    """A deterministic 32-bit seed (NumPy's legacy seeding accepts at most 2**32 - 1)."""
    return int(identity[:8], 16)
