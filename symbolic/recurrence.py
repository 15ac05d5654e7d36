"""Recurrence analysis: how a cell's steps depend on each other (run by stage 3, ``kernel``).

Input: a :class:`~symbolic.ir.Derivation` (or a lowered :class:`~symbolic.ir.Kernel`).
Output: data, never code: the recurrence class (:data:`~symbolic.ir.DIAGONAL`,
:data:`~symbolic.ir.COUPLED`, :data:`~symbolic.ir.AFFINE`, :data:`~symbolic.ir.NONE`), the
coefficients of an affine recurrence, its parallel-scan form (:class:`~symbolic.ir.Scan`),
and a diagonal recurrence's adjoint step as coefficients times seeds
(:class:`~symbolic.ir.AdjointScan`: what a backward scan over blocks of steps computes).
Backends read these and only emit.
"""

from __future__ import annotations

import sympy as sp

from symbolic import naming, passes, reductions
from symbolic.ir import (
    AFFINE,
    COUPLED,
    DIAGONAL,
    NONE,
    STEP,
    AdjointScan,
    Assign,
    Derivation,
    Kernel,
    MatVec,
    Scan,
    Stmt,
    names,
    reads,
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
    the state enters the step only through A_t*h): its one coefficient in the adjoint
    step's one seed (:func:`adjoint_scan`, run first) is A_t.
    """
    cell = kernel.cell
    adjoints = kernel.adjoint_scan
    if kernel.recurrence != AFFINE or len(cell.states) != 1 or adjoints is None:
        return None
    if cell.input_elementwise:  # (its whole-array code names no input lane: the loop runs)
        return None
    ((state, target),) = cell.states.items()
    seed = naming.adjoint(cell.output)
    if target != cell.output or adjoints.seeds != [seed]:
        return None
    coeff, offset = kernel.affine[state]
    if sp.expand(adjoints.expanded(naming.adjoint(state), seed) - coeff) != 0:
        return None
    before, after = state_free(kernel.forward, {state})
    body = [s for s in kernel.backward if s.target != seed]
    return Scan(state, coeff, offset, before, after, body)


def state_free(stmts: list[Stmt], states: set[str]) -> tuple[list[Assign], list[Stmt]]:
    """``(free, dependent)``: the elementwise statements of a step that read no state,
    directly or through another statement (computable for every step at once, before
    the time loop), and the others (a product stays in the loop), each in order."""
    dependent = set(states)
    free, rest = [], []
    for stmt in stmts:
        if isinstance(stmt, Assign) and not reads(stmt) & dependent:
            free.append(stmt)
        else:
            dependent.add(stmt.target)
            rest.append(stmt)
    return free, rest


# --- the adjoint step as coefficients times seeds ----------------------------------------


def adjoint_scan(kernel: Kernel) -> AdjointScan | None:
    """A diagonal recurrence's adjoint step as coefficients times seeds, or None.

    Reverse mode is linear in the adjoints, so each adjoint of a step is a sum of
    coefficient x seed over the seeds: the output's adjoint (its upstream gradient, or
    ``upstream + carried`` when the output is a state's next value) and the carried
    adjoints of the other states. Each coefficient is the step's adjoint program run
    with that seed 1 and the others 0; what no seed reaches (``1 - G``) is computed once.

    None for a feedforward cell, a matrix-coupled recurrence (a product couples the
    lanes), and an adjoint step that is not linear in its seeds (a backend then runs the
    adjoint step one step at a time).
    """
    cell = kernel.cell
    if cell.kind != RECURRENT or kernel.recurrence == COUPLED:
        return None
    if any(isinstance(s, MatVec) for s in kernel.backward):
        return None
    upstream, seed_out, out_state, combined, seeds, body = _seeds(kernel)
    wanted = sorted(set(kernel.stored) | {naming.adjoint(s) for s in cell.states})
    linear = set(seeds) | {upstream}
    for st in body:  # every value a seed reaches
        if reads(st) & linear:
            linear.add(st.target)
    shared = [st for st in body if st.target not in linear]
    body = [st for st in body if st.target in linear]
    coeff: dict[str, dict[str, sp.Expr]] = {t: {} for t in wanted}
    programs: list[Assign] = []
    known: list[tuple[Assign, str]] = []
    live = set(wanted)
    for seed in seeds:
        zero = {upstream} if combined is not None else set()
        program, seed_known, read = _coefficients_of(seed, seeds, zero, body, wanted, coeff)
        programs += program
        known += seed_known
        live |= read
    for per_seed in coeff.values():
        for value in per_seed.values():
            live |= names(value)
    programs = passes.dead_code(shared, live=live) + programs
    if any(names(st.expr) & (set(seeds) | {upstream}) for st in programs):
        return None  # a coefficient still reads a seed: not linear
    return AdjointScan(upstream, seed_out, out_state, combined, seeds, programs, coeff, known)


def _seeds(kernel: Kernel):
    """``(upstream, seed_out, out_state, combined, seeds, body)`` of a recurrent kernel's
    adjoint step (see :class:`~symbolic.ir.AdjointScan`); ``body`` is the step's program
    without the combined statement."""
    cell = kernel.cell
    out = cell.output
    upstream = naming.upstream(out)
    out_state = next((s for s, t in cell.states.items() if t == out), None)
    body = list(kernel.backward)
    seed_out = naming.adjoint(out)
    combined = None
    if out_state is not None:
        first = next((st for st in body if st.target == seed_out), None)
        expected = sp.Symbol(upstream) + sp.Symbol(naming.carried(out_state))
        if first is not None and sp.expand(first.expr - expected) == 0:
            combined = first
            body = [st for st in body if st is not first]
    if combined is not None:
        seeds = [seed_out] + [naming.carried(s) for s in cell.states if s != out_state]
    else:
        seeds = [upstream] + [naming.carried(s) for s in cell.states]
    return upstream, seed_out, out_state, combined, seeds, body


def _coefficients_of(
    seed: str, seeds: list[str], zero: set[str], body: list, wanted: list[str], coeff: dict
) -> tuple[list[Assign], list[tuple[Assign, str]], set[str]]:
    """The statements computing each wanted adjoint's coefficient of ``seed`` (the step's
    program with that seed 1, the other seeds and ``zero`` 0), the adjoints whose
    coefficient is a value the code has already, and the names the statements read.
    Sets ``coeff[adjoint][seed]``."""
    env = {sp.Symbol(s): (sp.S.One if s == seed else sp.S.Zero) for s in seeds}
    env |= {sp.Symbol(s): sp.S.Zero for s in zero}
    stmts = _substitute_leaves(body, env)
    # an adjoint whose value became another symbol (dW_x = _c1) keeps that one alive
    needed = set(wanted)
    for t in wanted:
        needed |= names(env.get(sp.Symbol(t), sp.S.Zero))
    stmts = passes.dead_code(stmts, live=needed)
    read: set[str] = set()
    for st in stmts:
        read |= reads(st)
    rename = {sp.Symbol(st.target): sp.Symbol(naming.coefficient(st.target, seed)) for st in stmts}
    program = []
    for st in stmts:
        name = naming.coefficient(st.target, seed)
        program.append(
            Assign(name, st.expr.xreplace(rename), f"{st.comment}: {st.target} = {name} * {seed}")
        )
    known = []
    for st in body:
        value = env.get(sp.Symbol(st.target))
        if value is not None and value != 0 and sp.Symbol(st.target) not in rename:
            known.append((Assign(st.target, value, st.comment), seed))
    for t in wanted:
        sym = sp.Symbol(t)
        coeff[t][seed] = rename.get(sym, env.get(sym, sp.S.Zero).xreplace(rename))
    return program, known, read


def _substitute_leaves(stmts, env: dict) -> list[Assign]:
    """Statements with known values (symbols, numbers) substituted forward; the
    statements whose value became such a leaf are dropped into ``env``."""
    out = []
    for st in stmts:
        expr = st.expr.xreplace(env)
        if isinstance(expr, sp.Symbol) or expr.is_number:
            env[sp.Symbol(st.target)] = expr
            continue
        out.append(Assign(st.target, expr, st.comment))
    return out
