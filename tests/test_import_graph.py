"""The app package's import graph, read from the source with ``ast``: no circle, and Streamlit only where it belongs.

Every import counts, also those inside functions (a worker's late ``import`` once closed the
circle jobs -> worker -> jobs) and those only for type checking.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = "dsmooth_lab_ui"
FOLDER = Path(__file__).resolve().parents[1] / PACKAGE
# the job layer and the work it runs: usable without an app, and all that a worker process imports
STREAMLIT_FREE = ("scheduler", "pool", "worker", "tasks", "memo", "progress", "programs", "watchdog", "threads")


def _modules() -> dict[str, Path]:
    return {path.stem: path for path in FOLDER.glob("*.py") if path.stem != "__init__"}


def _imports(path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(this package's modules, other top-level packages) that ``path`` imports anywhere."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    ours.add(parts[1])
                others.add(parts[0])
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".")
            if node.level or parts[0] == PACKAGE:
                inside = parts[1:] if parts[0] == PACKAGE else [p for p in parts if p]
                if inside:
                    ours.add(inside[0])
                else:  # from dsmooth_lab_ui import a, b
                    ours.update(alias.name for alias in node.names if alias.name in known)
            else:
                others.add(parts[0])
    return ours & known, others


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    graph, external = {}, {}
    for name, path in modules.items():
        ours, others = _imports(path, set(modules))
        graph[name], external[name] = ours - {name}, others
    return graph, external


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen


def test_the_reader_sees_the_imports_it_should() -> None:
    graph, external = _graph()
    assert {"scheduler", "threads"} <= graph["jobs"] and "streamlit" in external["jobs"]
    assert "pool" in graph["scheduler"] and "worker" in graph["pool"] and "tasks" in graph["worker"]


def test_the_app_package_has_no_import_circle() -> None:
    graph, _ = _graph()
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None


def test_the_job_layer_and_its_work_never_import_streamlit() -> None:
    graph, external = _graph()
    for name in STREAMLIT_FREE:
        reached = _reach(graph, name)
        with_streamlit = sorted(m for m in reached if "streamlit" in external[m])
        assert not with_streamlit, f"{name} imports streamlit through {with_streamlit}"


def test_the_worker_and_the_work_never_import_the_scheduler_or_the_panel() -> None:
    graph, _ = _graph()
    for name in ("worker", "tasks"):
        assert not _reach(graph, name) & {"scheduler", "pool", "jobs"}, name


# ---------------------------------------------------------------- the whole project, module by module
PROJECT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("dsmooth_core", "dsmooth_lab_ui")


def _project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the library and the app layer (packages by their __init__)."""
    found = {}
    for package in PROJECT_PACKAGES:
        for path in (PROJECT / package).rglob("*.py"):
            parts = list(path.relative_to(PROJECT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Imports under ``if TYPE_CHECKING:`` never run, so they cannot close a circle."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def _runtime_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports when it runs: ``from a.b import c`` reaches a.b.c if it is a module."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_nodes(tree)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    reached = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            reached.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                reached.add(submodule if submodule in known else module)
    return (reached & known) - {name}


def test_the_project_has_no_import_circle() -> None:
    """Library and app layer together, each module a node: a circle anywhere fails, with its path."""
    modules = _project_modules()
    graph = {name: _runtime_imports(name, path, set(modules)) for name, path in modules.items()}
    assert "dsmooth_core.certify" in graph["dsmooth_core"] and "dsmooth_core.contract" in graph["dsmooth_core.certify"]
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None
