"""The package's shape: no module of ``symbolic.bench`` imports, directly or through
others, one that imports it back, and a child process loads none of the compiler."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import symbolic.bench

PACKAGE = Path(symbolic.bench.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imports(module: str) -> set[str]:
    """The modules of the package that ``module`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "symbolic.bench":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("symbolic.bench."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(
                a.name.split(".")[2] for a in node.names if a.name.startswith("symbolic.bench.")
            )
    return found


def test_no_import_cycle_inside_the_package():
    graph = {module: _imports(module) for module in MODULES}
    assert graph["workloads"] == set() and "steps" in graph["runner"]
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, " -> ".join([*path, module])
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*path, module])
        done.add(module)

    for module in MODULES:
        visit(module, [])
    assert done == set(MODULES)


def test_a_child_process_loads_none_of_the_compiler():
    heavy = ("sympy", "jinja2", "symbolic.render", "symbolic.bench.measure", "torch", "jax")
    code = (
        "import sys, symbolic.bench.runner, symbolic.bench.competitors\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
