"""The JAX backend's layout: whole-array ``jax.numpy`` code, recurrences in ``lax.scan``.

Input: a :class:`~symbolic.ir.Kernel` (or a cost's derivation) and the keys every module
shares (:func:`symbolic.render.cell_context`). Output: the template to render and its
keys, every expression already printed by :mod:`.printer`.

- the input projections of every step are one matrix product (the matrices stacked)
  before the scan;
- a recurrent cell's forward step is the body of a ``lax.scan`` whose carry is the states
  and whose outputs are the values the backward reads; the backward step is the body of a
  reverse scan whose carry is the states' adjoints and whose outputs are the adjoints the
  gradients read;
- after the backward scan, a vector's gradient is one sum, a matrix's one product over
  every step and lane, the input's gradient one product (the adjoints side by side).

Names: a value of one step is the symbol's name; the same value for every step, a
``(T, B, n)`` array, is :func:`symbolic.naming.sequence` of it (``G_seq``); the input is
``_x``. Every other name the code makes starts with an underscore, which no spec name
does.
"""

from __future__ import annotations

import sympy as sp

from symbolic import ir, naming, primitives, reductions
from symbolic.backends.base import lane_shaped, refuse_sized_broadcasts
from symbolic.backends.jax.primitives import helpers
from symbolic.backends.jax.printer import code
from symbolic.ir import Assign, CostDerivation, Kernel, MatVec
from symbolic.model import RECURRENT, Cell

#: The shape of one step's values, and of every step's.
STEP_SHAPE = "(_B, _n_out)"
SEQUENCE_SHAPE = "(_T, _B, _n_out)"


def cell(kernel: Kernel, keys: dict) -> tuple[str, dict]:
    """The template and the layout keys of a cell module."""
    common = {
        "jax_helpers": _kernel_helpers(kernel),
        "uses_lax": kernel.cell.kind == RECURRENT,
    } | bound_params(kernel)
    if kernel.cell.kind != RECURRENT:
        refuse_sized_broadcasts(kernel, "jax")
        return "feedforward.py.j2", common | feedforward_context(kernel)
    return "recurrent.py.j2", common | recurrent_context(kernel)


def bound_params(kernel: Kernel) -> dict:
    """The parameters each pass reads, in spec order (the others are not bound)."""
    params = kernel.cell.params
    forward = ir.reads_all(kernel.pre + kernel.forward)
    forward |= {s.matrix for s in kernel.pre + kernel.forward if isinstance(s, MatVec)}
    backward = {n for s in kernel.backward for n in ir.reads(s, matrices=True)}
    backward |= {n for _, e in kernel.vector_grads for n in ir.names(e)}
    backward |= {m for _, m in kernel.input_grads}
    return {
        "forward_bound": [p for p in params if p in forward],
        "backward_bound": [p for p in params if p in backward],
    }


def cost(derivation: CostDerivation, keys: dict) -> tuple[str, dict]:
    """The template and the layout keys of a cost module."""
    return "cost.py.j2", {
        "per_unit_code": code(derivation.per_unit),
        "gradient_code": code(derivation.gradient),
        "jax_helpers": _helpers(derivation.per_unit, derivation.gradient),
        "uses_lax": True,
    }


# --- statements ---------------------------------------------------------------------------


def line(
    stmt: Assign | MatVec, names: dict[str, str] | None = None, lanes: set[str] | None = None
) -> dict:
    """One statement as code: ``{"code": "target = ...", "comment": ...}``. A product of
    a value outside ``lanes`` (a constant intermediate is a number) reads it as a vector
    of the matrix's dtype."""
    names = names or {}
    if isinstance(stmt, MatVec):
        arg = names.get(stmt.arg, stmt.arg)
        if lanes is not None and stmt.arg not in lanes:
            size = f"{stmt.matrix}.shape[{0 if stmt.transpose else 1}]"
            arg = f"_jnp.full({size}, {arg}, {stmt.matrix}.dtype)"
        matrix = stmt.matrix if stmt.transpose else f"{stmt.matrix}.T"
        text = f"{stmt.target} = {arg} @ {matrix}"
    else:
        text = f"{stmt.target} = {code(stmt.expr, names)}"
    return {"code": text, "comment": stmt.comment}


def fused_lines(stmts, lanes: set[str] | None = None) -> tuple[list[dict], list[str]]:
    """The statements of a step as code, each run of products of one argument (an LSTM's
    ``U@h`` of its four gates) one product with the matrices stacked, then split: the
    lines, and the stacked matrices' definitions (made once, before the loop)."""
    lines: list[dict] = []
    stacked: list[str] = []
    run: list[MatVec] = []

    def close() -> None:
        if len(run) == 1:
            lines.append(line(run[0], lanes=lanes))
        elif run:
            matrix = naming.temporary(len(stacked), "_stacked")
            parts = naming.temporary(len(stacked), "_products")
            stacked.append(f"{matrix} = _jnp.concatenate([{', '.join(m.matrix for m in run)}]).T")
            lines.append(
                {
                    "code": f"{parts} = _jnp.split({run[0].arg} @ {matrix}, {len(run)}, axis=-1)",
                    "comment": f"every product of {run[0].arg} at once (the matrices stacked)",
                }
            )
            lines.extend(
                {"code": f"{m.target} = {parts}[{i}]", "comment": m.comment}
                for i, m in enumerate(run)
            )
        run.clear()

    for stmt in stmts:
        fusable = isinstance(stmt, MatVec) and not stmt.transpose
        fusable = fusable and (lanes is None or stmt.arg in lanes)
        if not fusable or (run and stmt.arg != run[0].arg):
            close()
        if fusable:
            run.append(stmt)
        else:
            lines.append(line(stmt, lanes=lanes))
    close()
    return lines, stacked


