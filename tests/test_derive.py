"""Reverse-mode derivation against sympy.diff of fully unrolled models.

The oracle (:func:`unrolled_cells.unroll`) writes every neuron of every step of a stack of
layers as an explicit SymPy expression in scalar leaves, projections as explicit sums
over j of W_ij v_j, and differentiates

    C = sum over t, i of c_{t,i} a_{t,i}  +  sum over layers and states of e_i s_i(T)

with ``sympy.diff`` by every leaf (c and e random rationals, so every output counts).
Our side executes each layer's Derivation (forward program, adjoint program, parameter
and input gradients, state adjoints) with BPTT on exact rationals for the leaves,
seeding the top layer's output adjoints with c, every final state's with e, and chaining
each layer's dx into the layer below. Every parameter gradient entry, every input
gradient, every initial-state gradient (and every forward output) must agree exactly:

- ``exact=True``: ``expand`` of each difference, primitive calls as atom symbols, is 0
  (a proof; small models, since the expansion grows fast with T and depth);
- ``exact=False``: both sides evaluated in exact rationals with every primitive a random
  function, the oracle's derivative being ``sympy.diff`` applied node by node over the
  unrolled DAG (polynomial identity testing; fast for T = 3, stacks, GRU and LSTM).
"""

from __future__ import annotations

import dataclasses
import random
import textwrap
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import sympy as sp
from unrolled_cells import (
    Atoms,
    Leaves,
    RandomAtoms,
    canonical,
    cost,
    make_leaves,
    random_rationals,
    run_backward,
    run_forward,
    substitute,
    unroll,
)

import symbolic
from symbolic import primitives
from symbolic.derive import derive, lift_primitives
from symbolic.ir import Assign, MatVec
from symbolic.model import Cell
from symbolic.parse import load, loads

SPECS = Path(symbolic.__file__).parent / "specs"


def _cell(head: str, params: str, equations: str) -> str:
    equations = textwrap.dedent(equations)
    return f'kind = "recurrent"\ninput = "x"\noutput = "a"\n{head}\n[params]\n{params}\n[equations]\n{equations}'


