"""Derivation -> kernel IR (pipeline stage 3, ``kernel``: lower, then passes).

Input: a :class:`~symbolic.ir.Derivation`. Output: a :class:`~symbolic.ir.Kernel`: ordered
statement lists for the forward step and the adjoint step, what crosses between them
(the forward values the backward needs cached, the adjoints the parameter gradients
need stored), the projections hoisted out of the time loop, and the recurrence analysis
(:mod:`symbolic.recurrence`: the class, an affine recurrence's parallel scan, a diagonal
one's adjoint step as coefficients times seeds), computed here once for every backend.

The passes run here, in order: copy propagation, CSE and lifting of reductions (each in
a statement of its own) and dead code on the adjoint step, dead code on the forward step
(only what the backward reads is cached).
"""

from __future__ import annotations

import sympy as sp

from symbolic import naming, passes, reductions
from symbolic.ir import AFFINE, PRE, STEP, Assign, Derivation, Kernel, names, reads_all, targets
from symbolic.recurrence import adjoint_scan, classify, plan_scan


def lower(derivation: Derivation) -> Kernel:
    """Lower a derivation to the kernel IR and run the passes."""
    cell = derivation.cell
    pre = [s for where, s in derivation.forward if where == PRE]
    forward = [s for where, s in derivation.forward if where == STEP]
    state_adjoints = list(derivation.state_adjoints.values())
    seeds = {naming.upstream(cell.output)} | {naming.carried(s) for s in cell.states}
    backward, vector_grads, matrix_grads, input_grads, input_adjoint = _adjoint_step(
        derivation, seeds
    )
    lifter = passes.Lifter()
    backward, vector_grads = _lift_reductions(backward, vector_grads, lifter)

    post_reads: set[str] = set()
    for _, expr in vector_grads:
        post_reads |= names(expr)
    for terms in matrix_grads.values():
        for adj, arg in terms:
            post_reads |= {adj, arg}
    post_reads |= {adj for adj, _ in input_grads}
    if input_adjoint is not None:
        post_reads.add(input_adjoint)

    backward = passes.dead_code(backward, live=set(state_adjoints) | post_reads)
    stored = sorted(targets(backward) & post_reads)

    params = set(cell.params)
    needed_fwd = (reads_all(backward) | post_reads) - targets(backward) - params - seeds
    needed_fwd.discard(cell.input)  # the input is kept whole, not per step
    cached = sorted(needed_fwd)
    live_fwd = set(cached) | {cell.output} | set(cell.states.values())
    forward = passes.dead_code(forward, live=live_fwd)

    recurrence, affine = classify(derivation)
    if recurrence == AFFINE:
        # the backward scan needs A_t for every step
        for coeff, _ in affine.values():
            cached += sorted(names(coeff) - params - set(cached) - {cell.input})
        cached.sort()
    kernel = Kernel(
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
        input_adjoint=input_adjoint,
    )
    kernel.adjoint_scan = adjoint_scan(kernel)
    kernel.scan = plan_scan(kernel)
    return kernel


def _lift_reductions(
    backward: list, vector_grads: list[tuple[str, sp.Expr]], lifter: passes.Lifter
) -> tuple[list, list[tuple[str, sp.Expr]]]:
    """Every reduction over the units in a statement of its own (:class:`passes.Lifter`);
    a vector parameter's gradient that reduces becomes a value of the step, summed over
    lanes like any other."""
    grads = []
    for param, expr in vector_grads:
        if reductions.has_reduction(expr):
            name = lifter.name()
            backward = backward + [Assign(name, expr, f"gradient of {param}, per lane")]
            expr = sp.Symbol(name)
        grads.append((param, expr))
    return lifter(backward), grads


def _adjoint_step(derivation: Derivation, seeds: set[str]):
    """The adjoint step after copy propagation and CSE, and the gradients in its names:
    ``(backward, vector_grads, matrix_grads, input_grads, input_adjoint)``."""
    state_adjoints = list(derivation.state_adjoints.values())
    if derivation.input_adjoint is not None:
        state_adjoints.append(derivation.input_adjoint)  # keeps its name, as they do
    # The vector parameters' gradients join the step as pseudo-statements, so CSE sees
    # that d(bias) is the adjoint a projection already has (dUz_h), not a new product.
    pseudo = {
        naming.grad_array(g.param): g.param for g in derivation.param_grads if g.kind == "vector"
    }
    body = list(derivation.backward) + [
        Assign(naming.grad_array(g.param), g.expr, g.comment)
        for g in derivation.param_grads
        if g.kind == "vector"
    ]
    # copy propagation, CSE, naming CSE temporaries after whole copies, copies again
    body, rename = passes.copy_propagation(body, protected=state_adjoints, inputs=seeds)
    body = passes.fold_temporaries(passes.cse(body), avoid=pseudo)
    body, again = passes.copy_propagation(body, protected=state_adjoints, inputs=seeds)
    rename = {a: again.get(b, b) for a, b in rename.items()} | again

    def renamed(name: str) -> str:
        return rename.get(name, name)

    temps = {
        sp.Symbol(st.target): st.expr
        for st in body
        if isinstance(st, Assign) and st.target.startswith("_c")
    }

    def inline(expr: sp.Expr) -> sp.Expr:
        while expr.free_symbols & temps.keys():
            expr = expr.xreplace(temps)
        return expr

    grad_exprs = {st.target: inline(st.expr) for st in body if st.target in pseudo}
    backward = [st for st in body if st.target not in pseudo]
    vector_grads: list[tuple[str, sp.Expr]] = []
    matrix_grads: dict[str, list[tuple[str, str]]] = {}
    for grad in derivation.param_grads:
        if grad.kind == "vector":
            key = naming.grad_array(grad.param)
            expr = grad_exprs.get(key, sp.Symbol(renamed(key)))
            vector_grads.append((grad.param, expr))
        else:
            matrix_grads.setdefault(grad.param, []).append((renamed(grad.expr.name), grad.arg))
    input_grads = [(renamed(mv.arg), mv.matrix) for mv in derivation.input_grads]
    input_adjoint = derivation.input_adjoint
    if input_adjoint is not None:
        input_adjoint = renamed(input_adjoint)
    return backward, vector_grads, matrix_grads, input_grads, input_adjoint
