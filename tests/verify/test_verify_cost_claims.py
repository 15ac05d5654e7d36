"""Claims on costs (``[claims]`` of a cost spec: ``dC_d<prediction>``).

The shipped costs' claims hold; textbook formulas hold where they are exact (squared
error, cross-entropy on sigmoid outputs, softmax cross-entropy with ``sum(y)``) and a
wrong one ``fails`` with a counterexample and the corrected form, which itself holds
when written back as a claim. The oracles are SymPy's derivative of unrolled rows and
finite differences of the reference evaluator, never the derivation.
"""

from __future__ import annotations

import json

import pytest
from cli_helpers import derivgen

from symbolic import parse
from symbolic.generate import builtin_specs
from symbolic.model import Cost
from symbolic.verify import verify_specs
from symbolic.verify.cost_claims import verify_cost
from symbolic.verify.verdict import FAILS, HOLDS

SPECS = {path.stem: path for path in builtin_specs()}


def _cost(per_unit: str, claim: str, inputs: str = "") -> Cost:
    text = (
        'name = "c"\nkind = "cost"\nprediction = "a"\ntarget = "y"\n'
        f'per_unit = "{per_unit}"\n'
        + (f"[inputs]\n{inputs}\n" if inputs else "")
        + f'[claims]\ndC_da = "{claim}"\n'
    )
    return parse.loads(text, "claims.toml")


@pytest.mark.parametrize("name", ["masked_squared_error", "weighted_softmax_cross_entropy"])
def test_shipped_cost_claims_hold(name):
    findings = verify_specs([SPECS[name]])
    assert [f.verdict for f in findings] == [HOLDS]
    assert any("symbolic: equals" in c for c in findings[0].checks)


@pytest.mark.parametrize(
    ("per_unit", "claim", "inputs"),
    [
        ("(a - y)**2", "2*(a - y)", ""),
        ("-(y*log(a) + (1 - y)*log(1 - a))", "(a - y)/(a*(1 - a))", ""),
        ("y*(log(sum(exp(a - max(a)))) + max(a) - a)", "sum(y)*exp(a)/sum(exp(a)) - y", ""),
        ("w*(a - y)**2", "2*w*(a - y)", 'w = "unit"'),
        ("sigmoid(a)*m", "m*sigmoid_prime(a)", 'm = "row"'),
    ],
)
def test_textbook_claims_hold(per_unit, claim, inputs):
    (finding,) = verify_cost(_cost(per_unit, claim, inputs))
    assert finding.verdict == HOLDS, finding.detail
    assert finding.corrected is None


def test_a_claim_without_the_mask_fails_with_its_correction():
    cost = _cost("m*(a - y)**2", "2*(a - y)", 'm = "row"')
    (finding,) = verify_cost(cost)
    assert finding.verdict == FAILS
    assert finding.counterexample["relative_error"] > 1e-3
    assert finding.corrected == "2*m*(a - y)"
    assert "corrected form, checked the same way: holds" in finding.checks
    (again,) = verify_cost(_cost("m*(a - y)**2", finding.corrected, 'm = "row"'))
    assert again.verdict == HOLDS


def test_softmax_minus_target_needs_a_distribution():
    # softmax(a) - y is the derivative only where the target sums to 1: read for any
    # target, it fails, and the correction (max's shift cancelled) holds
    per_unit = "y*(log(sum(exp(a - max(a)))) + max(a) - a)"
    (finding,) = verify_cost(_cost(per_unit, "exp(a)/sum(exp(a)) - y"))
    assert finding.verdict == FAILS
    assert "max_share" not in finding.corrected
    (again,) = verify_cost(_cost(per_unit, finding.corrected))
    assert again.verdict == HOLDS


def test_verify_command_on_a_cost(tmp_path):
    spec = tmp_path / "wrong.toml"
    spec.write_text(
        'name = "wrong"\nkind = "cost"\nprediction = "a"\ntarget = "y"\n'
        'per_unit = "(a - y)**2"\n[claims]\ndC_da = "a - y"\n'
    )
    done = derivgen("verify", "--json", str(spec), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert (row["id"], row["line"], row["verdict"]) == ("dC_da", 7, "fails")
    assert row["corrected"] == "2*(a - y)"
    strict = derivgen("verify", "--strict", str(spec), cwd=tmp_path)
    assert strict.returncode == 1


def test_a_cost_without_claims_is_refused(tmp_path):
    spec = tmp_path / "plain.toml"
    text = SPECS["squared_error"].read_text(encoding="utf-8")
    spec.write_text(
        text.split("[claims]")[0].replace('"squared_error"', '"plain"'), encoding="utf-8"
    )
    done = derivgen("verify", str(spec), cwd=tmp_path)
    assert done.returncode == 2
    assert "no [claims]" in done.stderr


def test_the_shipped_costs_claims_hold(tmp_path):
    # the textbook derivatives stated in squared_error, cross_entropy and
    # softmax_cross_entropy (softmax(a) - y, scaled by sum(y) for a general target)
    names = ("squared_error", "cross_entropy", "softmax_cross_entropy")
    done = derivgen("verify", "--json", *(str(SPECS[n]) for n in names), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [(f["id"], f["verdict"]) for f in found] == [("dC_da", "holds")] * 3