# Extra cells, each exercising one feature of the derivation.
EXTRA = {
    # A matrix multiplying an expression of the state, U@(r*h).
    "gru": _cell(
        'name = "gru"\nstate = { h = "a" }',
        "\n".join(f'{m} = "matrix"' for m in ("Wz", "Uz", "Wr", "Ur", "Wc", "Uc"))
        + '\nBz = "vector"\nBc = "vector"',
        """\
        zg = "sigmoid(Wz@x + Uz@h + Bz)"
        r = "sigmoid(Wr@x + Ur@h)"
        c = "tanh(Wc@x + Uc@(r*h) + Bc)"
        a = "(1 - zg)*h + zg*c"
        """,
    ),
    # Two states, h and c; o*tanh(cn) is a nested primitive.
    "lstm": _cell(
        'name = "lstm"\nstate = { h = "a", c = "cn" }',
        "\n".join(f'{m} = "matrix"' for m in ("Wf", "Wi", "Wo", "Wg", "Uf", "Ui", "Uo", "Ug"))
        + "\n"
        + "\n".join(f'{b} = "vector"' for b in ("Bf", "Bi", "Bo", "Bg")),
        """\
        f = "sigmoid(Wf@x + Uf@h + Bf)"
        i = "sigmoid(Wi@x + Ui@h + Bi)"
        o = "sigmoid(Wo@x + Uo@h + Bo)"
        g = "tanh(Wg@x + Ug@h + Bg)"
        cn = "f*c + i*g"
        a = "o*tanh(cn)"
        """,
    ),
    # Primitives nested inside primitives and products.
    "nested": _cell(
        'name = "nested"\nstate = { h = "a" }',
        'W = "matrix"\nU = "vector"\nB = "vector"',
        """\
        z = "W@x + U*h + B"
        a = "sigmoid(z)*tanh(tanh(z) + h) + sigmoid(sigmoid(z)*h)"
        """,
    ),
    "relu_softplus": _cell(
        'name = "relu_softplus"\nstate = { h = "a" }',
        'W = "matrix"\nU = "vector"\nB = "vector"',
        """\
        z = "W@x + U*h + B"
        a = "relu(z) + softplus(U*h - z)*h"
        """,
    ),
    "exp_log": _cell(
        'name = "exp_log"\nstate = { h = "a" }',
        'W = "matrix"\nU = "vector"\nB = "vector"',
        """\
        z = "W@x + U*h + B"
        e = "exp(z)"
        a = "log(1 + e*e) - exp(-h)/(2 + e)"
        """,
    ),
    # A product of a product, W@(V@h), and of a parameter, P@B.
    "nested_products": _cell(
        'name = "nested_products"\nstate = { h = "a" }',
        'W = "matrix"\nV = "matrix"\nP = "matrix"\nX = "matrix"\nB = "vector"',
        """\
        a = "tanh(X@x + W@(V@h) + P@B + W@(V@(h*h)))"
        """,
    ),
    # The same projection in two equations and a projection of an equation's value.
    "shared_projection": _cell(
        'name = "shared_projection"\nstate = { h = "a", g = "q" }',
        'W = "matrix"\nU = "matrix"\nB = "vector"',
        """\
        z = "W@x + B*g"
        q = "sigmoid(z + U@h)"
        a = "tanh(U@q + W@x) + U@h"
        """,
    ),
    # Unusual but valid: two states from one equation, a state that is not the output,
    # a constant equation, the same call in two equations, powers and quotients.
    "odd": _cell(
        'name = "odd"\nstate = { h = "a", g = "a", k = "q" }',
        'W = "matrix"\nU = "matrix"\nB = "vector"',
        """\
        one = "2"
        p = "U@h"
        z = "W@x + B*g + one"
        q = "sigmoid(z)*k + p"
        a = "tanh(z)**3/(1 + h*h) + sigmoid(z) - q*k/2"
        """,
    ),
    # abs (its kink's subgradient is sign), sqrt, erf, sign and the constant pi.
    "abs_sqrt_erf": _cell(
        'name = "abs_sqrt_erf"\nstate = { h = "a" }',
        'W = "matrix"\nU = "vector"\nB = "vector"',
        """\
        z = "W@x + U*h + B"
        a = "erf(z/sqrt(2))*abs(h) + sqrt(1 + z*z)/pi + sign(B)*h"
        """,
    ),
    "feedforward_square": textwrap.dedent(
        """\
        name = "feedforward_square"
        kind = "feedforward"
        input = "x"
        output = "a"
        [params]
        W = "matrix"
        U = "matrix"
        B = "vector"
        [equations]
        z = "tanh(W@x + B)"
        a = "sigmoid(U@(2*z) + z*B)"
        """
    ),
}


@cache
def spec(name: str) -> Cell:
    if name in EXTRA:
        return loads(EXTRA[name], f"<{name}>")
    return load(SPECS / f"{name}.toml")


@cache
def derivation(name: str):
    return derive(spec(name))


@dataclass(frozen=True)
class Stack:
    """Layers (bottom first) of the same cell; sizes[k] -> sizes[k+1] for layer k."""

    name: str
    sizes: tuple[int, ...]
    steps: int

    @property
    def layers(self) -> int:
        return len(self.sizes) - 1


@dataclass
class Problem:
    """The leaves of a stack, their values and the cost's weights."""

    leaves: list[Leaves]
    named: dict[str, sp.Symbol]  # every leaf C depends on (upper layers read the lower)
    values: dict[sp.Symbol, sp.Rational]
    c: list[list[sp.Rational]]  # dC/da at the top, per step
    e: list[dict[str, list[sp.Rational]]]  # dC/d(final state), per layer


