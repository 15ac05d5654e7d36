"""The recurrence analysis' data (symbolic/recurrence.py): a diagonal recurrence's adjoint
step as coefficients times seeds, checked against the GRN's coefficients derived by hand
and against the adjoint program it decomposes; none for the cells it does not apply to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from spec_strategies import cells

from symbolic import generate, naming, parse, recurrence
from symbolic.bench import reference
from symbolic.derive import derive
from symbolic.ir import COUPLED, DIAGONAL, Assign, MatVec
from symbolic.lower import lower

SPECS = {path.stem: path for path in generate.builtin_specs()}
#: The recurrent cells among the built-in specs and the regression specs.
RECURRENT = [
    path
    for path in [*SPECS.values(), *sorted((Path(__file__).parent / "regressions").glob("*.toml"))]
    if parse.load(path).kind == "recurrent"
]


def kernel_of(path):
    return lower(derive(parse.load(path)))


def decomposes(kernel) -> None:
    """Each adjoint the analysis covers equals sum(coefficient x seed) once the step's
    adjoint program is inlined, and no coefficient reads a seed."""
    scan = kernel.adjoint_scan
    seeds = [sp.Symbol(s) for s in scan.seeds]
    defs = {
        sp.Symbol(st.target): st.expr
        for st in kernel.backward
        if isinstance(st, Assign) and st is not scan.combined
    }
    for adjoint in scan.coeff:
        value = sp.Symbol(adjoint)
        while value.free_symbols & defs.keys():
            value = value.xreplace(defs)
        rest = value
        for seed in seeds:
            coefficient = scan.expanded(adjoint, seed.name)
            assert not coefficient.free_symbols & set(seeds), (adjoint, seed, coefficient)
            assert sp.expand(sp.diff(value, seed) - coefficient) == 0, (adjoint, seed)
            rest -= coefficient * seed
        assert sp.expand(rest) == 0, (adjoint, rest)


# --- the GRN, against its coefficients derived by hand ---------------------------------


def test_grn_seeds():
    """The GRN's output is its state's next value (a = ^t a, h = ^{t-1} a): one seed, the
    output's adjoint da = da_in + dh_next, summed in the scan."""
    scan = kernel_of(SPECS["grn"]).adjoint_scan
    assert scan.seeds == ["da"]
    assert (scan.upstream, scan.seed_out, scan.out_state) == ("da_in", "da", "h")
    assert scan.combined is not None and scan.combined.target == "da"
    assert sp.expand(scan.combined.expr - sp.Symbol("da_in") - sp.Symbol("dh_next")) == 0


def test_grn_coefficients_are_the_hand_derived_ones():
    """Section 2 of the paper, derived by hand (the bench's careful NumPy GRN uses the
    same): dZu = (ac - h) G (1 - G) da, dZc = G (1 - ac^2) da, and the adjoint carried to
    the step before dh = ((1 - G) + WTu*cu + WTc*cc) da."""
    scan = kernel_of(SPECS["grn"]).adjoint_scan
    G, ac, h, WTu, WTc = sp.symbols("G ac h WTu WTc")
    cu = (ac - h) * G * (1 - G)
    cc = G * (1 - ac**2)
    hand = {"dZu": cu, "dZc": cc, "dh": (1 - G) + WTu * cu + WTc * cc}
    assert set(scan.coeff) == set(hand)
    for adjoint, expected in hand.items():
        assert sp.expand(scan.expanded(adjoint, "da") - expected) == 0, adjoint


def test_grn_coefficients_agree_with_the_hand_written_numpy():
    """The same coefficients as numbers: the bench's hand-written GRN backward (a second
    implementation) at random forward values."""
    scan = kernel_of(SPECS["grn"]).adjoint_scan
    rng = np.random.default_rng(0)
    g, c, h = rng.uniform(0.05, 0.95, (3, 4, 5))
    wtu, wtc = rng.standard_normal((2, 5))
    cu, cc, jac = reference._adjoint_coefficients(g, c, h, wtu, wtc)
    values = {"G": g, "ac": c, "h": h, "WTu": wtu, "WTc": wtc}
    for adjoint, expected in {"dZu": cu, "dZc": cc, "dh": jac}.items():
        expr = scan.expanded(adjoint, "da")
        args = sorted(expr.free_symbols, key=str)
        got = sp.lambdify(args, expr, "numpy")(*(values[a.name] for a in args))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_grn_coefficient_programs_name_each_value_once():
    """The programs compute each coefficient once, in order: a value no seed reaches
    (1 - G) first, then each adjoint's coefficient (``_dZu_per_da``), before any reader."""
    scan = kernel_of(SPECS["grn"]).adjoint_scan
    targets = [st.target for st in scan.programs]
    assert len(targets) == len(set(targets))
    assert {naming.coefficient(a, "da") for a in ("dZu", "dZc", "dh")} <= set(targets)
    for index, st in enumerate(scan.programs):
        later = {s.target for s in scan.programs[index:]}
        assert not {s.name for s in st.expr.free_symbols} & later, st
    assert scan.coeff["dh"]["da"] == sp.Symbol("_dh_per_da")


