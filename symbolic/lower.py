"""Derivation -> kernel IR (pipeline stage: lower, then passes).

Input: a :class:`~symbolic.derive.Derivation`. Output: a :class:`Kernel`: ordered
statement lists for the forward step and the adjoint step, what crosses between them
(the forward values the backward needs cached, the adjoints the parameter gradients
need stored), the projections hoisted out of the time loop, and the recurrence class.

The passes run here, in order: copy propagation and dead code on the adjoint step,
dead code on the forward step (only what the backward reads is cached), then CSE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from symbolic import naming, passes
from symbolic.derive import PRE, STEP, Assign, Derivation, MatVec
from symbolic.model import RECURRENT

DIAGONAL = "diagonal"
COUPLED = "matrix-coupled"
AFFINE = "affine"
NONE = "none"


@dataclass
class Kernel:
    """Everything a template lays out, still as SymPy (printing comes next).

    Attributes:
        derivation: Where it came from.
        pre: Projections of the input for every step (before the time loop).
        forward: The forward step (elementwise statements and in-loop products).
        cached: Forward values (and previous states) the backward reads, per step.
        backward: The adjoint step.
        stored: Adjoints the parameter/input gradients read after the loop, per step.
        vector_grads: ``(param, expr)``: the gradient is ``expr`` summed over lanes.
        matrix_grads: ``(param, [(adjoint, arg)])``: the gradient is
            ``sum adjoint^T @ arg`` over lanes.
        input_grads: ``(adjoint, matrix)``: ``dx = sum adjoint @ matrix``.
        recurrence: :data:`DIAGONAL`, :data:`COUPLED` or :data:`NONE`.
        affine: For an affine recurrence ``h_t = A_t*h_{t-1} + b_t``: state -> (A, b).
    """

    derivation: Derivation
    pre: list[MatVec]
    forward: list[Assign | MatVec]
    cached: list[str]
    backward: list[Assign | MatVec]
    stored: list[str]
    vector_grads: list[tuple[str, sp.Expr]]
    matrix_grads: list[tuple[str, list[tuple[str, str]]]]
    input_grads: list[tuple[str, str]]
    recurrence: str
    affine: dict[str, tuple[sp.Expr, sp.Expr]] = field(default_factory=dict)

    @property
    def cell(self):
        return self.derivation.cell


def _targets(stmts) -> set[str]:
    return {s.target for s in stmts}


def _reads(stmts) -> set[str]:
    names: set[str] = set()
    for stmt in stmts:
        names |= passes._reads(stmt)
    return names


def classify(derivation: Derivation) -> tuple[str, dict]:
    """The recurrence class of a cell (Issue: recurrence analysis).

    diagonal: no product inside the time loop, so lanes (batch x neuron) are
    independent over time; matrix-coupled: a state (or something computed from one)
    is multiplied by a matrix each step. For every state whose next value is affine in
    the states with coefficients free of them (h_t = A_t*h_{t-1} + b_t), the
    coefficients are reported too.
    """
    cell = derivation.cell
    if cell.kind != RECURRENT:
        return NONE, {}
    in_loop = [s for where, s in derivation.forward if where == STEP and isinstance(s, MatVec)]
    kind = COUPLED if in_loop else DIAGONAL
    # Affine analysis: substitute equations into the state's next value.
    subs: dict[sp.Symbol, sp.Expr] = {}
    for where, stmt in derivation.forward:
        if where == STEP and isinstance(stmt, Assign):
            subs[sp.Symbol(stmt.target)] = stmt.expr.xreplace(subs)
    states = [sp.Symbol(s) for s in cell.states]
    affine = {}
    if not in_loop:
        for state, target in cell.states.items():
            nxt = subs[sp.Symbol(target)]
            h = sp.Symbol(state)
            coeff = sp.diff(nxt, h)
            if coeff.free_symbols & set(states):
                affine = {}
                break
            rest = sp.expand(nxt - coeff * h)
            if rest.free_symbols & set(states):
                affine = {}
                break
            affine[state] = (coeff, rest)
    if affine and kind == DIAGONAL and len(affine) == len(cell.states):
        return AFFINE, affine
    return kind, {}


def lower(derivation: Derivation) -> Kernel:
    """Lower a derivation to the kernel IR and run the passes."""
    cell = derivation.cell
    pre = [s for where, s in derivation.forward if where == PRE]
    forward = [s for where, s in derivation.forward if where == STEP]
    state_adjoints = list(derivation.state_adjoints.values())

    seeds = {naming.upstream(cell.output)} | {naming.carried(s) for s in cell.states}
    backward, rename = passes.copy_propagation(
        derivation.backward, protected=state_adjoints, inputs=seeds
    )

    def renamed(name: str) -> str:
        return rename.get(name, name)

    vector_grads: list[tuple[str, sp.Expr]] = []
    matrix_grads: dict[str, list[tuple[str, str]]] = {}
    for grad in derivation.param_grads:
        expr = grad.expr.xreplace({sp.Symbol(a): sp.Symbol(b) for a, b in rename.items()})
        if grad.kind == "vector":
            vector_grads.append((grad.param, expr))
        else:
            matrix_grads.setdefault(grad.param, []).append((expr.name, grad.arg))
    input_grads = [(renamed(mv.arg), mv.matrix) for mv in derivation.input_grads]

    post_reads: set[str] = set()
    for _, expr in vector_grads:
        post_reads |= {s.name for s in expr.free_symbols}
    for terms in matrix_grads.values():
        for adj, arg in terms:
            post_reads |= {adj, arg}
    post_reads |= {adj for adj, _ in input_grads}

    backward = passes.dead_code(backward, live=set(state_adjoints) | post_reads)
    stored = sorted(_targets(backward) & post_reads)

    params = set(cell.params)
    needed_fwd = (_reads(backward) | post_reads) - _targets(backward) - params - seeds
    needed_fwd.discard(cell.input)  # the input is kept whole, not per step
    cached = sorted(needed_fwd)
    live_fwd = set(cached) | {cell.output} | set(cell.states.values())
    forward = passes.dead_code(forward, live=live_fwd)
    backward = passes.cse(backward)

    recurrence, affine = classify(derivation)
    return Kernel(
        derivation=derivation,
        pre=pre,
        forward=forward,
        cached=cached,
        backward=backward,
        stored=stored,
        vector_grads=vector_grads,
        matrix_grads=list(matrix_grads.items()),
        input_grads=input_grads,
        recurrence=recurrence,
        affine=affine,
    )
