"""Tests of the formula-checking engine (symbolic.verify.engine) on a paper of its own.

The paper here exists only in this file: one sigmoid neuron (z = w x + b, a = sigma(z),
C = (a - y)^2), its text, and its formulas, one right, one wrong (a copied factor x)
with its correction, one with a stray bracket. The model is built from the oracle's
building blocks and the paper is handed to :class:`~symbolic.verify.engine.Paper`
without any file of the package knowing it. Each verdict is also shown by a check of
its own: the NumPy model's finite differences against the formula as written.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from symbolic.primitives import PRIMITIVES, function
from symbolic.verify.engine import Formula, Paper, bracket_problems
from symbolic.verify.unrolled import (
    COST,
    Key,
    NumericContext,
    NumericModel,
    SymbolicModel,
    Unrolled,
    label,
    symbol_of,
)
from symbolic.verify.verdict import FAILS, HOLDS, ILL_FORMED, VERDICTS

ROOT = Path(__file__).resolve().parents[2]  # the repository
SEED = 11  # a random point the verification does not use

# The neuron's values, keyed as the oracle keys them (a kind and two indices).
X: Key = ("x", 0, 0)
W: Key = ("w", 0, 0)
B: Key = ("b", 0, 0)
Y: Key = ("y", 0)
Z: Key = ("z", 1, 0)
A: Key = ("a", 1, 0)


@dataclass(frozen=True)
class NeuronShape:
    """The one-neuron model's shape: its leaves and the values it has."""

    name: str = "one sigmoid neuron"

    def leaves(self) -> list[Key]:
        return [X, W, B, Y]

    def has(self, key: Key) -> bool:
        return key in (*self.leaves(), Z, A, COST)


def neuron_equations() -> list[tuple[Key, object]]:
    s, sigmoid = symbol_of, function("sigmoid")
    return [
        (Z, s(W) * s(X) + s(B)),
        (A, sigmoid(s(Z))),
        (COST, (s(A) - s(Y)) ** 2),
    ]


class NumericNeuron(NumericModel):
    """The same neuron in NumPy."""

    def _forward(self, values, get) -> None:
        sigma = PRIMITIVES["sigmoid"].reference
        values[Z] = get(W, Z) * get(X, Z) + get(B, Z)
        values[A] = float(sigma(np.float64(get(Z, A))))
        values[COST] = (get(A, COST) - get(Y, COST)) ** 2


SHAPE = NeuronShape()
NEURON = Unrolled(SHAPE, SymbolicModel(SHAPE, neuron_equations()), NumericNeuron(SHAPE))

LINES = (
    "# One neuron",
    "",
    r"$$\frac{\partial C}{\partial w} = 2(a - y)\,\sigma'(z)\,x$$",
    "",
    r"$$\frac{\partial C}{\partial b} = 2(a - y)\,\sigma'(z)\,x$$",
    "",
    r"$$\frac{\partial C}{\partial x} = 2(a - y)\,\sigma'(z)\,w)$$",
)
CORRECTED_B = r"\frac{\partial C}{\partial b} = 2(a - y)\,\sigma'(z)"
CORRECTED_X = r"\frac{\partial C}{\partial x} = 2(a - y)\,\sigma'(z)\,w"


def upstream(c):
    # 2(a - y) sigma'(z), in either context.
    return 2 * (c.v(A) - c.v(Y)) * c.sigma_prime(c.v(Z))


def neuron_formulas() -> list[Formula]:
    def models():
        return [NEURON]

    fix_b = Formula(
        "neuron.dC_db.corrected",
        5,
        5,
        models,
        wrt=lambda: B,
        readings={"corrected": upstream},
        latex=CORRECTED_B,
    )
    fix_x = Formula(
        "neuron.dC_dx.corrected",
        7,
        7,
        models,
        wrt=lambda: X,
        readings={"corrected": lambda c: upstream(c) * c.v(W)},
        latex=CORRECTED_X,
    )
    return [
        Formula(
            "neuron.dC_dw",
            3,
            3,
            models,
            wrt=lambda: W,
            readings={"as printed": lambda c: upstream(c) * c.v(X)},
        ),
        Formula(
            "neuron.dC_db",
            5,
            5,
            models,
            wrt=lambda: B,
            readings={"as printed": lambda c: upstream(c) * c.v(X)},
            corrected=CORRECTED_B,
            fix=fix_b,
        ),
        Formula(
            "neuron.dC_dx",
            7,
            7,
            models,
            wrt=lambda: X,
            readings={"as printed": lambda c: upstream(c) * c.v(W)},
            corrected=CORRECTED_X,
            fix=fix_x,
        ),
    ]


