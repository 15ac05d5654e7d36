"""Two symbolic interpreters over concrete sizes, for testing :mod:`symbolic.derive`.

- :func:`unroll` is the oracle. It reads only the checked model (``cell.equations`` and
  ``cell.projections``) and writes every neuron of every step as an explicit SymPy
  expression in scalar leaves (``W_0_1``, ``x_1_0``, ``h0_1``, ...), each projection as the
  explicit sum over j of ``W_ij v_j``. Gradients are then plain ``sympy.diff`` of the cost.
  It shares nothing with the derivation but the parsed equations.
- :func:`run_derivation` executes a :class:`~symbolic.derive.Derivation` (its forward
  program, adjoint program, parameter and input gradients, state adjoints) over the same
  sizes with backpropagation through time, on exact numbers.

Primitive calls stay opaque on both sides (``sigmoid(1/3)`` is an atom), so the two
results are polynomials (rational functions) in the same atoms. Two exact comparisons:

- :class:`Atoms` names each distinct atom by a symbol, and ``expand`` of the difference
  proves the identity (small models: the expansion grows fast with T);
- :class:`RandomAtoms` evaluates both sides in exact rationals, every primitive a random
  function of its exact argument (polynomial identity testing: a difference survives
  with probability about degree / 10**12). Its :meth:`RandomAtoms.derivative` is
  ``sympy.diff`` applied node by node over the unrolled DAG, which keeps deep and
  stacked models fast; the tests check it against plain ``sympy.diff``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cache

import sympy as sp

from symbolic import primitives, reductions
from symbolic.derive import adjoint_name
from symbolic.ir import Assign, Derivation, MatVec
from symbolic.model import Cell

Vector = list[sp.Expr]
Matrix = list[list[sp.Expr]]


# --- leaves -----------------------------------------------------------------------------


@dataclass
class Leaves:
    """The scalar leaves of one layer: parameters, inputs per step, initial states."""

    params: dict[str, Vector | Matrix]
    xs: list[Vector]
    state0: dict[str, Vector]
    n_out: int

    def named(self) -> dict[str, sp.Symbol]:
        """Every leaf by name, in a fixed order."""
        out: dict[str, sp.Symbol] = {}
        for value in [*self.params.values(), *self.xs, *self.state0.values()]:
            for entry in value:
                for leaf in entry if isinstance(entry, list) else [entry]:
                    out[leaf.name] = leaf
        return out


def matrix_cols(cell: Cell, param: str, n_in: int, n_out: int) -> int:
    return n_in if cell.matrix_shape(param)[1] == "in" else n_out


def make_leaves(cell: Cell, n_in: int, n_out: int, steps: int, prefix: str = "") -> Leaves:
    """Symbols for every scalar a layer reads."""
    params: dict[str, Vector | Matrix] = {}
    for name, kind in cell.params.items():
        if kind == "vector":
            params[name] = [sp.Symbol(f"{prefix}{name}_{i}") for i in range(n_out)]
        else:
            cols = matrix_cols(cell, name, n_in, n_out)
            params[name] = [
                [sp.Symbol(f"{prefix}{name}_{i}_{j}") for j in range(cols)] for i in range(n_out)
            ]
    xs = [[sp.Symbol(f"{prefix}{cell.input}_{t}_{j}") for j in range(n_in)] for t in range(steps)]
    state0 = {s: [sp.Symbol(f"{prefix}{s}0_{i}") for i in range(n_out)] for s in cell.states}
    return Leaves(params, xs, state0, n_out)


def random_rationals(symbols, seed: int) -> dict[sp.Symbol, sp.Rational]:
    """Small nonzero exact values, reproducible."""
    rng = random.Random(seed)
    values = {}
    for sym in symbols:
        num = rng.choice([n for n in range(-9, 10) if n])
        values[sym] = sp.Rational(num, rng.randint(1, 7))
    return values


def substitute(value, values: dict):
    """Map a leaf structure (vector, matrix, dict of them) to its numbers."""
    if isinstance(value, dict):
        return {k: substitute(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, values) for v in value]
    return value.xreplace(values)


# --- the oracle: unrolled model ---------------------------------------------------------


def _matvec(matrix: Matrix, vector: Vector) -> Vector:
    return [sp.Add(*[w * v for w, v in zip(row, vector, strict=True)]) for row in matrix]


def _lane(expr: sp.Expr, env: dict[str, Vector], i: int) -> sp.Expr:
    if reductions.used(expr):
        return _lane_reducing(expr, env, i)
    return expr.xreplace({sym: env[sym.name][i] for sym in expr.free_symbols})


def _lane_reducing(expr: sp.Expr, env: dict[str, Vector], i: int) -> sp.Expr:
    """Unit ``i`` of an expression that reduces over the units: ``sum`` and ``mean`` as
    the explicit sum over the units, ``max`` as ``sympy.Max`` of them (max's adjoint and
    maximum/minimum are checked in test_reductions.py, in floating point)."""
    name = reductions.name_of(expr)
    if name in (reductions.SUM, reductions.MEAN, reductions.MAX):
        # the argument's symbols are vectors of the layer's units (never the input)
        n = len(env[min(s.name for s in expr.args[0].free_symbols)])
        units = [_lane(expr.args[0], env, j) for j in range(n)]
        if name == reductions.MAX:
            return sp.Max(*units)
        return sp.Add(*units) / (n if name == reductions.MEAN else 1)
    if name is not None:
        raise NotImplementedError(f"the unrolled model does not read {name}")
    if not expr.args:
        return _lane(expr, env, i)
    return expr.func(*(_lane(arg, env, i) for arg in expr.args))


def unroll(cell: Cell, leaves: Leaves, xs: list[Vector] | None = None):
    """The cell's forward pass over every step as explicit expressions.

    Args:
        cell: The checked model.
        leaves: Its scalar leaves.
        xs: Inputs per step (default: the input leaves), e.g. the layer below's outputs.

    Returns:
        ``(outputs, final_states)``: ``outputs[t][i]`` and ``final_states[s][i]``.
    """
    xs = leaves.xs if xs is None else xs
    projections = {p.name: p for p in cell.projections}
    states = {s: list(v) for s, v in leaves.state0.items()}
    outputs = []
    for x in xs:
        env: dict[str, Vector] = {cell.input: list(x), **states}
        for name, kind in cell.params.items():
            if kind == "vector":
                env[name] = leaves.params[name]

        def ensure(name: str, env=env) -> None:
            # A projection is summed out the first time an equation reads it.
            if name in env:
                return
            proj = projections[name]
            env[name] = _matvec(leaves.params[proj.matrix], env[proj.arg])

        for eq in cell.equations:
            for sym in eq.expr.free_symbols:
                ensure(sym.name)
            env[eq.name] = [_lane(eq.expr, env, i) for i in range(leaves.n_out)]
        outputs.append(env[cell.output])
        states = {s: env[target] for s, target in cell.states.items()}
    return outputs, states


def cost(outputs: list[Vector], weights: list[Vector], finals=(), final_weights=()) -> sp.Expr:
    """C = sum over t, i of c_{t,i} a_{t,i}, plus sum over states of e_i s_i at the end."""
    terms = [
        c * a
        for out, cw in zip(outputs, weights, strict=True)
        for a, c in zip(out, cw, strict=True)
    ]
    for state, ew in zip(finals, final_weights, strict=True):
        terms += [e * s for s, e in zip(state, ew, strict=True)]
    return sp.Add(*terms)


# --- the derivation, executed -----------------------------------------------------------


def _matvec_t(matrix: Matrix, vector: Vector) -> Vector:
    """sum_i W_ij v_i."""
    cols = len(matrix[0])
    return [sp.Add(*[matrix[i][j] * vector[i] for i in range(len(matrix))]) for j in range(cols)]


@dataclass
class Run:
    """What executing a derivation produced."""

    outputs: list[Vector]
    final_states: dict[str, Vector]
    grads: dict[str, Vector | Matrix] = field(default_factory=dict)
    dxs: list[Vector] = field(default_factory=list)
    dstate0: dict[str, Vector] = field(default_factory=dict)
    caches: list[dict[str, Vector]] = field(default_factory=list)


def _identity(expr: sp.Expr) -> sp.Expr:
    return expr


def run_forward(
    der: Derivation, params, xs: list[Vector], state0: dict[str, Vector], evaluate=_identity
) -> Run:
    """Execute the derivation's forward program step by step.

    ``evaluate`` is applied to every value computed (e.g. a :class:`RandomAtoms`, so that
    values stay numbers instead of growing expressions in atoms).
    """
    cell = der.cell
    n_out = next(len(v) for v in params.values())
    vectors = {p: v for p, v in params.items() if cell.params[p] == "vector"}
    states = {s: list(state0[s]) for s in cell.states}
    run = Run([], {})
    # "pre" statements are the input projections of every step, before the loop.
    pre: list[dict[str, Vector]] = [{} for _ in xs]
    for where, stmt in der.forward:
        if where == "pre":
            assert isinstance(stmt, MatVec) and stmt.arg == cell.input and not stmt.transpose
            for t, x in enumerate(xs):
                pre[t][stmt.target] = _matvec(params[stmt.matrix], x)
    for t, x in enumerate(xs):
        env: dict[str, Vector] = {**vectors, cell.input: list(x), **states, **pre[t]}
        for where, stmt in der.forward:
            if where == "pre":
                continue
            assert where == "step", where
            if isinstance(stmt, MatVec):
                assert not stmt.transpose
                env[stmt.target] = _matvec(params[stmt.matrix], env[stmt.arg])
            else:
                env[stmt.target] = [evaluate(_lane(stmt.expr, env, i)) for i in range(n_out)]
        run.caches.append(env)
        run.outputs.append(env[cell.output])
        states = {s: env[target] for s, target in cell.states.items()}
    run.final_states = states
    return run


def run_backward(
    der: Derivation,
    params,
    run: Run,
    douts: list[Vector],
    dfinal: dict[str, Vector] | None = None,
    evaluate=_identity,
) -> Run:
    """Execute the adjoint program backward through time (BPTT).

    Args:
        der: The derivation.
        params: Parameter values.
        run: The forward run (its caches).
        douts: dC/d(output) at each step from outside the cell (the cost's weights, or
            the layer above's input gradient).
        dfinal: dC/d(final state) per state (default zero).
        evaluate: Applied to every value computed, as in :func:`run_forward`.
    """
    cell = der.cell
    n_out = len(run.outputs[0])
    grads: dict[str, Vector | Matrix] = {}
    for name, kind in cell.params.items():
        value = params[name]
        grads[name] = (
            [sp.S.Zero] * n_out
            if kind == "vector"
            else [[sp.S.Zero] * len(value[0]) for _ in value]
        )
    carried = {s: list((dfinal or {}).get(s, [sp.S.Zero] * n_out)) for s in cell.states}
    out_seed = adjoint_name(cell.output) + "_in"
    state_seeds = {adjoint_name(s) + "_next": s for s in cell.states}
    seeds = {seed for group in der.seeds.values() for seed in group}
    assert seeds == {out_seed, *state_seeds}, seeds
    dxs: list[Vector] = [[] for _ in run.caches]
    for t in reversed(range(len(run.caches))):
        env = dict(run.caches[t])
        env[out_seed] = douts[t]
        for seed, state in state_seeds.items():
            env[seed] = carried[state]
        for stmt in der.backward:
            if isinstance(stmt, MatVec):
                assert stmt.transpose
                env[stmt.target] = _matvec_t(params[stmt.matrix], env[stmt.arg])
            else:
                assert isinstance(stmt, Assign)
                env[stmt.target] = [evaluate(_lane(stmt.expr, env, i)) for i in range(n_out)]
        for grad in der.param_grads:
            values = [evaluate(_lane(grad.expr, env, i)) for i in range(n_out)]
            if grad.kind == "vector":
                grads[grad.param] = [g + v for g, v in zip(grads[grad.param], values, strict=True)]
            else:
                arg = env[grad.arg]
                grads[grad.param] = [
                    [g + values[i] * arg[j] for j, g in enumerate(row)]
                    for i, row in enumerate(grads[grad.param])
                ]
        n_in = len(env[cell.input])
        dx = [sp.S.Zero] * n_in
        for mv in der.input_grads:
            assert mv.transpose
            dx = [a + b for a, b in zip(dx, _matvec_t(params[mv.matrix], env[mv.arg]), strict=True)]
        if der.input_adjoint is not None:  # an elementwise input's own adjoint
            dx = [a + b for a, b in zip(dx, env[der.input_adjoint], strict=True)]
        dxs[t] = dx
        carried = {s: env[der.state_adjoints[s]] for s in cell.states}
    run.grads, run.dxs, run.dstate0 = grads, dxs, carried
    return run


def canonical(expr: sp.Expr) -> sp.Expr:
    """A canonical form of a polynomial or rational function (of atom symbols)."""
    expr = sp.expand(expr)
    if any(p.exp.is_negative for p in expr.atoms(sp.Pow)):
        expr = sp.cancel(expr)
    return expr


class Atoms:
    """Replaces each primitive call by one symbol per distinct call, bottom-up.

    Two calls are the same atom when their functions agree and their arguments (in
    atoms already) have the same :func:`canonical` form. What remains is a polynomial (or
    a rational function) in atom symbols, cheap to expand; expanding the original would
    expand every atom's argument inside every term.
    """

    def __init__(self) -> None:
        self.symbols: dict[tuple[str, sp.Expr], sp.Symbol] = {}
        self.memo: dict[sp.Expr, sp.Expr] = {}

    def __call__(self, expr: sp.Expr) -> sp.Expr:
        done = self.memo.get(expr)
        if done is not None:
            return done
        if not expr.args:
            out = expr
        elif primitives.is_primitive_call(expr):
            key = (type(expr).__name__, canonical(self(expr.args[0])))
            out = self.symbols.get(key)
            if out is None:
                out = self.symbols[key] = sp.Symbol(f"atom{len(self.symbols)}")
        else:
            out = expr.func(*[self(arg) for arg in expr.args])
        self.memo[expr] = out
        return out


@cache
def _local_partial(func, nargs: int, index: int):
    """d func(x_0, ..., x_n) / d x_index, by sympy.diff, with the symbols it uses."""
    dummies = sp.symbols(f"_x0:{nargs}")
    return dummies, sp.diff(func(*dummies), dummies[index])


class RandomAtoms:
    """Evaluates an expression exactly, each primitive call as a random function.

    A call ``f(arg)`` gets a pseudo-random rational determined by ``f`` and the exact
    value of ``arg`` (the same call on both sides gets the same value); everything else
    is exact rational arithmetic. Two expressions that differ as polynomials in their
    atoms agree at such a point with probability about degree / 10**12 (polynomial
    identity testing), and no expansion is needed: this is fast at any depth.
    """

    def __init__(self, seed: int = 0, leaves: dict[sp.Symbol, sp.Rational] | None = None) -> None:
        self.seed = seed
        self.values: dict[tuple[str, sp.Rational], sp.Rational] = {}
        self.memo: dict[sp.Expr, sp.Rational] = dict(leaves or {})

    def __call__(self, expr: sp.Expr) -> sp.Rational:
        done = self.memo.get(expr)
        if done is not None:
            return done
        if expr.is_Rational:
            out = expr
        elif primitives.is_primitive_call(expr):
            key = (type(expr).__name__, self(expr.args[0]))
            out = self.values.get(key)
            if out is None:
                rng = random.Random(f"{self.seed}:{key[0]}:{key[1]}")
                value = sp.Rational(rng.randint(-(10**12), 10**12), rng.randint(1, 10**12))
                out = self.values[key] = value
        elif expr.args:
            out = expr.func(*[self(arg) for arg in expr.args])
        else:
            raise ValueError(f"not a number: {expr}")
        if not out.is_Rational:
            raise ValueError(f"not a rational: {expr} -> {out}")
        self.memo[expr] = out
        return out

    def derivative(self, expr: sp.Expr, leaf: sp.Symbol) -> sp.Rational:
        """The value of ``sympy.diff(expr, leaf)`` here, by the chain rule over the DAG.

        An unrolled model is a DAG written as a tree (h_1 appears in every equation of
        step 2, each of those in step 3, ...), so the tree grows like 3**T and
        ``sympy.diff`` walks all of it. This takes each node's local partial with
        ``sympy.diff`` (of the node with symbols for its arguments, so a primitive's
        derivative comes from its ``fdiff`` exactly as in ``sympy.diff``), evaluates it
        here and remembers every node's derivative. The tests check it against
        ``sympy.diff`` on small models.
        """
        memo: dict[sp.Basic, sp.Rational] = {}

        def d(node: sp.Basic) -> sp.Rational:
            done = memo.get(node)
            if done is not None:
                return done
            if node == leaf:
                out = sp.S.One
            else:
                out = sp.S.Zero
                for index, arg in enumerate(node.args):
                    d_arg = d(arg)
                    if d_arg:
                        dummies, partial = _local_partial(node.func, len(node.args), index)
                        here = partial.xreplace(
                            {x: self(a) for x, a in zip(dummies, node.args, strict=True)}
                        )
                        out += self(here) * d_arg
            memo[node] = out
            return out

        return d(expr)
