"""The NumPy backend's layout: whole-array code, planned by :mod:`.plan`.

Input: a :class:`~symbolic.ir.Kernel` and the keys every module shares
(:func:`symbolic.render.shared_keys`). Output: the template to render and its keys.
"""

from __future__ import annotations

import sympy as sp

from symbolic import naming
from symbolic.backends.base import statement
from symbolic.backends.numpy import plan, printer
from symbolic.backends.numpy.nodes import Apply, Raw, Sym
from symbolic.backends.numpy.printer import code
from symbolic.ir import CostDerivation, Kernel, names
from symbolic.model import RECURRENT, Cell


def cell(kernel: Kernel, keys: dict) -> tuple[str, dict]:
    """The template and the layout keys of a cell module."""
    if kernel.cell.kind != RECURRENT:
        return "feedforward.py.j2", plan.feedforward_context(kernel) | {
            "scan": scan_context(kernel)
        }
    extra = plan.recurrent_context(kernel)
    extra["block_bytes"] = plan.BLOCK_BYTES
    extra["scan"] = scan_context(kernel)
    return "recurrent.py.j2", extra


def cost(derivation: CostDerivation, keys: dict) -> tuple[str, dict]:
    """The template and the layout keys of a cost module."""
    return "cost.py.j2", plan.cost_context(
        derivation.per_unit, derivation.gradient, derivation.cost.prediction
    )


def scan_context(kernel: Kernel) -> dict | None:
    """The parallel-scan functions of an affine recurrence: every statement runs on
    whole (T, B, n) arrays named like its symbols."""
    scan = kernel.scan
    if scan is None:
        return None
    cell = kernel.cell
    bare = {cell.input: "_x"}
    grads = []
    vector = dict(kernel.vector_grads)
    matrix = dict(kernel.matrix_grads)
    for name, kind in cell.params.items():
        if kind == "vector":
            grads.append(
                {
                    "param": name,
                    "kind": kind,
                    "code": code(vector[name], bare),
                    "zero": vector[name] == 0,
                    "terms": [],
                }
            )
        else:
            terms = [
                {
                    "adjoint": bare.get(adj, adj),
                    "arg": bare.get(arg, arg),
                    "arg_size": "_n_in" if arg == cell.input else "_n_out",
                }
                for adj, arg in matrix[name]
            ]
            grads.append({"param": name, "kind": kind, "code": "", "terms": terms})
    return {
        "state": scan.state,
        "state_adjoint": naming.adjoint(scan.state),
        "seed": naming.adjoint(cell.output),
        "coeff": code(scan.coeff),
        "offset": code(scan.offset),
        "coeff_source": sp.sstr(scan.coeff),
        "offset_source": sp.sstr(scan.offset),
        "before": [_whole(s, cell, "(_T, _B, _n_out)") for s in scan.before],
        "after": [_whole(s, cell, "(_T, _B, _n_out)") for s in scan.after],
        "backward": [_whole(s, cell, "_dout.shape") for s in scan.backward],
        "grads": grads,
        "input_grads": [{"adjoint": adj, "matrix": m} for adj, m in kernel.input_grads],
    }


def _whole(stmt, cell: Cell, shape: str) -> dict:
    """A statement on whole (T, B, n) arrays: a value with no lane axis (a constant, a
    parameter) is broadcast to the shape."""
    out = statement(stmt, code)
    if not names(stmt.expr) - set(cell.params):
        full = Apply("np.full", (Raw(shape), Sym(stmt.expr), Raw("_dtype")))
        out["code"] = printer.expression(full)
    return out
