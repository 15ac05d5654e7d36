"""Tests of the paper's verdicts (symbolic.verify.moraes2020).

Each verdict is proved by a check of its own, never by reading the verdict back: the
NumPy model's finite differences against the formula evaluated numerically at a point
the verification did not use, the counterexample recomputed, the brackets recounted,
the free index varied, and, for the formulas that do not hold, the NumPy terms of the
paper written out again here by hand. The oracle itself (symbolic.verify.unrolled) is
tested in test_verify_unrolled.py, the engine on a paper of its own in
test_verify_engine.py.
"""

# ruff: noqa: E741 (l is the paper's layer index throughout)

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from symbolic.primitives import PRIMITIVES
from symbolic.verify.engine import bracket_problems
from symbolic.verify.moraes2020 import (
    formula,
    formulas,
    paper_lines,
    verify_formula,
    verify_paper,
)
from symbolic.verify.unrolled import (
    COST,
    NoSuchNeuron,
    NumericContext,
    grn,
    label,
    mlp,
)
from symbolic.verify.verdict import (
    AMBIGUOUS,
    FAILS,
    HOLDS,
    HOLDS_LOCALLY,
    ILL_FORMED,
    VERDICTS,
)

ROOT = Path(__file__).resolve().parents[2]  # the repository
SHARED_PAPER = ROOT.parent / "shared" / "paper" / "neural-networks-derivatives.md"
SEED = 11  # a random point the verification itself does not use
AGREE = 1e-6
DIFFER = 1e-4
IDS = [f.id for f in formulas()]


def rel(x: float, ref: float) -> float:
    """Relative difference; derivatives below 1e-2 are compared in absolute terms (the
    rounding of a central difference at step 1e-6 is about 1e-9)."""
    return abs(x - ref) / max(abs(x), abs(ref), 1e-2)


def fd_total(model, point, key) -> float:
    return model.numeric.fd(point, COST, key)


def sigmoid(x):
    return PRIMITIVES["sigmoid"].reference(x)


# ----------------------------------------------------------------- the whole paper


def test_every_formula_is_decided_and_serialisable():
    findings = verify_paper()
    assert [f.id for f in findings] == IDS
    undecided = [(f.id, f.detail) for f in findings if f.verdict not in VERDICTS]
    assert not undecided
    json.dumps([f.to_json() for f in findings])


def test_ids_are_distinct_and_lines_point_at_their_source():
    corrected = [formula(i).fix.id for i in IDS if formula(i).fix is not None]
    assert len(set(IDS)) == len(IDS)
    assert not set(IDS) & set(corrected)
    text = paper_lines()
    for found in verify_paper():
        first = found.source.split("\n")[0]
        assert first.strip(), found.id
        assert text[found.line - 1].startswith(first), (found.id, found.line)
        assert found.source in "\n".join(text), found.id


def test_packaged_paper_is_the_shared_paper_byte_for_byte():
    if not SHARED_PAPER.exists():
        pytest.skip(f"no shared copy of the paper at {SHARED_PAPER}")
    packaged = ROOT / "symbolic" / "papers" / SHARED_PAPER.name
    assert packaged.read_bytes() == SHARED_PAPER.read_bytes()
    assert "\n".join(paper_lines()) == SHARED_PAPER.read_text(encoding="utf-8")


def test_every_verdict_but_holds_has_a_corrected_form_that_holds():
    for found in verify_paper():
        if found.verdict == HOLDS:
            assert found.corrected is None, found.id
            continue
        assert found.corrected, found.id
        assert not bracket_problems(found.corrected), found.id
        fixed = verify_formula(formula(found.id).fix.id)
        assert fixed.verdict == HOLDS, (found.id, fixed.detail)


# ------------------------------------------------- each verdict, proved independently


def _cases(f, models=None):
    for model in models if models is not None else f.models():
        point = model.numeric.random_point(SEED)
        ctx = NumericContext(model, point)
        for idx in f.indices(model.shape):
            yield model, point, ctx, idx


