"""Model -> forward and adjoint programs (pipeline stage 2, ``derivation``: reverse mode).

Input: a checked :class:`~symbolic.model.Cell` (or :class:`~symbolic.model.Cost`).
Output: a :class:`Derivation`: the forward program of one step, the adjoint program of
one step (reverse order, one adjoint variable per intermediate), and the parameter and
input gradients as reductions over every lane and time step.

SymPy computes each local partial (``diff`` of one equation by one of its symbols); the
engine accumulates adjoints in reverse order, as autodiff does. Local partials are
written with cached forward values: the call ``sigmoid(Zu)`` in ``diff`` output becomes
the symbol ``G`` that holds it, so sigmoid' is emitted as ``G*(1 - G)``.

Naming (the paper's notation): the adjoint of ``Zu`` is ``dZu``; the upstream gradient
of the output is ``d<output>_in``; the adjoint of a state flowing in from step t+1 is
``d<state>_next``; temporaries are ``_t0, _t1, ...``.
"""

from __future__ import annotations

import sympy as sp

from symbolic import naming, primitives
from symbolic.ir import PRE, STEP, Assign, CostDerivation, Derivation, MatVec, ParamGrad
from symbolic.model import Cell, Cost, Equation

adjoint_name = naming.adjoint


def lift_primitives(cell: Cell) -> list[Equation]:
    """Give every nested primitive call its own intermediate, so its derivative can be
    written with its cached output (``tanh(c)`` inside ``o*tanh(c)`` becomes ``_t0``)."""
    taken = {eq.name for eq in cell.equations}
    counter = 0
    while naming.temporary(counter) in taken:
        counter += 1
    out: list[Equation] = []
    for eq in cell.equations:
        expr = primitives.stabilize(eq.expr)
        while True:
            calls = [
                c
                for c in sp.preorder_traversal(expr)
                if primitives.is_primitive_call(c) and c is not expr and c != expr
            ]
            # innermost first: a call none of whose arguments holds another call
            inner = [
                c
                for c in calls
                if not any(
                    primitives.is_primitive_call(a) for a in sp.preorder_traversal(c.args[0])
                )
            ]
            if not inner:
                break
            call = sorted(inner, key=sp.default_sort_key)[0]
            name = naming.temporary(counter)
            counter += 1
            while naming.temporary(counter) in taken:
                counter += 1
            out.append(Equation(name, call, eq.line, str(call), lifted=True))
            expr = expr.xreplace({call: sp.Symbol(name)})
        out.append(Equation(eq.name, expr, eq.line, eq.source, eq.lifted))
    return out


def forward_values(equations: list[Equation]) -> dict[sp.Expr, sp.Symbol]:
    """Primitive call -> the symbol caching it (for writing derivatives with outputs)."""
    return {
        eq.expr: sp.Symbol(eq.name) for eq in equations if primitives.is_primitive_call(eq.expr)
    }


def local_partial(expr: sp.Expr, wrt: sp.Symbol, cached: dict) -> sp.Expr:
    """``d expr / d wrt`` with every primitive call replaced by its cached value."""
    return sp.diff(expr, wrt).xreplace(cached)


