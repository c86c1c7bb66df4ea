"""Task class definitions, checked when the class is created (before any run exists)."""

from __future__ import annotations

from collections.abc import Mapping

from luigiflow._core import provenance, serializers
from luigiflow._errors import TaskDefinitionError


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
        problem = serializers.validate_filename(filename)
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
    if getattr(cls, "code_in_identity", False) and provenance.class_source(cls) is None:
        problems.append(
            "code_in_identity = True, but the class source cannot be found (defined by exec "
            "or in a console that keeps no source); define it in a file or a notebook cell, "
            "or set code_in_identity = False and bump `version` when the code changes"
        )
    module = cls.__dict__.get("identity_module")
    if module is not None and (not isinstance(module, str) or not module.strip()):
        problems.append(f"identity_module must be a module name (str), got {module!r}")
    if problems:
        raise TaskDefinitionError(f"task class {name}: " + "; ".join(problems))