def _helpers(*exprs: sp.Expr) -> list[str]:
    """The helper functions the primitives called in ``exprs`` need."""
    used: set[str] = set()
    for expr in exprs:
        used |= primitives.used(expr) | reductions.used(expr)
    return helpers(used)


def _kernel_helpers(kernel: Kernel) -> list[str]:
    exprs = [s.expr for s in kernel.forward + kernel.backward if isinstance(s, Assign)]
    return _helpers(*exprs, *(e for _, e in kernel.vector_grads))


def projections(kernel: Kernel, whole) -> dict:
    """The input projections as one product: ``stacked`` (the matrices, in order) and
    each target's array (``whole(name)``)."""
    return {
        "stacked": [s.matrix for s in kernel.pre],
        "targets": [whole(s.target) for s in kernel.pre],
        "comments": [s.comment for s in kernel.pre],
    }


def gradients(kernel: Kernel, whole, shape: str, axes: str) -> dict:
    """The parameters' gradients after the loop, and the input's: ``whole(name)`` is the
    array of a value over every lane (and step)."""
    cell = kernel.cell
    names = {n: whole(n) for n in kernel.stored + kernel.cached}
    names[cell.input] = "_x"
    vector = dict(kernel.vector_grads)
    matrix = dict(kernel.matrix_grads)
    # an adjoint the derivation made a number (a product under sign or step) is a Python
    # number: broadcast over the lanes, as wide as its matrix has rows
    constant = {
        st.target for st in kernel.backward if isinstance(st, Assign) and not ir.names(st.expr)
    }

    def lane_wide(adj: str, array: str, param: str) -> str:
        if adj not in constant:
            return array
        return f"_lanes({array}, {shape.replace('_n_out', f'params[{param!r}].shape[0]')}, _dtype)"

    lines = []
    for param, kind in cell.params.items():
        if kind == "vector":
            # every cached and stored array covers every lane; a gradient made of
            # parameters and numbers only is a sum of equal terms
            expr = code(vector[param], names)
            if not ir.names(vector[param]) & set(names):
                expr = f"_lanes({expr}, {shape}, _dtype)"
            text = f"_jnp.sum({expr}, axis={axes})"
        else:
            text = " + ".join(
                f"_outer_sum({lane_wide(adj, names.get(adj, adj), param)}, {names.get(arg, arg)})"
                for adj, arg in matrix[param]
            )
        lines.append({"param": param, "code": text})
    adjoints = [lane_wide(adj, whole(adj), m) for adj, m in kernel.input_grads]
    matrices = [m for _, m in kernel.input_grads]
    if not adjoints:
        dx = "_jnp.zeros_like(_x)"
    elif len(adjoints) == 1:
        dx = f"{adjoints[0]} @ {matrices[0]}"
    else:  # one product: the adjoints side by side times the matrices stacked
        dx = (
            f"_jnp.concatenate([{', '.join(adjoints)}], axis=-1)"
            f" @ _jnp.concatenate([{', '.join(matrices)}])"
        )
    if kernel.input_adjoint is not None:  # an elementwise input's own adjoint
        lane = whole(kernel.input_adjoint)
        dx = f"{dx} + {lane}" if adjoints else lane
    return {"gradient_lines": lines, "dx_code": dx}


def lane_values(stmts, lanes) -> set[str]:
    """The names whose values vary over the lanes: ``lanes`` and every target of
    ``stmts`` computed from one (the others are made of parameters and numbers only)."""
    out = set(lanes)
    for stmt in stmts:
        if ir.reads(stmt) & out:
            out.add(stmt.target)
    return out


def _value(name: str, stmts, lanes: set[str], shape: str) -> str:
    """The code of ``name`` over every lane of a step: as it is, broadcast (a value of
    parameters only), or zeros (no statement defines it: an adjoint that is zero)."""
    if name in lanes:
        return name
    if name in ir.targets(stmts):
        return f"_lanes({name}, {shape}, _dtype)"
    return f"_jnp.zeros({shape}, _dtype)"


# --- feedforward ----------------------------------------------------------------------------


