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

from dataclasses import dataclass

import sympy as sp

from symbolic import naming, primitives, reductions
from symbolic.ir import PRE, STEP, Assign, CostDerivation, Derivation, MatVec, ParamGrad
from symbolic.model import Cell, Cost, Equation

adjoint_name = naming.adjoint


def lift_primitives(cell: Cell) -> list[Equation]:
    """Give every nested primitive call its own intermediate, so its derivative can be
    written with its cached output (``tanh(c)`` inside ``o*tanh(c)`` becomes ``_t0``).

    A reduction over the units gets its own intermediate too, and so does its argument
    when it is not a symbol (``sum(exp(z))``: ``_t0 = exp(z)``, ``_t1 = sum(_t0)``): its
    adjoint, a reduction of the result's adjoint, then reaches one symbol."""
    taken = {eq.name for eq in cell.equations}
    names = _Temporaries(taken)
    out: list[Equation] = []
    for eq in cell.equations:
        expr = primitives.stabilize(eq.expr)
        while True:
            inner = [
                c
                for c in sp.preorder_traversal(expr)
                if _is_call(c)
                and not c.is_number  # a constant stays a value: its derivative is 0
                and c is not expr
                and c != expr
                and not any(_is_call(a) for a in sp.preorder_traversal(c.args[0]))
            ]
            if not inner:
                break
            # innermost first: a call none of whose arguments holds another call
            first = sorted(inner, key=sp.default_sort_key)[0]
            call = _lift_argument(first, eq, names, out)
            name = names.next()
            out.append(Equation(name, call, eq.line, str(call), lifted=True))
            expr = expr.xreplace({first: sp.Symbol(name)})
        expr = _lift_argument(expr, eq, names, out)
        out.append(Equation(eq.name, expr, eq.line, eq.source, eq.lifted))
    return out


def _is_call(expr: sp.Basic) -> bool:
    return primitives.is_primitive_call(expr) or reductions.is_reduction(expr)


def _lift_argument(call: sp.Expr, eq: Equation, names: _Temporaries, out: list) -> sp.Expr:
    """A reduction whose argument is an expression, with the argument lifted."""
    if not reductions.is_reduction(call) or isinstance(call.args[0], sp.Symbol):
        return call
    name = names.next()
    out.append(Equation(name, call.args[0], eq.line, str(call.args[0]), lifted=True))
    return type(call)(sp.Symbol(name))


class _Temporaries:
    """Names ``_t0, _t1, ...`` for lifted intermediates, skipping the spec's own."""

    def __init__(self, taken: set[str]):
        self.taken = taken
        self.counter = 0

    def next(self) -> str:
        while naming.temporary(self.counter) in self.taken:
            self.counter += 1
        name = naming.temporary(self.counter)
        self.counter += 1
        return name


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
    proj_by_arg: dict[str, list] = {}
    for proj in cell.projections:
        proj_by_arg.setdefault(proj.arg, []).append(proj)
    forward = _forward_program(cell, equations, proj_by_arg)
    input_projs = proj_by_arg.get(cell.input, [])

    sweep = _Reverse(
        forward_values(equations), set(cell.params), {}, {p: [] for p in cell.params}, []
    )
    seeds = sweep.seed(cell)
    sweep.run(forward)
    state_adjoints = sweep.close(cell, input_projs)
    input_adjoint = sweep.close_input(cell)
    param_grads = _param_grads(cell, sweep.vector_grads)
    input_grads = _input_grads(cell, input_projs)
    return Derivation(
        cell,
        equations,
        forward,
        sweep.backward,
        param_grads,
        input_grads,
        state_adjoints,
        seeds,
        input_adjoint,
    )


def _forward_program(
    cell: Cell, equations: list[Equation], proj_by_arg: dict[str, list]
) -> list[tuple[str, Assign | MatVec]]:
    """Input projections before the loop, the rest in order, each projection right after
    the vector it multiplies."""
    forward = _projections_of(cell.input, PRE, proj_by_arg)
    for state in cell.states:
        forward += _projections_of(state, STEP, proj_by_arg)
    for eq in equations:
        forward.append((STEP, Assign(eq.name, eq.expr, f"{eq.name} = {eq.source}")))
        forward += _projections_of(eq.name, STEP, proj_by_arg)
    return forward


def _projections_of(
    arg: str, where: str, proj_by_arg: dict[str, list]
) -> list[tuple[str, Assign | MatVec]]:
    """The products of every matrix that multiplies ``arg``, placed at ``where``."""
    return [
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
        for proj in proj_by_arg.get(arg, [])
    ]


