"""An MLflow Project entry point as a stage, in the local environment (no conda, no
docker), as `mlflow run -e ENTRY . -P k=v` runs it: in the project folder, parameters
substituted into the entry point's command and shell-quoted. The script's own
`mlflow.start_run()` joins the stage's run; only luigiflow finishes it."""

from __future__ import annotations

import pathlib
import string
from typing import Any

from luigiflow._ops.stages.spec import CommandStage, string_list, unknown_keys

PARAM_TYPES = {"string", "float", "int", "path", "uri"}


def stage(
    name: str, raw: dict[str, Any], root: pathlib.Path, known: set[str], problems: list[str]
) -> CommandStage | None:
    where = f"stage {name!r}"
    unknown_keys(where, raw, known, problems)
    folder = (root / str(raw["mlproject"])).resolve()
    spec_path = folder / "MLproject"
    if not spec_path.is_file():
        problems.append(f"{where}: no MLproject file in {folder}")
        return None
    try:
        import yaml

        spec = yaml.safe_load(spec_path.read_text(encoding="utf-8")) or {}
    except Exception as exc:
        problems.append(f"{where}: {spec_path} is not valid YAML: {exc}")
        return None
    entry = str(raw.get("entry_point", "main"))
    given = raw.get("params", {})
    if not isinstance(given, dict):
        problems.append(f"{where}: params must be a table of name = value")
        given = {}
    command, values = _entry_command(where, spec, entry, folder, dict(given), problems)
    if command is None:
        return None
    result = CommandStage(name=name, root=folder, command=command, in_place=True)
    result.params = values
    result.quote_values = True
    result.joins_mlflow_run = True
    result.deps = ["MLproject", *string_list(where, "deps", raw.get("deps"), problems)]
    result.metrics = string_list(where, "metrics", raw.get("metrics"), problems)
    result.plots = string_list(where, "plots", raw.get("plots"), problems)
    result.outs = string_list(where, "outs", raw.get("outs"), problems)
    result.inputs = {str(k): str(v) for k, v in dict(raw.get("inputs", {})).items()}
    result.environment = {str(k): str(v) for k, v in dict(raw.get("env", {})).items()}
    result.experiment = raw.get("experiment")
    return result


def _entry_command(
    where: str,
    spec: dict[str, Any],
    entry: str,
    folder: pathlib.Path,
    given: dict[str, Any],
    problems: list[str],
) -> tuple[str | None, dict[str, Any]]:
    points = spec.get("entry_points") or {}
    if entry in points:
        point = points[entry] or {}
        template = str(point.get("command", ""))
        declared = point.get("parameters") or {}
    elif entry.endswith((".py", ".sh")) and (folder / entry).is_file():
        # MLflow runs a file named as entry point directly, parameters as --name value.
        template = ("python " if entry.endswith(".py") else "bash ") + entry
        declared = {}
    else:
        problems.append(
            f"{where}: MLproject in {folder} has no entry point {entry!r} "
            f"(entry points: {', '.join(points) or 'none'})"
        )
        return None, {}
    values: dict[str, Any] = {}
    for key, decl in declared.items():
        kind = decl.get("type", "string") if isinstance(decl, dict) else str(decl)
        if kind not in PARAM_TYPES:
            problems.append(f"{where}: parameter {key!r} has unknown type {kind!r}")
        default = decl.get("default") if isinstance(decl, dict) else None
        value = given.pop(key, default)
        if value is None:
            problems.append(f"{where}: entry point {entry!r} needs parameter {key!r}")
            continue
        values[key] = _typed(value, kind)
    values.update(given)  # extra parameters are appended as --name value, as MLflow does
    command = _placeholders(template)
    for key in given:
        command += f" --{key} ${{{key}}}"
    return command, values


def _typed(value: Any, kind: str) -> Any:
    try:
        if kind == "float":
            return float(value)
        if kind == "int":
            return int(value)
    except (TypeError, ValueError):
        return value
    return value if kind in ("float", "int") else str(value)


def _placeholders(template: str) -> str:
    """MLflow's `{name}` fields as `${name}` (literal text, `{{`, `}}` kept as text)."""
    out = []
    for literal, field, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if field is not None:
            out.append(f"${{{field}}}")
    return "".join(out)
