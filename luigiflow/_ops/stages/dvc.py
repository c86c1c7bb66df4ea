"""A DVC pipeline (`dvc.yaml`) run unchanged: each stage in its `wdir` (the project
folder by default) with outputs left in the workspace, and each a luigiflow task.

Every field of DVC's schema (dvc/schema.py, MULTI_STAGE_SCHEMA) is read: `stages` with
`cmd` (a string, or a list run in order), `deps`, `params` (keys of `params.yaml` or
`{file: [keys]}`), `outs`, `metrics`, `plots` (entries as paths or `{path: {cache:
false, persist: true, ...}}`), `wdir`, `vars`, `desc`, `meta`, `frozen`,
`always_changed`, `foreach`/`do`, `matrix` and `${}` templating; top-level `vars`,
`metrics`, `plots`, `params`, `artifacts` and `datasets`. Fields that do not change what
runs (`desc`, `meta`, `artifacts`, `datasets`, plot definitions) are kept as run
metadata. A field DVC does not know is one ConfigError naming the field and the stage.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

from luigiflow._core import templating
from luigiflow._errors import ConfigError
from luigiflow._ops.stages.dvc_foreach import _expand
from luigiflow._ops.stages.dvc_overrides import (
    _OVERRIDES,
    DEFAULT_PARAMS,
    _read,
    _vars,
    override_files,
)
from luigiflow._ops.stages.spec import CommandStage, Stage

TOP_LEVEL = {"stages", "vars", "metrics", "plots", "params", "artifacts", "datasets"}
STAGE_FIELDS = {
    "cmd",
    "deps",
    "params",
    "outs",
    "metrics",
    "plots",
    "wdir",
    "vars",
    "desc",
    "meta",
    "frozen",
    "always_changed",
}
OUT_FLAGS = {"cache", "persist", "desc", "remote", "push", "type", "labels", "meta"}
PLOT_FLAGS = OUT_FLAGS | {"x", "y", "template", "title", "x_label", "y_label", "header"}


def read(path: pathlib.Path, overrides: Mapping[str, Any] | None = None) -> list[Stage]:
    """The stages of a dvc.yaml; raises ConfigError listing every problem.

    `overrides` ({"train.n_est": 60} or {"params.yaml:train.n_est": 60}, as `dvc exp run
    --set-param`) replace values of the params files as if the files held them."""
    root = path.parent
    by_file = override_files(root, overrides or {})
    token = _OVERRIDES.set(by_file)
    try:
        return _read_stages(path, root, by_file)
    finally:
        _OVERRIDES.reset(token)


def _read_stages(
    path: pathlib.Path, root: pathlib.Path, overrides: dict[pathlib.Path, dict[str, Any]]
) -> list[Stage]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a mapping with 'stages'")
    problems = [
        f"unsupported top-level field {k!r} (luigiflow supports: {', '.join(sorted(TOP_LEVEL))})"
        for k in data
        if k not in TOP_LEVEL
    ]
    context: dict[str, Any] = {}
    if (root / DEFAULT_PARAMS).is_file():
        context.update(_read(root / DEFAULT_PARAMS, problems))
    context.update(_vars(data.get("vars"), root, "vars", problems))
    stages: list[CommandStage] = []
    for name, raw in (data.get("stages") or {}).items():
        for expanded, body, local in _expand(name, raw, context, problems):
            stage = _stage(expanded, body, root, {**context, **local}, problems)
            if stage is not None:
                stage.host_environment = _dvc_environment(path, expanded)
                stages.append(stage)
    _check_metadata(data, problems)
    _attach_top_level(data, stages, problems)
    for file, values in overrides.items():
        tree = _read(file, problems, applied=False) if file.is_file() else None
        for key in values:
            if tree is None:
                problems.append(f"--set {key}: {file.name} does not exist under {root}")
                continue
            try:
                templating.lookup(tree, key)
            except templating.TemplateError:
                problems.append(f"--set {key}: {file.name} has no key {key!r}")
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s): " + "; ".join(problems))
    return list(stages)


def _dvc_environment(path: pathlib.Path, stage: str) -> dict[str, str]:
    """What `dvc repro` adds to a stage command's environment (dvc/stage/run.py,
    prepare_kwargs): DVC_ROOT, the repository root (the folder holding `.dvc`, else the
    dvc.yaml's folder), and DVC_STAGE, the stage's address. Tools such as dvclive read
    them to know they run inside a pipeline: without them dvclive saves a DVC
    experiment of its own (refs under refs/exps, dvc.lock, even `dvc init`)."""
    folder = path.parent
    root = next((p for p in [folder, *folder.parents] if (p / ".dvc").is_dir()), folder)
    address = stage
    if folder != root or path.name != "dvc.yaml":
        address = f"{path.relative_to(root).as_posix()}:{stage}"
    return {"DVC_ROOT": str(root), "DVC_STAGE": address}


def _check_metadata(data: dict[str, Any], problems: list[str]) -> None:
    """Top-level fields that change nothing that runs: checked for shape only."""
    artifacts = data.get("artifacts")
    if artifacts is not None and not (
        isinstance(artifacts, dict)
        and all(isinstance(v, dict) and isinstance(v.get("path"), str) for v in artifacts.values())
    ):
        problems.append("top-level artifacts must map names to {path: ..., type: ..., desc: ...}")
    params = data.get("params")
    if params is not None and not (
        isinstance(params, list) and all(isinstance(p, str) for p in params)
    ):
        problems.append("top-level params must be a list of parameter file names")
    datasets = data.get("datasets")
    if datasets is not None and not isinstance(datasets, list):
        problems.append("top-level datasets must be a list of {name: ..., type: ...}")


def _stage(
    name: str, raw: Any, root: pathlib.Path, context: dict[str, Any], problems: list[str]
) -> CommandStage | None:
    where = f"stage {name!r}"
    if not isinstance(raw, dict):
        problems.append(f"{where} must be a mapping")
        return None
    bad = [k for k in raw if k not in STAGE_FIELDS]
    if bad:
        problems.append(
            f"{where}: unsupported field(s) {', '.join(map(repr, bad))} "
            f"(luigiflow supports: {', '.join(sorted(STAGE_FIELDS))})"
        )
        return None
    context = {**context, **_vars(raw.get("vars"), root, f"{where} vars", problems)}
    body = {k: v for k, v in raw.items() if k != "vars"}
    try:
        body = templating.render(body, context)
    except templating.TemplateError as exc:
        problems.append(f"{where}: {exc}")
        return None
    cmd = body.get("cmd")
    if isinstance(cmd, str) and cmd.strip():
        # As DVC's _enforce_cmd_list: each line of a string is a command of its own.
        commands = [line for line in cmd.splitlines() if line.strip()]
    elif isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd):
        commands = list(cmd)
    else:
        problems.append(f"{where}: cmd must be a string or a list of strings, got {cmd!r}")
        return None
    wdir = str(body.get("wdir", "."))
    stage = CommandStage(name=name, root=root, commands=commands, in_place=True)
    for flag in ("frozen", "always_changed"):
        if not isinstance(body.get(flag, False), bool):
            problems.append(f"{where}: {flag} must be true or false, got {body[flag]!r}")
    stage.frozen = body.get("frozen") is True
    stage.always_changed = body.get("always_changed") is True
    stage.metadata.update({k: body[k] for k in ("desc", "meta") if k in body})
    stage.workdir = _inside(root, wdir, ".", where, "wdir", problems) or "."
    stage.deps = [
        p
        for p in (
            _inside(root, wdir, d, where, "dep", problems)
            for d in _paths(body, "deps", where, set(), problems)
        )
        if p
    ]
    for key, target, flags in (
        ("outs", stage.outs, OUT_FLAGS),
        ("metrics", stage.metrics, OUT_FLAGS),
        ("plots", stage.plots, PLOT_FLAGS),
    ):
        for entry, opts in _entries(body.get(key), where, key, flags, problems):
            rel = _inside(
                root, wdir, entry, where, key[:-1] if key != "metrics" else "metrics file", problems
            )
            if rel:
                target.append(rel)
                if opts.get("persist"):
                    stage.persist.append(rel)
    _params(stage, body.get("params"), root, wdir, where, problems)
    return stage


def _paths(
    body: dict[str, Any], key: str, where: str, flags: set[str], problems: list[str]
) -> list[str]:
    return [entry for entry, _ in _entries(body.get(key), where, key, flags, problems)]


def _entries(
    raw: Any, where: str, key: str, flags: set[str], problems: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    """Paths of a deps/outs/metrics/plots list, each with its flags."""
    found: list[tuple[str, dict[str, Any]]] = []
    for entry in raw or []:
        if isinstance(entry, str):
            found.append((entry, {}))
        elif isinstance(entry, dict) and len(entry) == 1:
            ((path, opts),) = entry.items()
            opts = opts or {}
            bad = [f for f in opts if f not in flags]
            if bad:
                problems.append(
                    f"{where}: {key} entry {path!r}: unsupported field(s) "
                    f"{', '.join(map(repr, bad))}"
                )
            found.append((str(path), dict(opts)))
        else:
            problems.append(f"{where}: {key} entry {entry!r} must be a path or {{path: {{...}}}}")
    return found


def _inside(
    root: pathlib.Path, wdir: str, path: str, where: str, what: str, problems: list[str]
) -> str | None:
    """`path` (relative to the stage's wdir) relative to the project folder."""
    joined = os.path.normpath(os.path.join(wdir, path))
    if os.path.isabs(path) or joined == ".." or joined.startswith(".." + os.sep):
        problems.append(f"{where}: {what} {path!r} lies outside the project folder {root}")
        return None
    return pathlib.PurePath(joined).as_posix()


def _params(
    stage: CommandStage, raw: Any, root: pathlib.Path, wdir: str, where: str, problems: list[str]
) -> None:
    """Parameters: keys of params.yaml in wdir, or {file: [keys]} (no keys: all of them)."""
    wanted: list[tuple[str, list[str] | None]] = []
    for entry in raw or []:
        if isinstance(entry, str):
            wanted.append((DEFAULT_PARAMS, [entry]))
        elif isinstance(entry, dict):
            for file, keys in entry.items():
                if keys is not None and not isinstance(keys, list):
                    problems.append(f"{where}: params of {file!r} must be a list of keys")
                    continue
                wanted.append((str(file), keys or None))
        else:
            problems.append(f"{where}: params entry {entry!r} must be a key or {{file: [keys]}}")
    for file, keys in wanted:
        rel = _inside(root, wdir, file, where, "params file", problems)
        if rel is None:
            continue
        if pathlib.PurePath(rel).suffix.lower() not in (".yaml", ".yml", ".json", ".toml"):
            problems.append(f"{where}: params file {file!r}: luigiflow reads YAML, JSON and TOML")
            continue
        tree = _read(root / rel, problems) if (root / rel).is_file() else None
        if tree is None:
            problems.append(f"{where}: params file {rel!r} does not exist")
            continue
        chosen = templating.flatten(tree) if keys is None else {}
        for key in keys or []:
            try:
                chosen[key] = templating.lookup(tree, key)
            except templating.TemplateError:
                problems.append(f"{where}: params key {key!r} is not in {rel}")
        for key, value in chosen.items():
            if key in stage.params and stage.params_from.get(key) != rel:
                problems.append(f"{where}: params key {key!r} is read from two files")
            stage.params[key] = value
            stage.params_from[key] = rel


def _attach_top_level(
    data: dict[str, Any], stages: list[CommandStage], problems: list[str]
) -> None:
    """Top-level metrics and plots belong to the stage whose outputs hold them."""

    def owner(path: str) -> CommandStage | None:
        pure = pathlib.PurePosixPath(path)
        for stage in stages:
            for declared in [*stage.outs, *stage.metrics, *stage.plots]:
                if pure == pathlib.PurePosixPath(declared) or pure.is_relative_to(declared):
                    return stage
        return None

    for entry, _ in _entries(data.get("metrics"), "top level", "metrics", OUT_FLAGS, problems):
        stage = owner(entry)
        if stage is None:
            problems.append(f"top-level metrics file {entry!r} is not an output of any stage")
        elif entry not in stage.metrics:
            stage.metrics.append(entry)
    for entry in data.get("plots") or []:
        for path in _plot_files(entry):
            stage = owner(path)
            if stage is not None and path not in stage.plots:
                stage.plots.append(path)
            if stage is not None and entry not in stage.metadata.setdefault("plots", []):
                stage.metadata["plots"].append(entry)
    artifacts = data.get("artifacts")
    for name, spec in artifacts.items() if isinstance(artifacts, dict) else []:
        stage = owner(str(spec.get("path", ""))) if isinstance(spec, dict) else None
        if stage is not None:  # model-registry metadata of an output: kept on its runs
            stage.metadata.setdefault("artifacts", {})[name] = spec
    for key in ("params", "datasets"):
        if data.get(key):
            for stage in stages:
                stage.metadata[key] = data[key]


def _plot_files(entry: Any) -> list[str]:
    """Files a top-level plot definition reads (a path, or `{id: {y: {file: field}}}`)."""
    if isinstance(entry, str):
        return [entry]
    files: list[str] = []
    if isinstance(entry, dict):
        for key, spec in entry.items():
            y = spec.get("y") if isinstance(spec, dict) else None
            if isinstance(y, dict):
                files.extend(str(f) for f in y)
            else:
                files.append(str(key))
    return files