def feedforward_context(kernel: Kernel) -> dict:
    """A layer: whole (B, n) arrays named like the symbols, no loop."""
    cell = kernel.cell
    pre_targets = [s.target for s in kernel.pre]
    lanes = lane_values(kernel.forward, [*pre_targets, cell.input])
    return {
        "projections": projections(kernel, lambda n: n),
        # the input's name where a pass reads it as a symbol ("" where it does not)
        "forward_input": cell.input if cell.input in ir.reads_all(kernel.forward) else "",
        "backward_input": cell.input if cell.input in ir.reads_all(kernel.backward) else "",
        "ff_forward": [line(s, lanes=lane_shaped(kernel)) for s in kernel.forward],
        "output_code": _value(cell.output, kernel.forward, lanes, STEP_SHAPE),
        # what backward reads, over every lane (a value of parameters only broadcast)
        "ff_cached": [
            {"name": n, "code": _value(n, kernel.forward, lanes, STEP_SHAPE)}
            for n in kernel.cached
            if n != cell.input
        ],
        "ff_backward": [line(s, lanes=lane_shaped(kernel)) for s in kernel.backward],
        "upstream": naming.upstream(cell.output),
        **gradients(kernel, lambda n: "_x" if n == cell.input else n, STEP_SHAPE, "0"),
    }


# --- recurrent ------------------------------------------------------------------------------


def recurrent_context(kernel: Kernel) -> dict:
    """A recurrence: the forward and backward steps as the bodies of two scans."""
    cell = kernel.cell
    return (
        forward_scan(kernel)
        | backward_scan(kernel)
        | gradients(kernel, lambda n: _sequence(cell, n), SEQUENCE_SHAPE, "(0, 1)")
    )


def _sequence(cell: Cell, name: str) -> str:
    return "_x" if name == cell.input else naming.sequence(name)


def _derived_states(kernel: Kernel) -> list[str]:
    """The cached states whose every value is known from the output: the previous
    step's output (or the first state), so the scan need not emit them."""
    cell = kernel.cell
    return [s for s in cell.states if s in kernel.cached and cell.states[s] == cell.output]


def forward_scan(kernel: Kernel) -> dict:
    """The forward scan: what each step reads (the states, the projections of the input),
    its statements, the states it carries on and what it emits."""
    cell = kernel.cell
    pre_targets = [s.target for s in kernel.pre]
    reads = ir.reads_all(kernel.forward) | set(cell.states.values()) | {cell.output}
    xs = [{"name": n, "array": naming.sequence(n)} for n in pre_targets if n in reads]
    if cell.input in reads:
        xs.append({"name": cell.input, "array": "_x"})
    lanes = lane_values(kernel.forward, [*cell.states, *(v["name"] for v in xs)])
    derived = _derived_states(kernel)
    emitted = [cell.output] + [
        n
        for n in kernel.cached
        if n not in pre_targets and n not in derived and n not in (cell.input, cell.output)
    ]

    def value(name: str) -> str:
        return _value(name, kernel.forward, lanes, STEP_SHAPE)

    step, stacked = fused_lines(kernel.forward, lane_shaped(kernel))

    return {
        "projections": projections(kernel, naming.sequence),
        "initial_states": [f'_state0["{s}"]' for s in cell.states],
        "forward_xs": xs,
        "forward_step": step,
        "stacked_matrices": stacked,
        "carry_out": [{"state": s, "code": value(t)} for s, t in cell.states.items()],
        "emitted": [{"name": n, "array": naming.sequence(n), "code": value(n)} for n in emitted],
        "derived_states": [{"name": s, "array": naming.sequence(s)} for s in derived],
        "output_sequence": naming.sequence(cell.output),
        "cache_entries": [
            {"name": n, "array": naming.sequence(n)} for n in kernel.cached if n != cell.input
        ],
    }


def backward_scan(kernel: Kernel) -> dict:
    """The backward scan (in reverse): what each step reads (the output's adjoint from
    above, the cached values), its statements, the states' adjoints it carries to the
    step before and the adjoints it emits for the gradients."""
    cell = kernel.cell
    upstream = naming.upstream(cell.output)
    carried = [naming.carried(s) for s in cell.states]
    reads = ir.reads_all(kernel.backward) | set(kernel.stored)
    xs = [{"name": upstream, "array": "_dout"}]
    xs += [{"name": n, "array": _sequence(cell, n)} for n in kernel.cached if n in reads]
    if cell.input in reads and cell.input not in kernel.cached:
        xs.append({"name": cell.input, "array": "_x"})
    lanes = lane_values(kernel.backward, [*carried, *(v["name"] for v in xs)])

    def value(name: str) -> str:
        return _value(name, kernel.backward, lanes, STEP_SHAPE)

    return {
        "upstream": upstream,
        "final_adjoints": [f'_dstate["{s}"]' for s in cell.states],
        "backward_xs": xs,
        "backward_step": [line(s, lanes=lane_shaped(kernel)) for s in kernel.backward],
        "carried": carried,
        "carry_back": [{"state": s, "code": value(naming.adjoint(s))} for s in cell.states],
        "stored_adjoints": [
            {"name": n, "array": naming.sequence(n), "code": value(n)} for n in kernel.stored
        ],
    }
