"""CommandTask: an existing script or program as a task, recorded as one MLflow run.

The command runs in a scratch folder (or, with `in_place`, in the project folder as
DVC runs it) holding the declared files and upstream artifacts at the relative paths
the script expects; what it writes at the declared output paths becomes the run's
artifacts. How one execution goes is in `_command_run`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import pathlib
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from luigiflow._command import run
from luigiflow._core import hashing, templating
from luigiflow._core.identity import canonical_json
from luigiflow._core.process import Step, step_text, step_words
from luigiflow._errors import ParameterError, TaskDefinitionError
from luigiflow._store import schema
from luigiflow._task import MlflowTask

# Words of a command that name script files: their content enters the identity even
# when not declared in `deps`, so editing the script re-runs the step.
SCRIPT_SUFFIXES = (".py", ".sh", ".bash", ".r", ".jl", ".pl", ".rb", ".js", ".ipynb", ".sql")


class CommandTask(MlflowTask):
    """A task whose work is one command, e.g. an unmodified `python src/train.py ...`.

    Example::

        class Train(lf.CommandTask):
            command = ["python", "src/train.py", "features", "model.pkl", "--seed", "${rs}"]
            files = ["src/train.py"]                    # copied in; content in the identity
            inputs = {"features": "featurize.features"} # upstream artifact at this path
            outs = {"model": "model.pkl"}               # become the run's artifacts
            params_file = "params.yaml"                 # parameters written for the script
            metrics_file = "metrics.json"               # numbers logged as MLflow metrics
            rs = luigi.IntParameter(default=0)  # not `seed`: that is the task's own seed

            def requires(self):
                return {"featurize": Featurize()}
    """

    command: ClassVar[str | Sequence[str]] = ()
    commands: ClassVar[Sequence[Step]] = ()  # several commands run in order (DVC's cmd list)
    project_dir: ClassVar[str | None] = None  # default: the folder of the class's module
    workdir: ClassVar[str] = "."  # where the command runs, relative to the project folder
    files: ClassVar[Sequence[str]] = ()  # files/folders the command reads, copied in
    inputs: ClassVar[Mapping[str, str]] = {}
    outs: ClassVar[Mapping[str, str]] = {}
    params_file: ClassVar[str | None] = None
    metrics_file: ClassVar[str | Sequence[str] | None] = None
    plots: ClassVar[Sequence[str]] = ()
    in_place: ClassVar[bool] = False  # run in the project folder itself, as DVC does
    persist: ClassVar[Sequence[str]] = ()  # with in_place: outputs not removed before running
    environment: ClassVar[Mapping[str, str]] = {}  # extra environment variables
    # Variables the tool that declared the stage gives its commands (DVC_ROOT, DVC_STAGE):
    # they say where the project lies, not what it computes, so they stay out of the
    # identity (a moved project keeps its runs).
    host_environment: ClassVar[Mapping[str, str]] = {}
    joins_mlflow_run: ClassVar[bool] = False  # the script's mlflow.start_run() joins our run
    seed_random = False  # the script seeds itself; nothing to seed in this process
    stage_source: ClassVar[dict[str, str] | None] = None  # the pipeline file a stage came from
    params_from: ClassVar[Mapping[str, str]] = {}  # in place: parameter -> file the script reads
    quote_values: ClassVar[bool] = False  # shell-quote values put into a shell string
    # Parameters a stage only passes on to its upstream stages (a sweep or an override
    # of an upstream value must make this task another one): in its identity and record,
    # but neither written to its params file nor substituted in its command.
    carried_params: ClassVar[Sequence[str]] = ()
    always_changed: ClassVar[bool] = False  # DVC's always_changed: runs in every build
    # What the declaring file says of the stage without changing what runs (DVC's desc,
    # meta, artifacts, plot definitions): recorded on each run, not in the identity.
    stage_metadata: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        problems = _definition_problems(cls)
        if problems:
            raise TaskDefinitionError(f"command task {cls.__name__}: " + "; ".join(problems))
        cls.artifacts = declared_files(cls)
        super().__init_subclass__(**kwargs)

    # ----- what the command is ------------------------------------------------------

    @classmethod
    def project_root(cls) -> pathlib.Path:
        """The folder every relative path of the task starts from."""
        if cls.project_dir is not None:
            return pathlib.Path(cls.project_dir).resolve()
        try:
            source = inspect.getsourcefile(cls)
        except (TypeError, OSError):
            source = None
        return pathlib.Path(source).resolve().parent if source else pathlib.Path.cwd()

    def param_values(self) -> dict[str, Any]:
        """Significant parameter values as plain Python data (for templating and files)."""
        return {
            name: _plain(getattr(self, name))
            for name, param in self.get_params()
            if param.significant and name not in self.carried_params
        }

    def rendered_steps(self) -> list[Step]:
        """The command(s) with `${param}` placeholders substituted."""
        values = self.param_values()
        context = {**templating.nest(values), **values}
        raw: list[Step] = list(self.commands) if self.commands else [self.command]
        quote = shlex.quote if self.quote_values else None
        try:
            return [
                templating.render_text(step, context, quote)
                if isinstance(step, str)
                else [templating.render_text(word, context) for word in step]
                for step in raw
            ]
        except templating.TemplateError as exc:
            raise ParameterError(f"{self.get_task_family()}: command: {exc}") from exc

    def script_files(self) -> list[str]:
        """Declared files plus script files the command names (project-relative paths)."""
        root = self.project_root()
        workdir = (root / self.workdir).resolve()
        found = list(self.files)
        produced = {pathlib.PurePosixPath(p) for p in declared_files(type(self)).values()}
        for step in self.rendered_steps():
            for word in step_words(step):
                if not word.lower().endswith(SCRIPT_SUFFIXES):
                    continue
                path = (workdir / word).resolve()
                try:
                    rel = path.relative_to(root).as_posix()
                except ValueError:
                    continue
                if (
                    path.is_file()
                    and pathlib.PurePosixPath(rel) not in produced
                    and rel not in found
                ):
                    found.append(rel)
        return found

    def _reads_files(self) -> bool:
        return True  # scripts and data files may change while the process lives

    def file_hashes(self) -> dict[str, str]:
        """Content hash of every file the command reads from the project folder."""
        root = self.project_root()
        contents = {}
        for rel in self.script_files():
            if rel in self.inputs:
                continue
            try:
                contents[rel] = hashing.content_hash(root / rel)
            except OSError:
                raise ParameterError(
                    f"{self.get_task_family()}: declared file {rel!r} does not exist under "
                    f"{root}; create it or fix the task's files"
                ) from None
        return contents

    def changes_since(self, tags: Mapping[str, str]) -> list[str]:
        """What differs from the run with these tags: files edited, command changed."""
        try:
            record = json.loads(tags.get(schema.COMMAND_TAG, "{}"))
        except ValueError:
            return []
        old = record.get("files") or {}
        now = self.file_hashes()
        found = [
            f"{rel} changed" for rel in sorted(set(old) | set(now)) if old.get(rel) != now.get(rel)
        ]
        steps = [step_text(s) for s in self.rendered_steps()]
        if record.get("steps") and record["steps"] != steps:
            found.append(f"command changed: {' && '.join(steps)}")
        return found

    def _identity_code(self) -> str | None:
        payload = {
            "steps": [s if isinstance(s, str) else list(s) for s in self.rendered_steps()],
            "files": self.file_hashes(),
            "inputs": dict(self.inputs),
            "outs": dict(self.outs),
            "params_file": self.params_file,
            "metrics": metrics_files(type(self)),
            "plots": list(self.plots),
            "workdir": self.workdir,
            "in_place": self.in_place,
            "environment": dict(self.environment),
        }
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    # ----- the run ------------------------------------------------------------------

    @classmethod
    def metrics_files(cls) -> list[str]:
        return metrics_files(cls)

    def run_task(self) -> None:
        run.execute(self)


def metrics_files(cls: type[CommandTask]) -> list[str]:
    raw = cls.metrics_file
    if raw is None:
        return []
    return [raw] if isinstance(raw, str) else list(raw)


def artifact_name(path: str, taken: Mapping[str, str] | None = None) -> str:
    """An artifact name for a declared path: `data/prepared` -> `data_prepared`."""
    base = "".join(c if c.isalnum() else "_" for c in path).strip("_") or "output"
    if base[0].isdigit():
        base = "f_" + base
    name, n = base, 2
    while taken and name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def declared_files(cls: type[CommandTask]) -> dict[str, str]:
    """Every file the command must leave behind, as artifacts: outs, metrics, plots."""
    return artifact_names(dict(cls.outs), metrics_files(cls), list(cls.plots))


def artifact_names(
    outs: Mapping[str, str] | Sequence[str], metrics: Sequence[str], plots: Sequence[str]
) -> dict[str, str]:
    """Artifact name -> path for declared outputs; listed paths get names from the path,
    metrics and plots files inside a declared output folder are stored with it."""
    files: dict[str, str] = {}
    if isinstance(outs, Mapping):
        files.update(outs)
    else:
        for path in outs:
            files[artifact_name(path, files)] = path
    stored = set(files.values())
    for path in [*metrics, *plots]:
        if path in stored or any(_under(path, out) for out in stored):
            continue  # already inside a declared output folder
        files[artifact_name(path, files)] = path
        stored.add(path)
    return files


def _under(path: str, folder: str) -> bool:
    return pathlib.PurePosixPath(path).is_relative_to(pathlib.PurePosixPath(folder))


def _relative_problem(what: str, path: Any) -> str | None:
    if not isinstance(path, str) or not path.strip():
        return f"{what} {path!r} must be a non-empty relative path"
    pure = pathlib.PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in path:
        return f"{what} {path!r} must be a relative path inside the project (no '..')"
    return None


def _definition_problems(cls: type[CommandTask]) -> list[str]:
    problems = []
    command, commands = cls.command, cls.commands
    if commands:
        if command:
            problems.append("give command or commands, not both")
        for step in commands:
            if not _valid_step(step):
                problems.append(f"commands entry {step!r} must be a string or a list of strings")
    elif (not _valid_step(command) or (isinstance(command, str) and not command.strip())) and (
        command or cls.__dict__.get("command") is not None
    ):
        problems.append(
            f"command must be a list of strings (e.g. ['python', 'train.py']) or a shell "
            f"string, got {command!r}"
        )
    for path in cls.files:
        problem = _relative_problem("file", path)
        if problem:
            problems.append(problem)
    for path, source in dict(cls.inputs).items():
        problem = _relative_problem("input", path)
        if problem:
            problems.append(problem)
        if not isinstance(source, str) or not source:
            problems.append(
                f"input {path!r}: {source!r} must name 'upstream' or 'upstream.artifact'"
            )
    for name, path in dict(cls.outs).items():
        if not isinstance(name, str) or not name.isidentifier():
            problems.append(f"out name {name!r} must be an identifier-like string")
        problem = _relative_problem(f"out {name!r}:", path)
        if problem:
            problems.append(problem)
    for path in [*metrics_files(cls), *cls.plots]:
        problem = _relative_problem("metrics/plots file", path)
        if problem:
            problems.append(problem)
    if cls.params_file is not None:
        problem = _relative_problem("params_file", cls.params_file)
        if problem:
            problems.append(problem)
        elif os.path.splitext(cls.params_file)[1].lower() not in (".yaml", ".yml", ".json"):
            problems.append(f"params_file {cls.params_file!r} must end in .yaml, .yml or .json")
    return problems


def _valid_step(step: Any) -> bool:
    if isinstance(step, str):
        return True
    return isinstance(step, Sequence) and bool(step) and all(isinstance(word, str) for word in step)


def _plain(value: Any) -> Any:
    """Luigi's frozen containers and dates as plain JSON/YAML-ready values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "name") and hasattr(value, "value") and not isinstance(value, str):
        return value.name  # enums
    return value
