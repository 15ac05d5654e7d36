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
        scan: Its parallel-scan form, when it has one.
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
    scan: Scan | None = None

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


@dataclass
class Scan:
    """A parallel scan of an affine recurrence h_t = A_t*h_{t-1} + b_t (one state, the
    output's own: minGRU's form).

    Attributes:
        state: The state (h); its next value is the output.
        coeff, offset: A_t and b_t, in symbols that do not depend on the state.
        before: Forward statements free of the state (every step at once, before).
        after: Forward statements that read the state (every step at once, after).
        backward: The adjoint step without its seed: every step at once, once the
            output's adjoint is known for every step.
    """

    state: str
    coeff: sp.Expr
    offset: sp.Expr
    before: list[Assign]
    after: list[Assign]
    backward: list[Assign]


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


def lower(derivation: Derivation) -> Kernel:
    """Lower a derivation to the kernel IR and run the passes."""
    cell = derivation.cell
    pre = [s for where, s in derivation.forward if where == PRE]
    forward = [s for where, s in derivation.forward if where == STEP]
    state_adjoints = list(derivation.state_adjoints.values())

    seeds = {naming.upstream(cell.output)} | {naming.carried(s) for s in cell.states}
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

    recurrence, affine = classify(derivation)
    if recurrence == AFFINE:
        # the backward scan needs A_t for every step
        for coeff, _ in affine.values():
            for sym in coeff.free_symbols:
                if sym.name not in params and sym.name not in cached:
                    cached.append(sym.name)
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
    )
    kernel.scan = plan_scan(kernel)
    return kernel
