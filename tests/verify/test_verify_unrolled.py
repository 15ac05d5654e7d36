"""Tests of the oracle (symbolic.verify.unrolled): the concrete unrolled models.

The fast total derivative (first-order perturbation, expanded in atoms) is checked
against its literal definition (compose, add eps, ``sympy.diff``, ``eps = 0``), the
symbolic models against their NumPy twins, and the atom polynomials against
``sympy.expand``.
"""

from __future__ import annotations

import random

import pytest
import sympy as sp

from symbolic.primitives import is_primitive_call, to_elementary
from symbolic.verify.unrolled import COST, AtomSpace, grn, mlp

SEED = 11  # a random point the paper's verification does not use
AGREE = 1e-6


def rel(x: float, ref: float) -> float:
    """Relative difference; derivatives below 1e-2 are compared in absolute terms (the
    rounding of a central difference at step 1e-6 is about 1e-9)."""
    return abs(x - ref) / max(abs(x), abs(ref), 1e-2)


def fd_total(model, point, key) -> float:
    return model.numeric.fd(point, COST, key)


def _atoms_zero(expr: sp.Expr) -> bool:
    calls = {c for c in expr.atoms(sp.Function) if is_primitive_call(c)}
    return sp.expand(expr.xreplace({c: sp.Dummy() for c in calls})) == 0


@pytest.mark.parametrize(
    ("model", "keys"),
    [
        (mlp((2, 2, 2)), [("W", 0, 1, 1), ("B", 2, 0), ("a", 1, 1), ("z", 1, 0)]),
        (grn((2, 2), 2, 1), [("WTc", 2, 0), ("WXu", 1, 1, 0), ("a", 1, 2, 0), ("a", 2, 1, 1)]),
    ],
    ids=["mlp-2-2-2", "grn-2-2-T2"],
)
def test_total_derivative_matches_its_literal_definition(model, keys):
    # The fast total (first-order perturbation, expanded in atoms) against the literal
    # one: compose the whole model with eps, sympy.diff, eps = 0, sympy.expand.
    m = model.symbolic
    for key in keys:
        literal = m.total_expr(COST, key)
        assert _atoms_zero(literal - m.unfold(m.total(COST, key))), key


@pytest.mark.parametrize(
    "model", [mlp((3, 4, 2)), grn((2, 2, 2), 3), grn((2, 3), 2)], ids=lambda m: m.name
)
def test_symbolic_and_numeric_models_agree(model):
    point = model.numeric.random_point(SEED)
    values = model.numeric.run(point)
    m = model.symbolic
    # The composed cost, evaluated exactly then rounded, is the NumPy forward's cost.
    numbers = {m.symbol(k): sp.Float(v, 30) for k, v in point.items()}
    cost = to_elementary(m.expr(COST).xreplace(numbers))
    assert abs(float(cost) - values[COST]) < 1e-12 * max(1.0, abs(values[COST]))
    # Exact derivatives at the forward values are the NumPy finite differences.
    atoms = {m.symbol(k): v for k, v in values.items()}
    for key in random.Random(0).sample(model.shape.leaves(), 6):
        exact = m.total(COST, key).evaluate(atoms)
        assert rel(exact, fd_total(model, point, key)) < AGREE, key


def test_atom_polynomials_expand_like_sympy():
    x, y, z = sp.symbols("x y z")
    space = AtomSpace([x, y, z])
    rng = random.Random(1)
    for _ in range(20):
        terms = [rng.randint(-3, 3) * x ** rng.randint(0, 2) * (y - z) ** rng.randint(0, 2)]
        expr = sp.Mul(*terms, evaluate=True) * (1 + x) - rng.randint(0, 2) * (z + x * y) ** 2
        assert sp.expand(space.from_expr(expr).as_expr() - expr) == 0
    assert space.from_expr(x * (y - z)) * space.from_expr(y + z) == space.from_expr(
        x * y**2 - x * z**2
    )
    assert not space.from_expr((x + y) ** 2 - x**2 - 2 * x * y - y**2)
