"""Task classes as definitions: checked when declared, instantiated once per typed value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import luigi

from luigiflow import _artifacts
from luigiflow._errors import TaskDefinitionError
from luigiflow._identity import UnencodableValueError, canonical_json, encode_value


class TypedRegister(luigi.task_register.Register):
    """Luigi's instance cache, keyed by canonical values so 1, 1.0, "1" and True differ.

    Luigi keys its flyweight cache on raw values, where 1 == 1.0 == True would hand
    back one instance (and one identity) for three different tasks.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        cache = luigi.task_register.Register._Register__instance_cache  # type: ignore[attr-defined]
        create = super(luigi.task_register.Register, cls).__call__
        if cache is None:
            return create(*args, **kwargs)
        values = cls.get_param_values(cls.get_params(), args, kwargs)  # type: ignore[attr-defined]
        try:
            key = (cls, canonical_json([[n, encode_value(v)] for n, v in values]))
        except UnencodableValueError:
            return create(*args, **kwargs)
        if key not in cache:
            cache[key] = create(*args, **kwargs)
        return cache[key]


def validate_class(cls: type) -> None:
    """Report every problem of a task class definition at once (raised at class creation)."""
    name = cls.__name__
    arts = cls.__dict__.get("artifacts", getattr(cls, "artifacts", {}))
    if not isinstance(arts, Mapping):
        raise TaskDefinitionError(
            f"{name}.artifacts must be a dict of name -> file name "
            f"(e.g. {{'model': 'model.pkl'}}), got {type(arts).__name__}"
        )
    problems = []
    for key, filename in arts.items():
        if not isinstance(key, str) or not key.isidentifier():
            problems.append(f"artifact name {key!r} must be an identifier-like string")
        problem = _artifacts.validate_filename(filename)
        if problem:
            problems.append(f"artifact {key!r}: {problem}")
    files = [f for f in arts.values() if isinstance(f, str)]
    if len(set(files)) != len(files):
        problems.append("two artifacts share one file name")
    version = getattr(cls, "version", 0)
    if not isinstance(version, int | str) or isinstance(version, bool):
        problems.append(f"version must be an int or str, got {version!r}")
    exp = cls.__dict__.get("experiment_name")
    if exp is not None and (not isinstance(exp, str) or not exp.strip()):
        problems.append(f"experiment_name must be a non-empty string, got {exp!r}")
    if problems:
        raise TaskDefinitionError(f"task class {name}: " + "; ".join(problems))