def derive(cell: Cell) -> Derivation:
    """Reverse-mode derivation of one cell's step.

    Args:
        cell: A feedforward or recurrent cell.

    Returns:
        The forward and adjoint programs.
    """
    equations = lift_primitives(cell)
    cached = forward_values(equations)
    proj_by_arg: dict[str, list] = {}
    for proj in cell.projections:
        proj_by_arg.setdefault(proj.arg, []).append(proj)

    # Forward: input projections before the loop, the rest in order, each projection
    # right after the vector it multiplies.
    forward: list[tuple[str, Assign | MatVec]] = []

    def emit_projections(arg: str, where: str) -> None:
        for proj in proj_by_arg.get(arg, []):
            forward.append(
                (
                    where,
                    MatVec(
                        proj.name,
                        proj.matrix,
                        arg,
                        False,
                        f"{proj.name} = sum_j {proj.matrix}_ij {arg}_j",
                    ),
                )
            )

    emit_projections(cell.input, PRE)
    for state in cell.states:
        emit_projections(state, STEP)
    for eq in equations:
        forward.append((STEP, Assign(eq.name, eq.expr, f"{eq.name} = {eq.source}")))
        emit_projections(eq.name, STEP)

    # Reverse: contributions to each symbol's adjoint, accumulated in reverse order.
    contributions: dict[str, list[sp.Expr]] = {}
    seeds: dict[str, list[str]] = {}

    def add(symbol: str, term: sp.Expr) -> None:
        contributions.setdefault(symbol, []).append(term)

    out_seed = naming.upstream(cell.output)
    add(cell.output, sp.Symbol(out_seed))
    seeds.setdefault(adjoint_name(cell.output), []).append(out_seed)
    for state, target in cell.states.items():
        carried = naming.carried(state)
        add(target, sp.Symbol(carried))
        seeds.setdefault(adjoint_name(target), []).append(carried)

    params = set(cell.params)
    vector_grads: dict[str, list[sp.Expr]] = {p: [] for p in cell.params}
    backward: list[Assign | MatVec] = []

    for where, stmt in reversed(forward):
        if isinstance(stmt, MatVec):
            if where == PRE:
                continue
            terms = contributions.get(stmt.target)
            if not terms:
                # nothing depends on the product (step' = 0): its adjoint is zero, and
                # the matrix's gradient reads it
                backward.append(
                    Assign(adjoint_name(stmt.target), sp.S.Zero, f"adjoint of {stmt.comment}")
                )
                continue
            backward.append(
                Assign(adjoint_name(stmt.target), sp.Add(*terms), f"adjoint of {stmt.comment}")
            )
            temp = naming.matvec_adjoint(stmt.arg, stmt.matrix)
            backward.append(
                MatVec(
                    temp,
                    stmt.matrix,
                    adjoint_name(stmt.target),
                    True,
                    f"sum_i {stmt.matrix}_ij d{stmt.target}_i: the path of {stmt.arg} through {stmt.matrix}",
                )
            )
            add(stmt.arg, sp.Symbol(temp))
            continue
        eq_name, expr = stmt.target, stmt.expr
        terms = contributions.get(eq_name)
        if not terms:
            continue
        d_eq = sp.Symbol(adjoint_name(eq_name))
        backward.append(Assign(d_eq.name, sp.Add(*terms), f"adjoint of {stmt.comment}"))
        for sym in sorted(expr.free_symbols, key=lambda s: s.name):
            partial = local_partial(expr, sym, cached)
            if partial == 0:
                continue
            term = d_eq * partial
            if sym.name in params:
                vector_grads[sym.name].append(term)
            else:
                add(sym.name, term)

    # Projections of the input are summed after the loop: their adjoints are complete.
    for proj in proj_by_arg.get(cell.input, []):
        terms = contributions.get(proj.name, [])
        backward.append(
            Assign(
                adjoint_name(proj.name),
                sp.Add(*terms),
                f"adjoint of {proj.name} = {proj.matrix}@{cell.input}",
            )
        )

    state_adjoints: dict[str, str] = {}
    for state in cell.states:
        terms = contributions.get(state, [])
        name = adjoint_name(state)
        backward.append(
            Assign(name, sp.Add(*terms), f"adjoint of {state}: flows to the step before")
        )
        state_adjoints[state] = name

    param_grads: list[ParamGrad] = []
    for param, kind in cell.params.items():
        if kind == "vector":
            expr = sp.Add(*vector_grads[param])
            param_grads.append(ParamGrad(param, kind, expr, None, f"gradient of {param}"))
        else:
            projs = [p for p in cell.projections if p.matrix == param]
            for proj in projs:
                param_grads.append(
                    ParamGrad(
                        param,
                        kind,
                        sp.Symbol(adjoint_name(proj.name)),
                        proj.arg,
                        f"gradient of {param}: sum over lanes of d{proj.name}_i {proj.arg}_j",
                    )
                )
    input_grads = [
        MatVec(
            naming.matvec_adjoint(cell.input, proj.matrix),
            proj.matrix,
            adjoint_name(proj.name),
            True,
            f"sum_i {proj.matrix}_ij d{proj.name}_i",
        )
        for proj in proj_by_arg.get(cell.input, [])
    ]
    return Derivation(
        cell, equations, forward, backward, param_grads, input_grads, state_adjoints, seeds
    )


def derive_cost(cost: Cost) -> CostDerivation:
    """d per_unit / d prediction, the cost's only derivative."""
    pred = sp.Symbol(cost.prediction)
    per_unit = primitives.stabilize(cost.per_unit)
    return CostDerivation(cost, per_unit, sp.diff(per_unit, pred))