def _holds_numerically(f, reading, models=None) -> float:
    # The largest difference between a reading and the NumPy total derivative.
    worst = 0.0
    for model, point, ctx, idx in _cases(f, models):
        truth = fd_total(model, point, f.wrt(**idx))
        worst = max(worst, rel(float(reading(ctx, **idx)), truth))
    return worst


def _prove_holds(f):
    for name, reading in f.readings.items():
        assert _holds_numerically(f, reading) < AGREE, name


def _prove_holds_locally(f):
    (reading,) = f.readings.values()
    at = {T: [m for m in f.models() if m.shape.T == T] for T in (1, 2)}
    # T = 1: the single step is the whole derivative.
    assert _holds_numerically(f, reading, at[1]) < AGREE
    # T = 2: not the total derivative somewhere, while the corrected form is.
    assert _holds_numerically(f, reading, at[2]) > DIFFER
    (fixed,) = f.fix.readings.values()
    assert _holds_numerically(f.fix, fixed, at[2]) < AGREE


def _prove_fails(f, found):
    cx = found.counterexample
    (model,) = [m for m in f.models() if m.name == cx["model"]]
    by_label = {label(k): k for k in model.shape.leaves()}
    point = {by_label[name]: value for name, value in cx["point"].items()}
    ctx = NumericContext(model, point)
    # the formula as printed: a repair of a symbol used against its meaning is no reading
    (reading,) = [r for name, r in f.readings.items() if name not in f.against]
    value = float(reading(ctx, **cx["indices"]))
    truth = fd_total(model, point, f.wrt(**cx["indices"]))
    assert rel(value, cx["formula"]) < AGREE and rel(truth, cx["total"]) < AGREE
    assert rel(value, truth) > DIFFER


def _outcome(reading, ctx, idx):
    try:
        return float(reading(ctx, **idx))
    except NoSuchNeuron:
        return None


def _prove_ambiguous(f):
    # Some case where the readings do not give the same thing (one cannot be evaluated,
    # or the values differ), and one reading that is the total derivative at T = 1.
    readings = list(f.readings.values())
    differ = False
    for _, _, ctx, idx in _cases(f):
        outcomes = [_outcome(r, ctx, idx) for r in readings]
        if None in outcomes and any(o is not None for o in outcomes):
            differ = True
        values = [o for o in outcomes if o is not None]
        if len(values) > 1 and rel(values[0], values[1]) > DIFFER:
            differ = True
    assert differ
    single = [m for m in f.models() if getattr(m.shape, "T", 1) == 1]
    good = [r for r in readings if all(_outcome(r, c, i) is not None for *_, c, i in _cases(f))]
    assert any(_holds_numerically(f, r, single) < AGREE for r in good)


def _unbalanced_displays(source: str) -> list[int]:
    # Recount: '(' minus ')' in each $$ display (rows of one aligned block together).
    displays = [d for d in source.split("$$") if d.strip()]
    return [d.count("(") - d.count(")") for d in displays if d.count("(") != d.count(")")]


def _prove_ill_formed(f):
    if _unbalanced_displays(f.source):
        return
    # Otherwise a free index: the printed right side changes when it varies.
    assert f.free, f.id
    (index, domain), *_ = f.free.items()
    for reading in f.readings.values():
        for model, _, ctx, idx in _cases(f):
            pair = list(domain(model.shape, idx))[:2]
            values = [_outcome(reading, ctx, {**idx, index: v}) for v in pair]
            if len(values) == 2 and None not in values and rel(*values) > DIFFER:
                return
    pytest.fail(f"{f.id}: neither an unbalanced display nor a free index that matters")


