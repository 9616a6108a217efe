"""ARCHITECTURE.md's layering, enforced: imports flow downward, and no package cycles.

Every module of every product package is parsed (not imported) and each ``import`` of one of
our packages is checked against the layer table. Imports inside functions count too: a lazy
import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Top to bottom, as in ARCHITECTURE.md; a package may import only the ones below it.
LAYERS = [
    "serving",
    "experiments",
    "candidate_gen",
    "training",
    "features",
    "models",
    "platform_services",
    "core",
]
ALLOWED = {p: set(LAYERS[i + 1 :]) for i, p in enumerate(LAYERS)}
ALLOWED["models"] = {"core"}  # PyTorch modules only: no I/O, no storage, no config reading


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every absolute import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import of one of our packages."""
    return [(n, m.split(".")[0]) for n, m in imported_modules(path) if m.split(".")[0] in LAYERS]


def package_graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> ``file:line`` of each such import."""
    graph: dict[str, dict[str, list[str]]] = {p: {} for p in LAYERS}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, target in imports_of(path):
                if target != package:
                    where = f"{path.relative_to(ROOT)}:{line}"
                    graph[package].setdefault(target, []).append(where)
    return graph


def test_every_package_exists() -> None:
    assert all((ROOT / p / "__init__.py").is_file() for p in LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_imports_flow_downward(package: str) -> None:
    upward = {
        target: sites
        for target, sites in package_graph()[package].items()
        if target not in ALLOWED[package]
    }
    assert not upward, f"{package} imports packages above it or beside it: {upward}"


def test_no_cycle_between_packages() -> None:
    graph = {p: set(targets) for p, targets in package_graph().items()}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                pytest.fail(f"import cycle: {' -> '.join([*path, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = "done"

    for package in LAYERS:
        if package not in state:
            visit(package, [])


def test_the_product_never_imports_benchmarks_or_tests() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in LAYERS
        for path in (ROOT / package).rglob("*.py")
        for line, module in imported_modules(path)
        if module.split(".")[0] in ("benchmarks", "tests")
    ]
    assert not offenders, f"product code imports benchmarks or tests: {offenders}"
