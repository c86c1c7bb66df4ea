"""The shape of the package: public API, layering facts a reader relies on."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import grimp
import pytest

import luigiflow

PACKAGE = pathlib.Path(luigiflow.__file__).parent

EXPORTED = [
    "ArtifactError",
    "BuildError",
    "BuildResult",
    "CommandFailedError",
    "CommandTask",
    "ConfigError",
    "FileParameter",
    "LuigiflowError",
    "MlflowTask",
    "ParameterError",
    "Plan",
    "RunNotFoundError",
    "StepsParameter",
    "TaskDefinitionError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TrackingError",
    "__version__",
    "build",
    "find_runs",
    "plan",
    "runs",
    "tracking_uri",
]


def test_public_api_is_exactly_the_contract():
    assert sorted(luigiflow.__all__) == sorted(EXPORTED)
    for name in EXPORTED:
        assert getattr(luigiflow, name) is not None, name
    public = {n for n in dir(luigiflow) if not n.startswith("_")}
    assert public <= set(EXPORTED) | {"annotations"}, public - set(EXPORTED)


@pytest.mark.slow
def test_help_does_not_import_mlflow():
    code = (
        "import sys\nfrom luigiflow.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('MLFLOW' if 'mlflow' in sys.modules else 'CLEAN')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("CLEAN"), out.stdout


def test_no_import_cycles_counting_imports_inside_functions():
    graph = grimp.build_graph("luigiflow", include_external_packages=False)
    modules = sorted(graph.modules)
    # Tarjan's strongly connected components over direct imports (any nesting level).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.find_modules_directly_imported_by(module):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == module:
                    break
            # A package's __init__ re-exporting its children is not a cycle of logic.
            if len(component) > 1 and component != ["luigiflow"]:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for module in modules:
        if module not in index:
            visit(module)
    cycles = [c for c in cycles if not (set(c) - {"luigiflow"} == set() or c == ["luigiflow"])]
    assert _without_root_reexports(cycles) == []


def _without_root_reexports(cycles: list[list[str]]) -> list[list[str]]:
    # `luigiflow/__init__.py` imports the public names from the layers; a module that
    # imports `luigiflow._x` also "imports" the package. Only cycles among the layer
    # modules themselves count.
    return [c for c in ([m for m in c if m != "luigiflow"] for c in cycles) if len(c) > 1]


def test_tag_names_are_defined_only_in_the_schema_module():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "schema.py" and '"luigiflow.' in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_no_dynamic_imports_of_luigiflow_modules():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if 'import_module("luigiflow' in path.read_text(encoding="utf-8")
        or '__import__("luigiflow' in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