@cache
def problem(stack: Stack, seed: int = 0) -> Problem:
    cell = spec(stack.name)
    rng = random.Random(seed)

    def weight() -> sp.Rational:
        return sp.Rational(rng.choice([n for n in range(-5, 6) if n]), rng.randint(1, 4))

    leaves = [
        make_leaves(cell, stack.sizes[k], stack.sizes[k + 1], stack.steps, prefix=f"L{k}_")
        for k in range(stack.layers)
    ]
    c = [[weight() for _ in range(stack.sizes[-1])] for _ in range(stack.steps)]
    e = [
        {s: [weight() for _ in range(stack.sizes[k + 1])] for s in cell.states}
        for k in range(stack.layers)
    ]
    named = {}
    for k, layer in enumerate(leaves):
        named.update(layer.named())
        if k:  # layers above the first read the layer below, not their input leaves
            for row in layer.xs:
                for leaf in row:
                    del named[leaf.name]
    return Problem(leaves, named, random_rationals(named.values(), seed), c, e)


def oracle_cost(cell: Cell, prob: Problem) -> tuple[sp.Expr, list[list[sp.Expr]]]:
    """C of the fully unrolled stack (in leaf symbols), and the top layer's outputs."""
    xs = prob.leaves[0].xs
    finals, weights = [], []
    for k, layer in enumerate(prob.leaves):
        xs, states = unroll(cell, layer, xs)
        finals += [states[s] for s in cell.states]
        weights += [prob.e[k][s] for s in cell.states]
    return cost(xs, prob.c, finals, weights), xs


@cache
def unrolled(stack: Stack, seed: int = 0):
    return oracle_cost(spec(stack.name), problem(stack, seed))


def our_gradients(stack: Stack, der, seed: int = 0, evaluate=None):
    """Execute the derivation up the stack and back down it, on the leaves' values."""
    options = {"evaluate": evaluate} if evaluate else {}
    cell, prob = der.cell, problem(stack, seed)
    runs, params = [], []
    xs = substitute(prob.leaves[0].xs, prob.values)
    for layer in prob.leaves:
        params.append(substitute(layer.params, prob.values))
        runs.append(
            run_forward(der, params[-1], xs, substitute(layer.state0, prob.values), **options)
        )
        xs = runs[-1].outputs
    douts = prob.c
    for k in reversed(range(stack.layers)):
        run_backward(der, params[k], runs[k], douts, prob.e[k], **options)
        douts = runs[k].dxs  # the input gradient is the layer below's output adjoint

    ours: dict[sp.Symbol, sp.Expr] = {}
    for layer, run in zip(prob.leaves, runs, strict=True):
        for p, grad in run.grads.items():
            if cell.params[p] == "vector":
                ours.update(zip(layer.params[p], grad, strict=True))
            else:
                for leaf_row, grad_row in zip(layer.params[p], grad, strict=True):
                    ours.update(zip(leaf_row, grad_row, strict=True))
        for s in cell.states:
            ours.update(zip(layer.state0[s], run.dstate0[s], strict=True))
    for row, grad in zip(prob.leaves[0].xs, runs[0].dxs, strict=True):
        ours.update(zip(row, grad, strict=True))
    assert set(ours) == set(prob.named.values())
    return ours, runs[-1].outputs


