"""Reading and writing the small structured files scripts share with us: params files
(YAML, JSON, TOML) and metrics files (dvclive's `metrics.json` layout works)."""

from __future__ import annotations

import json
import math
import pathlib
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from luigiflow._core.templating import flatten

_METRIC_NAME = re.compile(r"[^\w\-. /]")


class DataFileError(ValueError):
    """A params or metrics file cannot be read (the message names the file)."""


def read_tree(path: pathlib.Path) -> dict[str, Any]:
    """A YAML, JSON or TOML file's top-level mapping."""
    suffix = path.suffix.lower()
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        if suffix == ".json":
            data = json.loads(raw)
        elif suffix == ".toml":
            data = tomllib.loads(raw)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(raw)
        else:
            raise DataFileError(f"{path}: use a .yaml, .yml, .json or .toml file")
    except (ValueError, ImportError) as exc:
        raise DataFileError(f"{path} is not valid {suffix[1:].upper()}: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError does not derive from ValueError
        raise DataFileError(f"{path} is not valid {suffix[1:].upper()}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataFileError(f"{path} must hold a mapping at the top, not {type(data).__name__}")
    return data


def write_tree(path: pathlib.Path, tree: Mapping[str, Any]) -> None:
    """Write a params file; the extension picks JSON or YAML."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tree_text(path, tree), encoding="utf-8")


def tree_text(path: pathlib.Path, tree: Mapping[str, Any]) -> str:
    """A params file's text as `write_tree` writes it."""
    if path.suffix.lower() == ".json":
        return json.dumps(tree, indent=2, sort_keys=True)
    import yaml

    return yaml.safe_dump(dict(tree), sort_keys=False)


def read_metrics(path: pathlib.Path) -> dict[str, float]:
    """Numeric leaves of a metrics file, nested keys joined with '.' (`roc_auc.test`)."""
    metrics = {}
    for key, value in flatten(read_tree(path)).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # text, lists and flags are not MLflow metrics
        if isinstance(value, float) and not math.isfinite(value):
            continue
        metrics[_METRIC_NAME.sub("_", key)] = float(value)
    return metrics
