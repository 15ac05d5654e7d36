"""Kernel IR -> module text (pipeline stage: print and render).

Input: a :class:`~symbolic.lower.Kernel` (or a cost) and a backend. Output: the text of
one generated module. Every expression is printed here by the backend's printer; the
Jinja templates in ``templates/`` receive strings only and hold layout, not logic.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import jinja2
import sympy as sp

from symbolic import __version__, naming, printing
from symbolic.derive import Assign, MatVec, derive, derive_cost
from symbolic.lower import Kernel, lower
from symbolic.model import COST, RECURRENT, Cell, Cost

BACKENDS = ("numpy", "numba")


def templates_dir() -> Path:
    """Where the templates are: the repository's ``templates/`` or the installed copy."""
    repo = Path(__file__).resolve().parent.parent / "templates"
    if repo.is_dir():
        return repo
    return Path(str(importlib.resources.files("symbolic") / "templates"))


def environment() -> jinja2.Environment:
    """The Jinja environment: strict (a missing key is an error), no stray whitespace."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


@dataclass(frozen=True)
class Module:
    """One generated module: its file name and text."""

    filename: str
    text: str


def spec_label(path: Path) -> str:
    """The spec's path as the banner shows it (relative to the package, never absolute)."""
    path = Path(path)
    package = Path(__file__).resolve().parent
    try:
        return str(path.resolve().relative_to(package.parent)).replace("\\", "/")
    except ValueError:
        return path.name


def _stmt(stmt, backend: str, names: dict[str, str] | None = None) -> dict:
    if isinstance(stmt, MatVec):
        return {
            "matvec": True,
            "target": stmt.target,
            "matrix": stmt.matrix,
            "arg": stmt.arg,
            "transpose": stmt.transpose,
            "comment": stmt.comment,
            "code": "",
        }
    return {
        "matvec": False,
        "target": stmt.target,
        "code": printing.code(stmt.expr, backend, names),
        "comment": stmt.comment,
    }


def _names(stmt) -> set[str]:
    if isinstance(stmt, MatVec):
        return {stmt.arg, stmt.matrix}
    return {s.name for s in stmt.expr.free_symbols}


def cell_context(kernel: Kernel, backend: str) -> dict:
    """The template keys of a cell module: names and printed code, nothing else."""
    cell: Cell = kernel.cell
    # Whole-sequence buffers are read after a recurrent cell's time loop.
    if cell.kind == RECURRENT:
        seq = {name: naming.sequence(name) for name in kernel.cached + kernel.stored}
    else:
        seq = {name: name for name in kernel.cached + kernel.stored}
    seq[cell.input] = "_x"
    shapes = {"in": "n_in", "out": "n_out"}
    params = []
    for name, kind in cell.params.items():
        if kind == "matrix":
            rows, cols = cell.matrix_shape(name)
            shape = f"({shapes[rows]}, {shapes[cols]})"
            fan_in = shapes[cols]
        else:
            shape, fan_in = "(n_out,)", "n_out"
        params.append({"name": name, "kind": kind, "shape": shape, "fan_in": fan_in})
    grads = []
    vector = dict(kernel.vector_grads)
    matrix = dict(kernel.matrix_grads)
    for name, kind in cell.params.items():
        if kind == "vector":
            grads.append(
                {
                    "param": name,
                    "kind": kind,
                    "code": printing.code(vector[name], backend, seq),
                    "terms": [],
                }
            )
        else:
            terms = [
                {"adjoint": seq[adj], "arg": seq[arg], "arg_size": "_n_in" if arg == cell.input else "_n_out"}
                for adj, arg in matrix[name]
            ]
            grads.append({"param": name, "kind": kind, "code": "", "terms": terms})
    stores = sorted(set(kernel.cached) | {cell.output})
    read_back = {n for s in kernel.backward for n in _names(s)}
    read_back |= {m for _, m in kernel.input_grads}
    return {
        "name": cell.name,
        "title": cell.title,
        "kind": cell.kind,
        "recurrence": kernel.recurrence,
        "spec_file": spec_label(cell.path),
        "spec_sha256": cell.sha256,
        "version": __version__,
        "input": cell.input,
        "output": cell.output,
        "upstream": naming.upstream(cell.output),
        "output_adjoint": naming.adjoint(cell.output),
        "params": params,
        "backward_params": [p["name"] for p in params if p["name"] in read_back],
        "states": [
            {
                "name": state,
                "target": target,
                "adjoint": naming.adjoint(state),
                "carried": naming.carried(state),
            }
            for state, target in cell.states.items()
        ],
        "equations": [
            {"name": eq.name, "source": eq.source}
            for eq in cell.equations
            if not eq.lifted
        ],
        "pre": [_stmt(s, backend) for s in kernel.pre],
        "forward": [_stmt(s, backend) for s in kernel.forward],
        "cached": kernel.cached,
        "stores": stores,
        "backward": [_stmt(s, backend) for s in kernel.backward],
        "stored": kernel.stored,
        "grads": grads,
        "input_grads": [{"adjoint": seq[adj], "matrix": m} for adj, m in kernel.input_grads],
    }


def cost_context(cost: Cost, backend: str) -> dict:
    """The template keys of a cost module."""
    derived = derive_cost(cost)
    return {
        "name": cost.name,
        "title": cost.title,
        "kind": COST,
        "spec_file": spec_label(cost.path),
        "spec_sha256": cost.sha256,
        "version": __version__,
        "prediction": cost.prediction,
        "target": cost.target,
        "per_unit_source": cost.source,
        "per_unit": printing.code(derived.per_unit, "numpy"),
        "gradient": printing.code(derived.gradient, "numpy"),
        "gradient_source": sp.sstr(derived.gradient),
    }


def render(model: Cell | Cost, backend: str) -> Module:
    """The generated module of ``model`` for ``backend``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    env = environment()
    if isinstance(model, Cost):
        context = cost_context(model, backend)
        template = env.get_template(f"{backend}_cost.py.j2")
    else:
        kernel = lower(derive(model))
        context = cell_context(kernel, backend)
        template = env.get_template(f"{backend}_{model.kind}.py.j2")
    return Module(f"{model.name}_{backend}.py", template.render(**context))


__all__ = ["BACKENDS", "Module", "render", "Assign"]
