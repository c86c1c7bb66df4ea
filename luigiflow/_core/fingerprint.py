"""The code a task depends on, followed into the user's own modules.

A task's fingerprint covers its class, plus every function, class and constant it
references from modules of the user's project, followed transitively (a helper that
reads a constant from another module brings that constant in), plus the files the
class declares as code (`code_files`). Each piece is hashed from its AST with
docstrings removed, so comments, docstrings and formatting never count, and an edit
to a function nobody references changes nothing.

Never fingerprinted: luigiflow itself, the standard library, installed packages
(site-packages, editable installs included) and other task classes (they are
upstream tasks; their identity is already in the graph).

Resolution is static (names looked up in each module's AST: its top-level
definitions and imports), so nothing is executed and the result does not depend on
import order.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import pathlib
import sys
import sysconfig
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from urllib.parse import unquote, urlparse

import luigi

from luigiflow._core.hashing import content_hash
from luigiflow._errors import TaskDefinitionError

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1]  # luigiflow itself
_MAX_DEPTH = 30  # re-export chains longer than this are not followed
PART_HEX = 12


@dataclass(frozen=True)
class Fingerprint:
    """A task class's code: one digest, and the hash of each piece by its label."""

    digest: str
    parts: dict[str, str]


def changed_parts(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Labels of pieces edited, added or removed between two fingerprints."""
    return sorted(label for label in set(old) | set(new) if old.get(label) != new.get(label))


@dataclass
class _Module:
    name: str
    label: str  # path relative to the project root, posix
    defs: dict[str, list[ast.stmt]]
    imports: dict[str, tuple[str, ...]]


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Top-level statements, including those under module-level if/try/with."""
    for stmt in body:
        if isinstance(stmt, ast.If | ast.Try | ast.With):
            yield from _statements(stmt.body)
            yield from _statements(getattr(stmt, "orelse", []))
            for handler in getattr(stmt, "handlers", []):
                yield from _statements(handler.body)
            yield from _statements(getattr(stmt, "finalbody", []))
        else:
            yield stmt


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module)
            and isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]


def _assigned_names(target: ast.expr) -> Iterator[str]:
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Tuple | ast.List):
        for element in target.elts:
            yield from _assigned_names(element)


def _parse(name: str, source: bytes, filename: str, label: str) -> _Module:
    tree = ast.parse(source, filename=filename)
    _strip_docstrings(tree)
    is_package = pathlib.Path(filename).name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    defs: dict[str, list[ast.stmt]] = {}
    imports: dict[str, tuple[str, ...]] = {}
    for stmt in _statements(tree.body):
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defs.setdefault(stmt.name, []).append(stmt)
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                for assigned in _assigned_names(target):
                    defs.setdefault(assigned, []).append(stmt)
        elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
            for assigned in _assigned_names(stmt.target):
                defs.setdefault(assigned, []).append(stmt)
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    imports[alias.asname] = ("module", alias.name)
                else:
                    top = alias.name.split(".")[0]
                    imports[top] = ("module", top)
        elif isinstance(stmt, ast.ImportFrom):
            base = "." * stmt.level + (stmt.module or "")
            try:
                absolute = importlib.util.resolve_name(base, package) if stmt.level else base
            except ImportError:
                continue
            for alias in stmt.names:
                if alias.name != "*":
                    imports[alias.asname or alias.name] = ("from", absolute, alias.name)
    return _Module(name, label, defs, imports)


# Parsed modules by (name, label, sha256 of the source): every task class of one
# module shares one parse (reading and hashing the bytes is far cheaper than parsing).
_PARSED: dict[tuple[str, str, str], _Module] = {}


def _parsed(name: str, path: pathlib.Path, label: str) -> _Module:
    source = path.read_bytes()
    key = (name, label, hashlib.sha256(source).hexdigest())
    if key not in _PARSED:
        _PARSED[key] = _parse(name, source, str(path), label)
    return _PARSED[key]


def _references(nodes: Sequence[ast.AST]) -> Iterator[list[str]]:
    """Every name chain read by `nodes`: `f` as ["f"], `mod.sub.f` as ["mod", "sub", "f"]."""
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                yield [node.id]
            elif isinstance(node, ast.Attribute):
                chain = [node.attr]
                value = node.value
                while isinstance(value, ast.Attribute):
                    chain.append(value.attr)
                    value = value.value
                if isinstance(value, ast.Name):
                    yield [value.id, *reversed(chain)]