def mismatches(stack: Stack, exact: bool, der=None, seed: int = 0) -> list[str]:
    """Every forward output and gradient where the derivation and the oracle differ.

    exact: ``sympy.diff`` of the unrolled C by every leaf, the leaves' values put in,
    and ``expand`` of each difference with atoms as symbols must be 0 (a proof, for
    small models). Otherwise: both sides evaluated in exact rationals with random
    primitives, the oracle's derivative by ``sympy.diff`` node by node (fast).
    """
    prob = problem(stack, seed)
    der = der or derivation(stack.name)
    C, outputs = unrolled(stack, seed)
    leaves = sorted(prob.named.values(), key=lambda s: s.name)
    if exact:
        ours, our_outputs = our_gradients(stack, der, seed)
        atoms = Atoms()

        def same(a, b):
            return canonical(atoms(a.xreplace(prob.values)) - atoms(b)) == 0

        def oracle(leaf):
            return sp.diff(C, leaf)
    else:
        value = RandomAtoms(seed, prob.values)
        # Our side in numbers as it runs: each call is valued when the forward makes it.
        ours, our_outputs = our_gradients(stack, der, seed, evaluate=value)

        def same(a, b):
            return value(a) == value(b)

        def oracle(leaf):
            return value.derivative(C, leaf)

    bad = [
        f"a[{t}][{i}]"
        for t, (row, our_row) in enumerate(zip(outputs, our_outputs, strict=True))
        for i, (a, b) in enumerate(zip(row, our_row, strict=True))
        if not same(a, b)
    ]
    bad += [f"dC/d{leaf.name}" for leaf in leaves if not same(oracle(leaf), ours[leaf])]
    return bad


def check(stack: Stack, exact: bool, seed: int = 0) -> None:
    bad = mismatches(stack, exact, seed=seed)
    compared = len(problem(stack, seed).named)
    assert not bad, f"{len(bad)} of {compared} gradients (and outputs) differ: {bad}"


# --- the paper's cells --------------------------------------------------------------------

MLPS = [(2, 2), (2, 3, 2), (2, 3, 2, 2)]


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "evaluated"])
@pytest.mark.parametrize("sizes", MLPS, ids=["1-layer", "2-layer", "3-layer"])
def test_dense_sigmoid_mlp(sizes, exact):
    check(Stack("dense_sigmoid", sizes, steps=1), exact)


def test_dense_sigmoid_over_a_sequence_of_inputs():
    # A feedforward cell over T inputs: its gradients sum over them.
    check(Stack("dense_sigmoid", (2, 3), steps=3), exact=True)


@pytest.mark.parametrize("steps", [1, 2])
def test_grn_exact(steps):
    check(Stack("grn", (2, 2), steps), exact=True)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_grn(steps, seed):
    check(Stack("grn", (2, 2), steps), exact=False, seed=seed)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_stacked_grn(steps):
    # Layer 1 feeds layer 2; layer 2's dx is layer 1's output adjoint.
    check(Stack("grn", (2, 2, 2), steps), exact=False)


def test_stacked_grn_exact():
    check(Stack("grn", (2, 2, 2), steps=1), exact=True)


# --- extra cells, T = 2 -------------------------------------------------------------------


#: Cells checked exactly only: their irrational constants (pi, the 2/sqrt(pi) of erf')
#: are not exact rationals, which the evaluated check computes in.
IRRATIONAL = {"abs_sqrt_erf"}


@pytest.mark.parametrize("name", sorted(set(EXTRA) - IRRATIONAL))
def test_extra_cell(name):
    check(Stack(name, (2, 2), steps=2), exact=False)


@pytest.mark.parametrize(
    "name",
    ["nested", "relu_softplus", "exp_log", "nested_products", "shared_projection", "abs_sqrt_erf"],
)
def test_extra_cell_exact(name):
    check(Stack(name, (2, 2), steps=2), exact=True)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_extra_cell_stacked(name):
    check(Stack(name, (2, 2, 2), steps=2), exact=False)


SHIPPED_CELLS = sorted(
    p.stem for p in SPECS.glob("*.toml") if load(p).kind in ("feedforward", "recurrent")
)


@pytest.mark.parametrize("name", SHIPPED_CELLS)
def test_every_shipped_cell(name):
    # Whatever cells ship, a stack of two over T = 2 agrees with its unrolled model (a
    # cell that uses its input elementwise keeps one width).
    sizes = (3, 3, 3) if spec(name).input_elementwise else (2, 3, 2)
    check(Stack(name, sizes, steps=2), exact=False)