def test_the_kernel_prints_its_coefficients():
    text = str(kernel_of(SPECS["grn"]))
    assert "# adjoint step as coefficients times seeds" in text
    assert "# seeds: da" in text
    assert "dh = (_dh_per_da)*da" in text


# --- where it applies, and where not ----------------------------------------------------


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_a_matrix_coupled_recurrence_has_none(name):
    kernel = kernel_of(SPECS[name])
    assert kernel.recurrence == COUPLED
    assert kernel.adjoint_scan is None


@pytest.mark.parametrize("name", ["dense_tanh", "dense_linear"])
def test_a_feedforward_cell_has_none(name):
    assert kernel_of(SPECS[name]).adjoint_scan is None


def test_several_seeds():
    """A cell with two states, neither the output's: the seeds are the output's upstream
    gradient and each state's carried adjoint."""
    kernel = lower(
        derive(
            parse.loads(
                """
name = "two_states"
title = "two diagonal states"
kind = "recurrent"
input = "x"
output = "a"
state = { h = "p", m = "q" }
[params]
W = "matrix"
u = "vector"
[equations]
z = "W@x"
p = "tanh(u*h + z)"
q = "m*p + z"
a = "p*q"
""",
                "two_states.toml",
            )
        )
    )
    scan = kernel.adjoint_scan
    assert kernel.recurrence == DIAGONAL and scan.combined is None
    assert scan.seeds == ["da_in", "dh_next", "dm_next"]
    decomposes(kernel)


def coupled(kernel) -> bool:
    """Whether a product with a matrix couples the lanes of a step."""
    return kernel.recurrence == COUPLED or any(isinstance(s, MatVec) for s in kernel.backward)


@pytest.mark.parametrize("path", RECURRENT, ids=lambda p: p.stem)
def test_the_coefficients_give_back_the_adjoint_step(path):
    """Every recurrent cell but a matrix-coupled one has coefficients, and they give
    back its adjoint step."""
    kernel = kernel_of(path)
    assert (kernel.adjoint_scan is None) == coupled(kernel)
    if kernel.adjoint_scan is not None:
        decomposes(kernel)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(cells(kinds=("recurrent",)))
def test_random_cells_have_coefficients_unless_coupled(example):
    """Every random recurrent cell either couples its lanes through a matrix or has its
    adjoint step as coefficients times seeds, which give back the step."""
    kernel = lower(derive(parse.loads(example.text, "fuzz-recurrent.toml")))
    assert (kernel.adjoint_scan is None) == coupled(kernel)
    if kernel.adjoint_scan is not None:
        decomposes(kernel)


# --- the parallel scan reads the same coefficients; the state-free statements ---------


def test_mingru_scan_coefficient_is_its_adjoint_coefficient():
    """minGRU, h_t = (1 - z_t) h_{t-1} + z_t hc_t: A_t = 1 - z_t, by hand, is both the
    affine coefficient the scan runs and the adjoint's dh = (1 - z) da."""
    kernel = kernel_of(SPECS["mingru"])
    z = sp.Symbol("z")
    assert sp.expand(kernel.scan.coeff - (1 - z)) == 0
    assert sp.expand(kernel.adjoint_scan.expanded("dh", "da") - (1 - z)) == 0
    assert [st.target for st in kernel.scan.after] == ["a"]


def test_a_step_that_is_not_affine_gets_no_scan():
    kernel = kernel_of(Path(__file__).parent / "regressions" / "step_is_not_affine.toml")
    assert kernel.scan is None and kernel.adjoint_scan is not None


def test_state_free_statements():
    """What reads no state, even through another statement, is free; a product stays in
    the loop."""
    x, h = sp.symbols("x h")
    stmts = [
        Assign("p", 2 * x, ""),
        Assign("q", h * x, ""),
        Assign("r", sp.Symbol("q") + 1, ""),
        MatVec("m", "W", "p", False, ""),
        Assign("s", sp.Symbol("p") ** 2, ""),
    ]
    free, rest = recurrence.state_free(stmts, {"h"})
    assert [st.target for st in free] == ["p", "s"]
    assert [st.target for st in rest] == ["q", "r", "m"]
