"""What made a run: git state, environment, source fingerprint, seeding.

Everything here is computed once per process (git and package versions do not change
while a build runs) so recording it costs nothing per task.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import linecache
import marshal
import os
import platform
import random
import socket
import subprocess
import sys
import textwrap
import time
from importlib import metadata
from typing import Any

from luigiflow._core import fingerprint

DIFF_LIMIT_BYTES = 1_000_000
UNKNOWN = "unknown"  # the fingerprint of code whose source cannot be found


def _git(*args: str, cwd: str | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


GIT_CACHE_S = 10.0
_git_cache: dict[tuple[str, str], tuple[float, Any]] = {}


def _cached(kind: str, directory: str, compute: Any) -> Any:
    # Builds ask for git state once per task; a short cache keeps that to one `git`
    # call per build without hiding edits made between builds of a long session.
    now = time.monotonic()
    hit = _git_cache.get((kind, directory))
    if hit is not None and now - hit[0] < GIT_CACHE_S:
        return hit[1]
    value = compute(directory)
    _git_cache[(kind, directory)] = (now, value)
    return value


def git_state(directory: str) -> dict[str, str]:
    """Commit, branch and dirtiness of the repository holding `directory` ({} if none)."""
    result: dict[str, str] = _cached("state", directory, _git_state)
    return result


def git_diff(directory: str) -> tuple[str, bool]:
    """The uncommitted diff (tracked files) and whether it was cut at the size cap."""
    result: tuple[str, bool] = _cached("diff", directory, _git_diff)
    return result


def _git_state(directory: str) -> dict[str, str]:
    """Commit, branch and dirtiness of the repository holding `directory` ({} if none)."""
    top = _git("rev-parse", "--show-toplevel", cwd=directory)
    if top is None:
        return {}
    top = top.strip()
    commit = (_git("rev-parse", "HEAD", cwd=top) or "").strip()
    branch = (_git("rev-parse", "--abbrev-ref", "HEAD", cwd=top) or "").strip()
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=top) or ""
    state = {"repo": top, "commit": commit, "branch": branch, "dirty": str(bool(status.strip()))}
    return {k: v for k, v in state.items() if v}


def _git_diff(directory: str) -> tuple[str, bool]:
    diff = _git("diff", "HEAD", cwd=directory) or ""
    data = diff.encode("utf-8", "replace")
    if len(data) > DIFF_LIMIT_BYTES:
        cut = data[:DIFF_LIMIT_BYTES].decode("utf-8", "ignore")
        return cut + f"\n# luigiflow: diff cut at {DIFF_LIMIT_BYTES} of {len(data)} bytes\n", True
    return diff, False


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, str]:
    """Python, platform, host and versions of the foundation packages."""
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "host": socket.gethostname(),
        "cpu_count": str(os.cpu_count()),
    }
    return env | package_versions()


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """`version.<package>` of the foundation packages installed: the part of `environment`
    a plan compares, without `platform.platform()` (it runs `uname -p` in a subprocess)."""
    versions = {}
    for package in ("luigiflow", "luigi", "mlflow", "numpy", "pandas", "scikit-learn", "torch"):
        try:
            versions[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


@functools.lru_cache(maxsize=1)
def installed_packages() -> str:
    """A `pip freeze`-style list of every installed distribution."""
    found = set()
    for dist in metadata.distributions():
        meta = dist.metadata  # parsed on every access: read it once per distribution
        if meta["Name"]:
            found.add(f"{meta['Name']}=={meta['Version']}")
    lines = sorted(found, key=str.lower)
    return "\n".join(lines) + "\n"


# A class made at run time from a user's file (a dvc.yaml or pipeline file stage) names
# that file here: it is the run's source, and its folder's repository the run's git
# state, not the luigiflow module that made the class.
SOURCE_ATTRIBUTE = "__luigiflow_source_file__"


def source_file(cls: type) -> str | None:
    """The file defining `cls` (for a notebook class: its cell's file; for a stage: its
    pipeline file), or None."""
    declared = cls.__dict__.get(SOURCE_ATTRIBUTE)
    if isinstance(declared, str):
        return declared
    try:
        return inspect.getsourcefile(cls)
    except (TypeError, OSError):
        found = _cell_source(cls)
        return found[0] if found else None


@functools.lru_cache(maxsize=1024)
def class_source(cls: type) -> str | None:
    """The source of a class, also for classes defined in a notebook cell; None if unknown.

    Once per class and process, like its fingerprint: the code that runs is the code
    that was loaded, whatever the file says later (and `inspect` parses the whole
    module again on every call: 4 ms a task on a small module)."""
    try:
        return textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        found = _cell_source(cls)
        return found[1] if found else None


def _cell_source(cls: type) -> tuple[str, str] | None:
    """(file, class source) of a class whose module has no file (IPython's `__main__`).

    IPython and Jupyter keep each executed cell's text in `linecache` under the cell's
    file name, which the class's functions carry in their code objects; the class is
    the `class` statement of that name around the function's first line.
    """
    for value in vars(cls).values():
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        if code is None:
            continue
        text = "".join(linecache.getlines(code.co_filename))
        if not text:
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ClassDef)
                and node.name == cls.__name__
                and node.lineno <= code.co_firstlineno <= (node.end_lineno or node.lineno)
            ):
                segment = ast.get_source_segment(text, node)
                if segment:
                    return code.co_filename, textwrap.dedent(segment)
    return None


def code_fingerprint(cls: type) -> str:
    """Digest of the task's deep code fingerprint (see `_core.fingerprint`); UNKNOWN when
    the class's own source cannot be found."""
    if class_source(cls) is None:
        return UNKNOWN
    return fingerprint.fingerprint(cls, class_source).digest


def code_parts(cls: type) -> dict[str, str]:
    """Each piece of code the task depends on (`file: name`) -> its short hash."""
    return dict(fingerprint.fingerprint(cls, class_source).parts)


def seed_everything(seed: int) -> None:
    """Seed `random`, NumPy and, when already imported, PyTorch."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def importable_module(cls: type) -> str:
    """The module a class can be imported from later (`python -m pkg.mod` runs it as
    `__main__`; its real name is on the module's spec)."""
    module = cls.__module__
    main = sys.modules.get("__main__")
    if module == "__main__" and main is not None and vars(main).get(cls.__name__) is cls:
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            return str(spec.name)
        path = getattr(main, "__file__", None)
        if spec is None and path:  # `python script.py`: importable later as `script`
            return os.path.splitext(os.path.basename(path))[0]
    return module


# Set by `reproduce` on the classes it defines again from a run made in `__main__`: the
# origin recorded on the run, so they get the identity they had there.
ORIGIN_ATTRIBUTE = "__luigiflow_main_origin__"


def main_origin(cls: type) -> str | None:
    """Where a task class defined in `__main__` comes from (None for a class of an
    importable module, `python -m pkg.mod` included).

    Every script, notebook, stdin and `-c` program is module `__main__`: this tells them
    apart in the identity. The script's real path (`python tasks.py`), the notebook's path
    when the kernel knows it, else what ran (`notebook`, `<stdin>`, `-c`) and the folder
    it ran in.
    """
    recorded = cls.__dict__.get(ORIGIN_ATTRIBUTE)
    if isinstance(recorded, str):
        return recorded
    main = sys.modules.get("__main__")
    if cls.__module__ != "__main__" or main is None:
        return None
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return None  # `python -m pkg.mod`: importable as pkg.mod, an ordinary module
    path = getattr(main, "__file__", None)
    if path and not path.startswith("<"):  # `python - < x.py` names its file "<stdin>"
        return os.path.realpath(path)
    notebook = notebook_path()
    if notebook:
        return os.path.realpath(notebook)
    if isinstance(vars(main).get("In"), list):
        kind = "notebook"
    else:
        kind = {"-c": "-c", "-": "<stdin>", "": "<stdin>"}.get(sys.argv[0], "console")
    return f"{kind} in {os.getcwd()}"


def main_code(cls: type) -> str:
    """The code of a class defined in `__main__`, for its identity: its deep code
    fingerprint, or (stdin, `-c`: no source kept) a digest of its compiled functions."""
    found = code_fingerprint(cls)
    if found != UNKNOWN:
        return found
    digest = hashlib.sha256()
    for name, value in sorted(vars(cls).items()):
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        if code is not None:
            digest.update(name.encode("utf-8") + marshal.dumps(code))
    return "bytecode:" + digest.hexdigest()


def interactive(cls: type) -> bool:
    """Defined in a notebook or an interactive console (a `__main__` without a file)."""
    main = sys.modules.get("__main__")
    return (
        cls.__module__ == "__main__"
        and main is not None
        and not getattr(main, "__file__", None)
        and vars(main).get(cls.__name__) is cls
    )


def notebook_path() -> str | None:
    """The notebook file the kernel runs, when the kernel knows it."""
    main = sys.modules.get("__main__")
    path = vars(main).get("__session__") if main is not None else None
    return str(path) if path else os.environ.get("JPY_SESSION_NAME") or None


def notebook_definitions() -> str | None:
    """What the cells executed so far define: imports, functions, classes and assignments
    without calls, in order (builds and other actions left out), as one module's source.

    Run again in a fresh interpreter, it defines the same task classes."""
    main = sys.modules.get("__main__")
    cells = vars(main).get("In") if main is not None else None
    if not isinstance(cells, list):
        return None
    kept: list[str] = []
    for cell in cells:
        try:
            tree = ast.parse(cell or "")
        except SyntaxError:
            continue
        for node in tree.body:
            definition = isinstance(
                node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef
            ) or (
                isinstance(node, ast.Assign | ast.AnnAssign)
                and not any(isinstance(n, ast.Call) for n in ast.walk(node))
            )
            if definition:
                kept.append(ast.unparse(node))
    return "\n\n".join(kept) + "\n" if kept else None