def neuron_paper() -> Paper:
    return Paper("one-neuron.md", lambda: LINES, neuron_formulas)


def fd_total(point, key) -> float:
    return NEURON.numeric.fd(point, COST, key)


def rel(x: float, ref: float) -> float:
    return abs(x - ref) / max(abs(x), abs(ref), 1e-2)


def test_the_engine_decides_a_second_paper():
    paper = neuron_paper()
    findings = paper.verify()
    assert [f.id for f in findings] == ["neuron.dC_dw", "neuron.dC_db", "neuron.dC_dx"]
    assert all(f.verdict in VERDICTS and f.file == "one-neuron.md" for f in findings)
    right, wrong, stray = findings
    # Each finding carries its own lines of the paper.
    assert (right.line, right.source) == (3, LINES[2])
    assert (wrong.line, wrong.source) == (5, LINES[4])
    assert right.verdict == HOLDS and right.corrected is None
    assert "brackets: every display balances" in right.checks
    # The wrong formula fails at a counterexample and gets its correction, which holds.
    assert wrong.verdict == FAILS
    assert wrong.corrected == CORRECTED_B
    assert wrong.counterexample["model"] == SHAPE.name
    assert any(c.startswith("corrected form holds: ") for c in wrong.checks)
    assert paper.verify_formula("neuron.dC_db.corrected").verdict == HOLDS
    # The stray ')' makes the third ill-formed, though its value is right.
    assert stray.verdict == ILL_FORMED
    assert stray.corrected == CORRECTED_X
    assert bracket_problems(LINES[6]) == ["the display closes 1 ')' never opened"]
    assert "reading 'as printed' holds" in stray.detail


def test_second_paper_verdicts_agree_with_finite_differences():
    # Independent of the verdicts: the NumPy model's total derivatives at a fresh point
    # against each formula as written.
    point = NEURON.numeric.random_point(SEED)
    ctx = NumericContext(NEURON, point)
    printed = {f.id: f.readings["as printed"] for f in neuron_formulas()}
    assert rel(float(printed["neuron.dC_dw"](ctx)), fd_total(point, W)) < 1e-6
    assert rel(float(printed["neuron.dC_dx"](ctx)), fd_total(point, X)) < 1e-6
    assert rel(float(printed["neuron.dC_db"](ctx)), fd_total(point, B)) > 1e-4
    assert rel(float(upstream(ctx)), fd_total(point, B)) < 1e-6


def test_second_paper_counterexample_recomputed():
    cx = neuron_paper().verify_formula("neuron.dC_db").counterexample
    by_label = {label(k): k for k in SHAPE.leaves()}
    point = {by_label[name]: value for name, value in cx["point"].items()}
    ctx = NumericContext(NEURON, point)
    x = point[X]
    assert rel(float(upstream(ctx)) * x, cx["formula"]) < 1e-6
    assert rel(fd_total(point, B), cx["total"]) < 1e-6
    assert rel(cx["formula"], cx["total"]) > 1e-4


def test_papers_are_independent_and_the_engine_imports_none():
    # Two papers decide their own formulas; importing the engine loads no paper.
    first, second = neuron_paper(), neuron_paper()
    assert first.verify_formula("neuron.dC_dw") == second.verify_formula("neuron.dC_dw")
    code = (
        "import sys, symbolic.verify.engine; "
        "print(sorted(m for m in sys.modules if m.startswith('symbolic.verify')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = done.stdout
    assert "symbolic.verify.engine" in loaded
    assert "moraes2020" not in loaded and "claims" not in loaded


def test_bracket_problems_counts_per_display():
    assert bracket_problems(r"f(x) &= (a \\ &\quad + b)") == []
    assert bracket_problems(r"\left( x \right) [t \ge 2]") == []
    assert len(bracket_problems("$$(a$$\n\n$$b)$$")) == 2
    assert bracket_problems("$$(a)$$\n\n$$b)$$") == ["display 2 of 2 closes 1 ')' never opened"]