def _hash_nodes(nodes: Sequence[ast.AST]) -> str:
    dumped = "\n".join(ast.dump(n, annotate_fields=False, include_attributes=False) for n in nodes)
    return hashlib.sha256(dumped.encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _editable_roots() -> tuple[pathlib.Path, ...]:
    """Source folders of editable installs (PEP 610 `direct_url.json`)."""
    roots = []
    for dist in metadata.distributions():
        raw = dist.read_text("direct_url.json")
        if not raw:
            continue
        try:
            info = json.loads(raw)
        except ValueError:
            continue
        if info.get("dir_info", {}).get("editable") and str(info.get("url", "")).startswith(
            "file:"
        ):
            roots.append(pathlib.Path(unquote(urlparse(info["url"]).path)).resolve())
    return tuple(roots)


@functools.lru_cache(maxsize=1)
def _library_dirs() -> tuple[pathlib.Path, ...]:
    paths = sysconfig.get_paths()
    found = {_PACKAGE_DIR}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(key):
            found.add(pathlib.Path(paths[key]).resolve())
    return tuple(found)


def project_root(source: pathlib.Path) -> pathlib.Path:
    """The git work tree holding `source`, else the import root it was found on."""
    for folder in source.parents:
        if (folder / ".git").exists():
            return folder
    entries = [pathlib.Path(p or os.getcwd()).resolve() for p in sys.path]
    holding = [e for e in entries if e in source.parents]
    return max(holding, key=lambda p: len(p.parts)) if holding else source.parent


class _Project:
    """The user's project: which modules are theirs, parsed once each."""

    def __init__(self, root: pathlib.Path, task_file: pathlib.Path) -> None:
        self.root = root
        self.excluded = [d for d in _library_dirs() if d != root]
        # An editable install is a library, unless the task itself lives in it.
        self.excluded += [e for e in _editable_roots() if e not in (task_file, *task_file.parents)]
        self.modules: dict[str, _Module | None] = {}

    def owns(self, path: pathlib.Path) -> bool:
        if self.root not in path.parents:
            return False
        if {"site-packages", "dist-packages"} & set(path.parts):
            return False
        return not any(d == path or d in path.parents for d in self.excluded)

    def module(self, name: str) -> _Module | None:
        if name in self.modules:
            return self.modules[name]
        found: _Module | None = None
        path = _module_file(name)
        if path is not None and path.suffix == ".py" and self.owns(path):
            try:
                found = _parsed(name, path, path.relative_to(self.root).as_posix())
            except (OSError, SyntaxError, ValueError):
                found = None
        self.modules[name] = found
        return found

    def resolve(self, mod: _Module, chain: list[str], depth: int = 0) -> tuple[_Module, str] | None:
        """The project definition a name chain read in `mod` refers to, if any."""
        if depth > _MAX_DEPTH:
            return None
        first = chain[0]
        if first in mod.defs:
            return mod, first
        imported = mod.imports.get(first)
        if imported is None:
            return None
        if imported[0] == "module":
            return self._in_module(imported[1], chain[1:], depth)
        return self._in_module(imported[1], [imported[2], *chain[1:]], depth)

    def _in_module(self, name: str, chain: list[str], depth: int) -> tuple[_Module, str] | None:
        while chain:
            mod = self.module(name)
            if mod is not None and (chain[0] in mod.defs or chain[0] in mod.imports):
                return self.resolve(mod, chain, depth + 1)
            name = f"{name}.{chain[0]}"
            chain = chain[1:]
            if self.module(name) is None:
                return None
        return None  # a module itself, not a definition in it


def _module_file(name: str) -> pathlib.Path | None:
    """The source file of module `name`, found without importing anything.

    `importlib.util.find_spec("pkg.sub")` imports `pkg` (running its __init__, which for
    `mlflow.sklearn` is all of MLflow); a fingerprint must never execute code, so a
    module not imported yet is looked up with the path finder alone.
    """
    module = sys.modules.get(name)
    if module is not None:
        file = getattr(module, "__file__", None)
        return pathlib.Path(file).resolve() if file else None
    spec = _static_spec(name)
    origin = spec.origin if spec is not None else None
    return pathlib.Path(origin).resolve() if origin and origin != "built-in" else None


def _static_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    parent, _, _ = name.rpartition(".")
    search: list[str] | None = None
    if parent:
        imported = sys.modules.get(parent)
        if imported is not None:
            search = list(getattr(imported, "__path__", None) or [])
        else:
            parent_spec = _static_spec(parent)
            search = list((parent_spec and parent_spec.submodule_search_locations) or [])
        if not search:
            return None
    try:
        return importlib.machinery.PathFinder.find_spec(name, search)
    except (ImportError, ValueError):
        return None


def _is_other_task(project_module: str, name: str, mro: tuple[type, ...]) -> bool:
    """Another task class: an upstream dependency, not code of this task."""
    module = sys.modules.get(project_module)
    value: Any = getattr(module, name, None)
    return isinstance(value, type) and issubclass(value, luigi.Task) and value not in mro


def _registered_subclasses(mod: _Module, name: str) -> list[str]:
    """Subclasses of class `name` defined in its own module (not tasks).

    A registry (`Algorithm.registry`, filled by `__init_subclass__`) hands out
    subclasses no task names; they live beside their base in every such pattern we
    know. Only the same module is searched, so the answer never depends on which
    other modules a process happened to import.
    """
    live: Any = getattr(sys.modules.get(mod.name), name, None)
    if not isinstance(live, type) or issubclass(live, luigi.Task):
        return []
    found, stack = [], list(type.__subclasses__(live))
    while stack:
        sub = stack.pop()
        stack.extend(type.__subclasses__(sub))
        mine = sub.__module__ == mod.name and sub.__qualname__ in mod.defs
        if mine and not issubclass(sub, luigi.Task):
            found.append(sub.__qualname__)
    return sorted(set(found))


def _label(mod: _Module, name: str, nodes: Sequence[ast.stmt]) -> str:
    is_function = all(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in nodes)
    return f"{mod.label}: {name}()" if is_function else f"{mod.label}: {name}"


@functools.lru_cache(maxsize=1024)
def fingerprint(cls: type, class_source: Callable[[type], str | None] | None = None) -> Fingerprint:
    """The deep code fingerprint of a task class (computed once per class and process).

    `class_source` finds a class's own source where `inspect` cannot (notebook cells).
    """
    try:
        source = pathlib.Path(inspect.getsourcefile(cls) or "").resolve()
    except (TypeError, OSError):  # built in, or __main__ of a notebook
        source = pathlib.Path()
    if not source.is_file():
        return _digest({f"{cls.__qualname__}": _class_only(cls, class_source)})
    root = project_root(source)
    project = _Project(root, source)
    start = project.module(cls.__module__)
    parts: dict[str, str] = {}
    queue: list[tuple[_Module, str]] = []
    if start is not None and cls.__qualname__ in start.defs:
        queue.append((start, cls.__qualname__))
    else:
        # A class made inside a function, outside the project, or from definitions that
        # are not a project module (a notebook's, re-executed by `reproduce` from the
        # file stored on the run): its own source only, labelled without a file, so the
        # same class text has the same fingerprint wherever it was executed from.
        parts[cls.__qualname__] = _class_only(cls, class_source)
    seen: set[tuple[str, str]] = set()
    while queue:
        mod, name = queue.pop()
        if (mod.name, name) in seen:
            continue
        seen.add((mod.name, name))
        nodes = mod.defs[name]
        parts[_label(mod, name, nodes)] = _hash_nodes(nodes)[:PART_HEX]
        for chain in _references(nodes):
            found = project.resolve(mod, chain)
            if found is not None and not _is_other_task(found[0].name, found[1], cls.__mro__):
                queue.append(found)
        queue.extend((mod, sub) for sub in _registered_subclasses(mod, name))
    for declared in getattr(cls, "code_files", ()) or ():
        path = root / declared
        if not path.exists():
            raise TaskDefinitionError(
                f"{cls.__name__}.code_files: {declared!r} does not exist under the project "
                f"root {root}; paths are relative to it"
            )
        parts[str(declared)] = content_hash(path)[:PART_HEX]
    return _digest(parts)


def _class_only(cls: type, class_source: Callable[[type], str | None] | None) -> str:
    try:
        source = class_source(cls) if class_source else inspect.getsource(cls)
        if source is None:
            return "unknown"
        tree = ast.parse(textwrap.dedent(source))
    except (OSError, TypeError, SyntaxError):
        return "unknown"
    _strip_docstrings(tree)
    return _hash_nodes([tree])[:PART_HEX]


def _digest(parts: dict[str, str]) -> Fingerprint:
    payload = json.dumps(sorted(parts.items()), separators=(",", ":"))
    return Fingerprint(
        hashlib.sha256(payload.encode()).hexdigest()[:16], dict(sorted(parts.items()))
    )
