"""`${name}` and `${section.key}` substitution, as in DVC's dvc.yaml templating."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\$\{\s*([^${}\s]+)\s*\}")


class TemplateError(ValueError):
    """A `${}` names nothing in the context (the caller says where it was)."""


def lookup(context: Mapping[str, Any], dotted: str) -> Any:
    """`a.b.c` in nested mappings (or list indexes), or a TemplateError."""
    value: Any = context
    for part in dotted.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateError(f"${{{dotted}}} is not defined")
    return value


def text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(template: Any, context: Mapping[str, Any]) -> Any:
    """Substitute every `${...}` in strings, lists and dicts. A string that is exactly one
    placeholder takes the value itself (so `foreach: ${items}` gets the list)."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template.strip())
        if whole:
            return lookup(context, whole.group(1))
        return PLACEHOLDER.sub(lambda m: text(lookup(context, m.group(1))), template)
    if isinstance(template, list):
        return [render(item, context) for item in template]
    if isinstance(template, dict):
        return {render(k, context): render(v, context) for k, v in template.items()}
    return template


def render_text(
    template: str, context: Mapping[str, Any], quote: Callable[[str], str] | None = None
) -> str:
    """Like `render` but always a string (for command words); `quote` wraps each value."""
    wrap = quote or (lambda s: s)
    return PLACEHOLDER.sub(lambda m: wrap(text(lookup(context, m.group(1)))), template)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}."""
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree
