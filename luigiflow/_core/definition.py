"""Task class definitions, checked when the class is created (before any run exists)."""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import Collection, Mapping

from luigiflow._errors import TaskDefinitionError

# The folder of a run where luigiflow keeps its own files (environment, traceback,
# params); `_store/schema.py` names the files inside it.
RESERVED_FOLDER = "luigiflow"

# MLflow's model flavours (modules `mlflow.<flavour>` with log_model/load_model); named
# here so a typo is caught when the class is defined, without importing MLflow.
MODEL_FLAVOURS = frozenset(
    [
        "catboost",
        "diviner",
        "dspy",
        "fastai",
        "gluon",
        "h2o",
        "johnsnowlabs",
        "keras",
        "langchain",
        "lightgbm",
        "llama_index",
        "onnx",
        "openai",
        "paddle",
        "pmdarima",
        "promptflow",
        "prophet",
        "pyfunc",
        "pytorch",
        "sentence_transformers",
        "sklearn",
        "spacy",
        "spark",
        "statsmodels",
        "tensorflow",
        "transformers",
        "xgboost",
    ]
)


def validate_class(
    cls: type,
    reserved: Collection[str] = (),
    has_work: bool = True,
    abstract: bool = False,
) -> None:
    """Report every problem of a task class definition at once (raised at class creation).

    `reserved`: names of the task's own properties and methods, which a parameter must
    not shadow; `has_work`: whether the class defines run_task (or run); an `abstract`
    base class need not.
    """
    # Imported here, not with the module: every store read imports RESERVED_FOLDER (via
    # `_store/schema.py`), and `runs`/`show` must not pay for Luigi and provenance.
    import luigi

    from luigiflow._core import provenance, serializers

    name = cls.__name__
    shadowing = [
        f"parameter {attr!r} shadows the task's own {attr!r} (MlflowTask.{attr}); "
        "rename the parameter"
        for attr, value in cls.__dict__.items()
        if attr in reserved and isinstance(value, luigi.Parameter)
    ]
    if shadowing:  # the other checks would read the parameter as the property
        raise TaskDefinitionError(f"task class {name}: " + "; ".join(shadowing))
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
    problems += _collisions({k: f for k, f in arts.items() if isinstance(f, str)})
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
    models = cls.__dict__.get("models", getattr(cls, "models", {}))
    if not isinstance(models, Mapping):
        problems.append(f"models must be a dict of name -> MLflow flavour, got {models!r}")
        models = {}
    for key, flavour in models.items():
        if not isinstance(key, str) or not key.isidentifier():
            problems.append(f"model name {key!r} must be an identifier-like string")
        if key in arts:
            problems.append(f"{key!r} is both an artifact and a model output")
        if flavour not in MODEL_FLAVOURS:
            problems.append(
                f"model {key!r}: unknown MLflow flavour {flavour!r} "
                f"(known: {', '.join(sorted(MODEL_FLAVOURS))})"
            )
    code_files = cls.__dict__.get("code_files", ())
    if isinstance(code_files, str) or not all(isinstance(f, str) for f in code_files):
        problems.append(f"code_files must be a tuple of paths, got {code_files!r}")
    if not has_work and not abstract:
        problems.append(
            "it defines no run_task(); define it, or declare the class "
            f"abstract: class {name}(..., abstract=True)"
        )
    if problems:
        raise TaskDefinitionError(f"task class {name}: " + "; ".join(problems))


def _collisions(files: Mapping[str, str]) -> list[str]:
    """Declared files that would overwrite each other or luigiflow's own files.

    Saving an artifact replaces whatever is at its path, so a folder artifact that
    contains another artifact's file would delete it after that one was saved.
    """
    problems = []
    paths = {key: pathlib.PurePosixPath(f) for key, f in files.items()}  # "./a/" -> "a"
    for key, path in paths.items():
        if not path.parts or path.parts == (".",):
            problems.append(
                f"artifact {key!r}: file name {files[key]!r} is the run's whole artifact folder"
            )
        elif path.parts[0] == RESERVED_FOLDER:
            problems.append(
                f"artifact {key!r}: file name {files[key]!r} is inside {RESERVED_FOLDER + '/'!r}, "
                "where luigiflow keeps the run's provenance files; choose another name"
            )
    for (k1, p1), (k2, p2) in itertools.combinations(paths.items(), 2):
        if p1 == p2:
            problems.append(f"artifacts {k1!r} and {k2!r} share the file name {files[k1]!r}")
        elif p2.parts[: len(p1.parts)] == p1.parts or p1.parts[: len(p2.parts)] == p2.parts:
            outer, inner = (k1, k2) if len(p1.parts) < len(p2.parts) else (k2, k1)
            problems.append(
                f"artifact {inner!r} ({files[inner]!r}) lies inside artifact {outer!r} "
                f"({files[outer]!r}): saving {files[outer]!r} would replace it; "
                "give them separate paths"
            )
    return problems
