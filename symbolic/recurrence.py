"""Recurrence analysis: how a cell's steps depend on each other (run by stage 3, ``kernel``).

Input: a :class:`~symbolic.ir.Derivation` (or a lowered :class:`~symbolic.ir.Kernel`).
Output: data, never code: the recurrence class (:data:`~symbolic.ir.DIAGONAL`,
:data:`~symbolic.ir.COUPLED`, :data:`~symbolic.ir.AFFINE`, :data:`~symbolic.ir.NONE`), the
coefficients of an affine recurrence, and its parallel-scan form (:class:`~symbolic.ir.Scan`).
Backends read these and only emit.
"""

from __future__ import annotations

import sympy as sp

from symbolic import naming, reductions
from symbolic.ir import (
    AFFINE,
    COUPLED,
    DIAGONAL,
    NONE,
    STEP,
    Assign,
    Derivation,
    Kernel,
    MatVec,
    Scan,
)
from symbolic.model import RECURRENT

#: Nodes the affine analysis may expand a state's next value into (beyond that, the
#: recurrence is taken as diagonal: correct, without the parallel scan).
AFFINE_BUDGET = 400


def _size(expr: sp.Basic) -> int:
    """Nodes of an expression tree, counted without recursion (it may be deep)."""
    count, stack = 0, [expr]
    while stack and count <= AFFINE_BUDGET:
        node = stack.pop()
        count += 1
        stack.extend(node.args)
    return count


def classify(derivation: Derivation) -> tuple[str, dict]:
    """The recurrence class of a cell (Issue: recurrence analysis).

    diagonal: no product inside the time loop, so lanes (batch x neuron) are
    independent over time; matrix-coupled: a state (or something computed from one)
    is multiplied by a matrix each step, or the step reduces over the units. For every state whose next value is affine in
    the states with coefficients free of them (h_t = A_t*h_{t-1} + b_t), the
    coefficients are reported too.
    """
    cell = derivation.cell
    if cell.kind != RECURRENT:
        return NONE, {}
    in_loop = [s for where, s in derivation.forward if where == STEP and isinstance(s, MatVec)]
    # a reduction over the units couples a step's lanes (its adjoint too, also one that
    # only a vector parameter's gradient reads: sum(va))
    stmts = [s for _, s in derivation.forward] + derivation.backward
    in_loop += [s for s in stmts if isinstance(s, Assign) and reductions.has_reduction(s.expr)]
    in_loop += [g for g in derivation.param_grads if reductions.has_reduction(g.expr)]
    kind = COUPLED if in_loop else DIAGONAL
    if in_loop:
        return kind, {}
    # Affine analysis: write each state's next value in the states and the symbols that
    # do not depend on any state (those can be computed for every step at once).
    assigns = [s for where, s in derivation.forward if where == STEP and isinstance(s, Assign)]
    states = {sp.Symbol(s) for s in cell.states}
    dependent = set(states)
    subs: dict[sp.Symbol, sp.Expr] = {}
    for stmt in assigns:
        if stmt.expr.free_symbols & dependent:
            target = sp.Symbol(stmt.target)
            dependent.add(target)
            subs[target] = stmt.expr.xreplace(subs)
            if _size(subs[target]) > AFFINE_BUDGET:
                return kind, {}  # too long to analyse (a chain of many equations)
    affine = {}
    for state, target in cell.states.items():
        nxt = subs.get(sp.Symbol(target), sp.Symbol(target))
        h = sp.Symbol(state)
        coeff = sp.diff(nxt, h)
        rest = nxt.xreplace({h: sp.S.Zero})
        if (coeff.free_symbols | rest.free_symbols) & dependent:
            return kind, {}
        # the decomposition must give back the value: step(h) has derivative 0 and
        # step(0) at h = 0, but is not affine in h
        if sp.expand(nxt - coeff * h - rest) != 0:
            return kind, {}
        affine[state] = (coeff, rest)
    return AFFINE, affine


def plan_scan(kernel: Kernel) -> Scan | None:
    """The parallel-scan form of an affine recurrence, or None when it does not apply.

    It applies to one state whose next value is the output, when the state's adjoint
    within a step is A_t times the output's adjoint (true of h_t = A_t*h_{t-1} + b_t:
    the state enters the step only through A_t*h).
    """
    cell = kernel.cell
    if kernel.recurrence != AFFINE or len(cell.states) != 1:
        return None
    ((state, target),) = cell.states.items()
    if target != cell.output or any(
        isinstance(s, MatVec) for s in kernel.forward + kernel.backward
    ):
        return None
    coeff, offset = kernel.affine[state]
    dependent = {state}
    before, after = [], []
    for stmt in kernel.forward:
        if {s.name for s in stmt.expr.free_symbols} & dependent:
            dependent.add(stmt.target)
            after.append(stmt)
        else:
            before.append(stmt)
    seed = naming.adjoint(cell.output)
    adjoint = naming.adjoint(state)
    body = [s for s in kernel.backward if s.target != seed]
    defs = {sp.Symbol(s.target): s.expr for s in kernel.backward}
    dh = sp.Symbol(adjoint)
    while dh.free_symbols & (defs.keys() - {sp.Symbol(seed)}):
        dh = dh.xreplace({k: v for k, v in defs.items() if k.name != seed})
    if sp.expand(dh - coeff * sp.Symbol(seed)) != 0:
        return None
    return Scan(state, coeff, offset, before, after, body)
