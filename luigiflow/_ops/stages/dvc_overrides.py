"""The `--set` values of a dvc.yaml build: parsed from the command line and applied to the
params and `vars` files as they are read, as DVC reads a file it edited (`dvc exp run
--set-param`). Writing them into the files while a build runs is `dvc_params`.
"""

from __future__ import annotations

import contextvars
import copy
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from luigiflow._core import datafiles, templating
from luigiflow._errors import ParameterError

DEFAULT_PARAMS = "params.yaml"


# The overrides of the dvc.yaml being read, by params file: every read of a params or
# vars file goes through `_read`, so a value given on the command line is seen by
# templating, stage parameters and identities alike, as DVC sees a file it edited.
_OVERRIDES: contextvars.ContextVar[dict[pathlib.Path, dict[str, Any]] | None] = (
    contextvars.ContextVar("dvc_overrides", default=None)
)


def override_files(
    root: pathlib.Path, flat: Mapping[str, Any]
) -> dict[pathlib.Path, dict[str, Any]]:
    """{"file:key" or "key": value} -> {params file path: {key: value}}."""
    by_file: dict[pathlib.Path, dict[str, Any]] = {}
    for spec, value in flat.items():
        file, sep, key = spec.rpartition(":")
        target = (root / (file if sep else DEFAULT_PARAMS)).resolve()
        by_file.setdefault(target, {})[key] = value
    return by_file


def parse_overrides(words: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` / `--set-param KEY=VALUE` / `-S KEY=VALUE` words (and `--KEY VALUE`,
    the spelling of pipeline files) as {"[file:]key": value}; values parsed as YAML, as
    `dvc exp run --set-param` does."""
    import yaml

    found: dict[str, Any] = {}
    rest = list(words)
    while rest:
        word = rest.pop(0)
        flag, eq, inline = word.partition("=")
        if flag in ("--set", "--set-param", "-S"):
            pair = inline if eq else (rest.pop(0) if rest else "")
        elif word.startswith("--") and not eq and rest:
            pair = f"{word[2:]}={rest.pop(0)}"
        elif word.startswith("--") and eq:
            pair = word[2:]
        else:
            pair = ""
        key, has_value, text = pair.partition("=")
        if not key or not has_value:
            raise ParameterError(
                f"{word!r}: give a params value as --set [FILE:]KEY=VALUE (or DVC's "
                "--set-param / -S), e.g. --set train.n_est=60"
            )
        try:
            found[key] = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            found[key] = text
    return found


def _assign(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def overridden_tree(path: pathlib.Path, values: Mapping[str, Any]) -> dict[str, Any]:
    """The params file's tree with `values` set (dotted keys)."""
    tree = copy.deepcopy(datafiles.read_tree(path))
    for key, value in values.items():
        _assign(tree, key, value)
    return tree


def _read(path: pathlib.Path, problems: list[str], applied: bool = True) -> dict[str, Any]:
    try:
        tree = datafiles.read_tree(path)
    except datafiles.DataFileError as exc:
        problems.append(str(exc))
        return {}
    values = (_OVERRIDES.get() or {}).get(path.resolve()) if applied else None
    if values:
        tree = copy.deepcopy(tree)
        for key, value in values.items():
            try:
                templating.lookup(tree, key)
            except templating.TemplateError:
                continue  # reported once, by name, after reading
            _assign(tree, key, value)
    return tree


def _vars(raw: Any, root: pathlib.Path, where: str, problems: list[str]) -> dict[str, Any]:
    """`vars`: mappings, and files (`file.yaml` or `file.yaml:key1,key2`)."""
    found: dict[str, Any] = {}
    for entry in raw or []:
        if isinstance(entry, dict):
            found.update(entry)
        elif isinstance(entry, str):
            name, _, keys = entry.partition(":")
            tree = _read(root / name, problems)
            if keys:
                tree = {k: tree[k] for k in keys.split(",") if k in tree}
            found.update(tree)
        else:
            problems.append(f"{where}: entry {entry!r} must be a file name or a mapping")
    return found
