"""`foreach`/`do` and `matrix` in a dvc.yaml: one stage definition expanded into many, named
and keyed as DVC names them (`train@rf-10`).
"""

from __future__ import annotations

import itertools
from typing import Any

from luigiflow._core import templating


def _expand(
    name: str, raw: Any, context: dict[str, Any], problems: list[str]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """One stage, or one per `foreach` item named `name@key` (as DVC names them)."""
    if not isinstance(raw, dict):
        problems.append(f"stage {name!r} must be a mapping")
        return []
    if "matrix" in raw:
        return _matrix(name, raw, context, problems)
    if "foreach" not in raw:
        return [(name, raw, {})]
    extra = set(raw) - {"foreach", "do"}
    if extra or "do" not in raw:
        problems.append(f"stage {name!r}: foreach needs 'do' and nothing else besides")
        return []
    try:
        items = templating.render(raw["foreach"], context)
    except templating.TemplateError as exc:
        problems.append(f"stage {name!r}: foreach: {exc}")
        return []
    if isinstance(items, dict):
        pairs = list(items.items())
    elif isinstance(items, list):
        pairs = [
            (str(item) if isinstance(item, str | int | float) else str(i), item)
            for i, item in enumerate(items)
        ]
    else:
        problems.append(f"stage {name!r}: foreach must be a list or a mapping, got {items!r}")
        return []
    return [(f"{name}@{key}", raw["do"], {"item": item, "key": key}) for key, item in pairs]


def _matrix(
    name: str, raw: dict[str, Any], context: dict[str, Any], problems: list[str]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """One stage per combination of the `matrix` lists, named and keyed as DVC does
    (`train@rf-10`; an item that is a list or mapping is named by key and index)."""
    if "foreach" in raw or "do" in raw:
        problems.append(f"stage {name!r}: give matrix or foreach, not both")
        return []
    try:
        axes = templating.render(raw["matrix"], context)
    except templating.TemplateError as exc:
        problems.append(f"stage {name!r}: matrix: {exc}")
        return []
    if not isinstance(axes, dict) or not all(isinstance(v, list) for v in axes.values()):
        problems.append(f"stage {name!r}: matrix must map names to lists, got {axes!r}")
        return []
    body = {k: v for k, v in raw.items() if k != "matrix"}
    expanded = []
    for combination in itertools.product(*(list(enumerate(v)) for v in axes.values())):
        item = {axis: value for axis, (_i, value) in zip(axes, combination, strict=True)}
        key = "-".join(
            f"{axis}{i}" if isinstance(value, dict | list) else _matrix_text(value)
            for axis, (i, value) in zip(axes, combination, strict=True)
        )
        expanded.append((f"{name}@{key}", body, {"item": item, "key": key}))
    return expanded


def _matrix_text(value: Any) -> str:
    # As DVC's to_str: YAML's spelling of booleans and null in stage names.
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)