@dataclass
class _Reverse:
    """The reverse sweep over the forward program: contributions to each symbol's adjoint,
    accumulated in reverse order, and the terms of each vector parameter's gradient.

    Attributes:
        cached: Primitive call -> the symbol caching it.
        params: The parameters' names (their adjoints are gradients, not contributions).
        contributions: Symbol -> the terms of its adjoint found so far.
        vector_grads: Vector parameter -> the terms of its gradient.
        backward: The adjoint program emitted so far.
    """

    cached: dict[sp.Expr, sp.Symbol]
    params: set[str]
    contributions: dict[str, list[sp.Expr]]
    vector_grads: dict[str, list[sp.Expr]]
    backward: list[Assign | MatVec]

    def add(self, symbol: str, term: sp.Expr) -> None:
        self.contributions.setdefault(symbol, []).append(term)

    def seed(self, cell: Cell) -> dict[str, list[str]]:
        """Seed the output's and the next states' adjoints; the seeds of each adjoint."""
        seeds: dict[str, list[str]] = {}
        out_seed = naming.upstream(cell.output)
        self.add(cell.output, sp.Symbol(out_seed))
        seeds.setdefault(adjoint_name(cell.output), []).append(out_seed)
        for state, target in cell.states.items():
            carried = naming.carried(state)
            self.add(target, sp.Symbol(carried))
            seeds.setdefault(adjoint_name(target), []).append(carried)
        return seeds

    def run(self, forward: list[tuple[str, Assign | MatVec]]) -> None:
        """Walk the forward program backwards, emitting each statement's adjoint."""
        for where, stmt in reversed(forward):
            if isinstance(stmt, MatVec):
                if where != PRE:
                    self.through_product(stmt)
            else:
                self.through_assign(stmt)

    def through_product(self, stmt: MatVec) -> None:
        """The adjoint of a product in the loop, and its path back to the vector."""
        terms = self.contributions.get(stmt.target)
        if not terms:
            # nothing depends on the product (step' = 0): its adjoint is zero, and
            # the matrix's gradient reads it
            self.backward.append(
                Assign(adjoint_name(stmt.target), sp.S.Zero, f"adjoint of {stmt.comment}")
            )
            return
        self.backward.append(
            Assign(adjoint_name(stmt.target), sp.Add(*terms), f"adjoint of {stmt.comment}")
        )
        temp = naming.matvec_adjoint(stmt.arg, stmt.matrix)
        self.backward.append(
            MatVec(
                temp,
                stmt.matrix,
                adjoint_name(stmt.target),
                True,
                f"sum_i {stmt.matrix}_ij d{stmt.target}_i: the path of {stmt.arg} through {stmt.matrix}",
            )
        )
        self.add(stmt.arg, sp.Symbol(temp))

    def through_assign(self, stmt: Assign) -> None:
        """The adjoint of an equation, and the local partials by each of its symbols."""
        eq_name, expr = stmt.target, stmt.expr
        terms = self.contributions.get(eq_name)
        if not terms:
            return
        d_eq = sp.Symbol(adjoint_name(eq_name))
        self.backward.append(Assign(d_eq.name, sp.Add(*terms), f"adjoint of {stmt.comment}"))
        if reductions.is_reduction(expr):
            # over the units: a Jacobian-vector product (lifting made the argument a symbol)
            self.contribute(expr.args[0].name, reductions.adjoint(expr, d_eq))
            return
        for sym in sorted(expr.free_symbols, key=lambda s: s.name):
            partial = local_partial(expr, sym, self.cached)
            if partial == 0:
                continue
            self.contribute(sym.name, d_eq * partial)

    def contribute(self, name: str, term: sp.Expr) -> None:
        """A term of the adjoint of ``name`` (of its gradient, for a parameter)."""
        if name in self.params:
            self.vector_grads[name].append(term)
        else:
            self.add(name, term)

    def close(self, cell: Cell, input_projs: list) -> dict[str, str]:
        """Emit the adjoints that leave the step; ``state -> adjoint symbol``."""
        # Projections of the input are summed after the loop: their adjoints are complete.
        for proj in input_projs:
            terms = self.contributions.get(proj.name, [])
            self.backward.append(
                Assign(
                    adjoint_name(proj.name),
                    sp.Add(*terms),
                    f"adjoint of {proj.name} = {proj.matrix}@{cell.input}",
                )
            )
        state_adjoints: dict[str, str] = {}
        for state in cell.states:
            terms = self.contributions.get(state, [])
            name = adjoint_name(state)
            self.backward.append(
                Assign(name, sp.Add(*terms), f"adjoint of {state}: flows to the step before")
            )
            state_adjoints[state] = name
        return state_adjoints

    def close_input(self, cell: Cell) -> str | None:
        """An elementwise input's adjoint as a lane value (its uses outside products), the
        term ``dx`` gains on top of the products' ``dP @ W``; None when the input enters
        through products only."""
        terms = self.contributions.get(cell.input, [])
        if not cell.input_elementwise or not terms:
            return None
        name = naming.input_lane_adjoint(cell.input)
        self.backward.append(
            Assign(name, sp.Add(*terms), f"adjoint of {cell.input} as a lane value")
        )
        return name


def _param_grads(cell: Cell, vector_grads: dict[str, list[sp.Expr]]) -> list[ParamGrad]:
    """In spec order: one per vector parameter, one per product of a matrix."""
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
    return param_grads


def _input_grads(cell: Cell, input_projs: list) -> list[MatVec]:
    """The projections of the input: ``dx = sum dP @ W``."""
    return [
        MatVec(
            naming.matvec_adjoint(cell.input, proj.matrix),
            proj.matrix,
            adjoint_name(proj.name),
            True,
            f"sum_i {proj.matrix}_ij d{proj.name}_i",
        )
        for proj in input_projs
    ]


def derive_cost(cost: Cost) -> CostDerivation:
    """d C / d prediction per unit, the cost's only derivative: d per_unit / d prediction,
    plus, for each reduction over the units, its Jacobian-vector product
    (:func:`symbolic.reductions.pullback`)."""
    pred = sp.Symbol(cost.prediction)
    per_unit = primitives.stabilize(cost.per_unit)
    return CostDerivation(cost, per_unit, reductions.pullback(per_unit, sp.S.One, pred))