@pytest.mark.parametrize("formula_id", IDS)
def test_verdict_has_an_independent_proof(formula_id):
    f, found = formula(formula_id), verify_formula(formula_id)
    if f.custom is not None:  # sigma' (paper line 19): not a derivative of C
        xs = np.linspace(-6.0, 6.0, 25)
        h = 1e-6
        slope = (sigmoid(xs + h) - sigmoid(xs - h)) / (2 * h)
        assert found.verdict == HOLDS
        assert np.max(np.abs(slope - sigmoid(xs) * (1 - sigmoid(xs)))) < 1e-9
        return
    prove = {
        HOLDS: _prove_holds,
        HOLDS_LOCALLY: _prove_holds_locally,
        FAILS: lambda f: _prove_fails(f, found),
        AMBIGUOUS: _prove_ambiguous,
        ILL_FORMED: _prove_ill_formed,
    }[found.verdict]
    prove(f)


# ------------------------------------- the GRN rows that do not hold, written out by hand


def _grn_values(model, point):
    values = model.numeric.run(point)

    def v(kind, t, l, i):
        return values[(kind, t, l, i)]

    return values, v


def test_line_94_loses_the_factor_dC_dta_on_the_WTu_term():
    # dC/d^{t-1}a = dC/d^t a ((1-G) + G tanh' WTc) + (ac - h) sigma' WTu, as printed,
    # against the NumPy total: on the top layer at T = 1 (t = 1, ^0 a the initial state).
    model = grn((2, 2), 1, 1)
    point = model.numeric.random_point(SEED)
    values, v = _grn_values(model, point)
    for j in range(2):
        g, ac, h = v("G", 1, 2, j), v("ac", 1, 2, j), v("a", 0, 2, j)
        wtc, wtu = point[("WTc", 2, j)], point[("WTu", 2, j)]
        adjoint = fd_total(model, point, ("a", 1, 2, j))
        printed = adjoint * ((1 - g) + g * (1 - ac**2) * wtc) + (ac - h) * g * (1 - g) * wtu
        fixed = adjoint * ((1 - g) + g * (1 - ac**2) * wtc + (ac - h) * g * (1 - g) * wtu)
        truth = fd_total(model, point, ("a", 0, 2, j))
        assert rel(fixed, truth) < AGREE
        assert rel(printed, truth) > DIFFER


def test_line_87_has_a_free_index_j():
    # dC/d^t a_j^l times the sum over j: the value depends on which j is left outside.
    model = grn((2, 2), 1, 1)
    point = model.numeric.random_point(SEED)
    _, v = _grn_values(model, point)
    i = 0

    def right_side(j_outside):
        total = sum(
            v("G", 1, 2, j) * (1 - v("ac", 1, 2, j) ** 2) * point[("WXc", 1, j, i)]
            + (v("ac", 1, 2, j) - v("a", 0, 2, j))
            * v("G", 1, 2, j)
            * (1 - v("G", 1, 2, j))
            * point[("WXu", 1, j, i)]
            for j in range(2)
        )
        return fd_total(model, point, ("a", 1, 2, j_outside)) * total

    assert rel(right_side(0), right_side(1)) > DIFFER
    assert verify_formula("grn.dC_da_in.value").verdict == ILL_FORMED


@pytest.mark.parametrize(
    ("formula_id", "imbalance"),
    [("grn.dC_da_in.restated", [1, -1]), ("grn.dC_da_prev.restated", [-1])],
)
def test_split_restatements_have_unbalanced_displays(formula_id, imbalance):
    lines = paper_lines()
    f = formula(formula_id)
    displays = [lines[k - 1] for k in range(f.line, f.last + 1) if lines[k - 1].strip()]
    assert [d.count("(") - d.count(")") for d in displays if d.count("(") != d.count(")")] == (
        imbalance
    )
    assert verify_formula(formula_id).verdict == ILL_FORMED


def test_line_38_size_reading_runs_one_neuron_past_the_layer():
    f = formula("mlp.dC_da.recursion")
    last, size = f.readings.values()
    model = mlp((2, 2, 2))
    ctx = NumericContext(model, model.numeric.random_point(SEED))
    with pytest.raises(NoSuchNeuron):
        size(ctx, l=1, i=0)
    assert _holds_numerically(f, last) < AGREE