@pytest.mark.parametrize("name", ["highway", "sru"])
def test_elementwise_input_exact(name):
    # The input's own adjoint (its uses outside products) joins dx: proved exactly on one
    # layer over two steps (stacks, where a layer's output is the next one's elementwise
    # input, are checked in exact rationals by test_every_shipped_cell).
    check(Stack(name, (2, 2), steps=2), exact=True)
    # and the oracle sees dx without it: every input entry's gradient differs
    bare = dataclasses.replace(derivation(name), input_adjoint=None)
    assert len(mismatches(Stack(name, (2, 2), steps=2), exact=True, der=bare)) == 4


# --- the oracle itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    "stack",
    [Stack("grn", (2, 2), 2), Stack("exp_log", (2, 2), 2), Stack("dense_sigmoid", (2, 3, 2), 1)],
    ids=lambda s: s.name,
)
def test_chain_rule_over_the_dag_is_sympy_diff(stack):
    """RandomAtoms.derivative equals plain sympy.diff of the unrolled C, evaluated."""
    prob = problem(stack)
    C, _ = unrolled(stack)
    value = RandomAtoms(7, prob.values)
    for leaf in prob.named.values():
        assert value.derivative(C, leaf) == value(sp.diff(C, leaf)), leaf


def test_the_oracle_sees_a_wrong_derivative():
    """A derivation with one wrong local partial fails the comparison, in both modes."""
    wrong = derive(spec("grn"))
    ac = sp.Symbol("ac")
    # tanh' = 1 - ac**2 replaced by 1 - ac.
    wrong.backward = [
        stmt
        if isinstance(stmt, MatVec)
        else Assign(stmt.target, stmt.expr.xreplace({ac**2: ac}), stmt.comment)
        for stmt in wrong.backward
    ]
    assert wrong.backward != derivation("grn").backward
    for exact in (True, False):
        bad = mismatches(Stack("grn", (2, 2), 2), exact, der=wrong)
        assert "dC/dL0_WXc_0_0" in bad and "dC/dL0_Bc_1" in bad, bad
        assert not any(m.startswith("a[") for m in bad)  # the forward pass is untouched


# --- the programs themselves --------------------------------------------------------------


def test_grn_adjoint_program_reuses_forward_values():
    der = derivation("grn")
    program = {stmt.target: stmt.expr for stmt in der.backward if not isinstance(stmt, MatVec)}
    G, ac, h = sp.symbols("G ac h")
    da, dG, dZu, dZc, dac = sp.symbols("da dG dZu dZc dac")
    assert sp.expand(program["dZu"] - dG * G * (1 - G)) == 0
    assert sp.expand(program["dZc"] - dac * (1 - ac**2)) == 0
    assert sp.expand(program["dG"] - da * (ac - h)) == 0
    for expr in program.values():
        assert not any(primitives.is_primitive_call(a) for a in sp.preorder_traversal(expr))
    assert der.state_adjoints == {"h": "dh"}
    assert der.seeds == {"da": ["da_in", "dh_next"]}


def test_nested_primitive_is_lifted():
    cell = spec("lstm")
    equations = lift_primitives(cell)
    lifted = [eq for eq in equations if eq.lifted]
    assert [eq.expr for eq in lifted] == [primitives.function("tanh")(sp.Symbol("cn"))]
    a = next(eq for eq in equations if eq.name == "a")
    assert a.expr == sp.Symbol("o") * sp.Symbol(lifted[0].name)


def test_input_projections_run_before_the_loop():
    der = derivation("grn")
    pre = [stmt for where, stmt in der.forward if where == "pre"]
    assert [stmt.target for stmt in pre] == ["WXu_x", "WXc_x"]
    assert all(isinstance(stmt, MatVec) and stmt.arg == "x" for stmt in pre)
    assert [mv.matrix for mv in der.input_grads] == ["WXu", "WXc"]


def test_every_parameter_has_a_gradient():
    for name in ["grn", "dense_sigmoid", *EXTRA]:
        der = derivation(name)
        assert {g.param for g in der.param_grads} == set(der.cell.params), name
