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

from symbolic import __version__, naming, primitives, printing
from symbolic.derive import Assign, MatVec, derive, derive_cost
from symbolic.lower import AFFINE, DIAGONAL, NONE, Kernel, lower
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
    """The template keys of a cell module: names and printed code, nothing else.

    Each vector symbol has a per-lane scalar (or, in NumPy, per-step array) named as in
    the spec, and a buffer holding it for every lane (and step): ``array``.
    """
    cell: Cell = kernel.cell
    recurrent = cell.kind == RECURRENT
    names = set(kernel.cached) | set(kernel.stored) | {cell.output}
    names |= {s.target for s in kernel.pre}
    if recurrent:
        arrays = {name: naming.sequence(name) for name in names}
    elif backend == "numba":
        arrays = {name: naming.buffer(name) for name in names}
    else:  # NumPy feedforward code works on whole arrays named like the symbols
        arrays = {name: name for name in names}
    arrays[cell.input] = "_x"

    def entry(name: str) -> dict:
        return {"name": name, "array": arrays[name]}

    shapes = {"in": "n_in", "out": "n_out"}
    params = []
    for name, kind in cell.params.items():
        if kind == "matrix":
            rows, cols = cell.matrix_shape(name)
            shape = f"({shapes[rows]}, {shapes[cols]})"
            fan_in = shapes[cols]
        else:
            shape, fan_in = "(n_out,)", "n_out"
        params.append(
            {
                "name": name,
                "kind": kind,
                "shape": shape,
                "fan_in": fan_in,
                "array": naming.param_array(name),
            }
        )
    vector = dict(kernel.vector_grads)
    matrix = dict(kernel.matrix_grads)
    grads = []
    for name, kind in cell.params.items():
        if kind == "vector":
            grads.append(
                {
                    "param": name,
                    "kind": kind,
                    "code": printing.code(
                        vector[name], backend if backend == "numpy" else "numpy", arrays
                    ),
                    "local": printing.code(vector[name], backend),
                    "array": naming.grad_array(name),
                    "terms": [],
                }
            )
        else:
            terms = [
                {
                    "adjoint": arrays[adj],
                    "arg": arrays[arg],
                    "arg_size": "_n_in" if arg == cell.input else "_n_out",
                }
                for adj, arg in matrix[name]
            ]
            grads.append(
                {"param": name, "kind": kind, "code": "", "local": "", "array": "", "terms": terms}
            )
    read_back = {n for s in kernel.backward for n in _names(s)}
    read_back |= {m for _, m in kernel.input_grads}
    vector_params = [p for p in params if p["kind"] == "vector"]
    forward = [_stmt(s, backend) for s in kernel.forward]
    backward = [_stmt(s, backend) for s in kernel.backward]
    printed = [s["code"] for s in forward + backward] + [g["local"] for g in grads]
    used = set()
    for stmt in kernel.forward + kernel.backward:
        if isinstance(stmt, Assign):
            used |= primitives.used(stmt.expr)
    for _, expr in kernel.vector_grads:
        used |= primitives.used(expr)
    helpers = [primitives.PRIMITIVES[n].numba_helper.strip() for n in sorted(used)]
    helpers = [h for h in helpers if h] if backend == "numba" else []
    return {
        "helpers": helpers,
        "uses_math": any("math." in text for text in printed + helpers),
        "name": cell.name,
        "title": cell.title,
        "kind": cell.kind,
        "recurrence": kernel.recurrence,
        "spec_file": spec_label(cell.path),
        "spec_sha256": cell.sha256,
        "version": __version__,
        "input": cell.input,
        "output": cell.output,
        "output_array": arrays[cell.output],
        "upstream": naming.upstream(cell.output),
        "params": params,
        "backward_params": [p["name"] for p in params if p["name"] in read_back],
        "vector_params": vector_params,
        "backward_vector_params": [p for p in vector_params if p["name"] in read_back],
        "states": [
            {
                "name": state,
                "target": target,
                "adjoint": naming.adjoint(state),
                "carried": naming.carried(state),
                "array": naming.state_array(state),
                "carried_array": naming.state_array(naming.carried(state)),
            }
            for state, target in cell.states.items()
        ],
        "equations": [
            {"name": eq.name, "source": eq.source} for eq in cell.equations if not eq.lifted
        ],
        "pre": [dict(_stmt(s, backend), array=arrays[s.target]) for s in kernel.pre],
        "forward": forward,
        "cached": [entry(n) for n in kernel.cached],
        "stores": [entry(n) for n in sorted(set(kernel.cached) | {cell.output})],
        "backward": backward,
        "stored": [entry(n) for n in kernel.stored],
        "grads": grads,
        "input_grads": [{"adjoint": arrays[adj], "matrix": m} for adj, m in kernel.input_grads],
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
        if backend == "numba" and kernel.recurrence not in (DIAGONAL, AFFINE, NONE):
            raise NotImplementedError(
                f"{model.path}: the numba backend does not support a {kernel.recurrence} "
                "recurrence yet (a matrix product inside the time loop); use --backend numpy"
            )
        context = cell_context(kernel, backend)
        template = env.get_template(f"{backend}_{model.kind}.py.j2")
    return Module(f"{model.name}_{backend}.py", template.render(**context))


__all__ = ["BACKENDS", "Module", "render", "Assign"]
