"""Tests of claims written in a paper's LaTeX (symbolic.verify.latex_claims).

Golden: each LaTeX claim of the example spec is read into the very claim the
hand-written example (grn_claims.toml) states in the claim language (the same
polynomial), and gets the same verdict, decided against finite differences. Errors name
the spec's line and the symbol; existing ``[claims]`` are untouched.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import sympy as sp

from symbolic.cli import main
from symbolic.parse import SpecError, load
from symbolic.verify.claims import NumericStep, verify_specs
from symbolic.verify.latex_claims import latex_claims
from symbolic.verify.verdict import FAILS, HOLDS

EXAMPLES = Path(__file__).resolve().parents[2] / "symbolic" / "specs" / "examples"
LATEX = EXAMPLES / "grn_latex_claims.toml"
WRITTEN = EXAMPLES / "grn_claims.toml"


def test_each_latex_claim_is_the_hand_written_claim():
    written = {c.key: c for c in load(WRITTEN).claims}
    read = latex_claims(load(LATEX))
    assert [r.claim.key for r in read] == ["dC_dBc", "dC_dWTu", "dC_dWXc", "dC_dx", "dC_dh"]
    for claim in (r.claim for r in read):
        twin = written[claim.key]
        assert claim.source.startswith(r"\frac{\partial C}"), claim.key
        assert claim.wrt == twin.wrt
        if claim.transposed:
            # M.T @ v terms: the same matrices with the same vectors
            mine = sorted((m, sp.expand(v)) for m, v in claim.transposed.values())
            theirs = sorted((m, sp.expand(v)) for m, v in twin.transposed.values())
            assert [m for m, _ in mine] == [m for m, _ in theirs]
            assert all(sp.expand(a - b) == 0 for (_, a), (_, b) in zip(mine, theirs, strict=True))
        else:
            assert sp.expand(claim.expr - twin.expr) == 0, claim.key


def test_latex_claims_get_the_written_claims_verdicts_by_finite_differences():
    findings = {f.id: f for f in verify_specs([LATEX])}
    assert {k: f.verdict for k, f in findings.items()} == {
        "dC_dBc": HOLDS,
        "dC_dWTu": HOLDS,
        "dC_dWXc": HOLDS,
        "dC_dx": HOLDS,
        "dC_dh": FAILS,
    }
    assert (
        findings["dC_dh"].line
        == LATEX.read_text()
        .split("\n")
        .index(next(line for line in LATEX.read_text().split("\n") if line.startswith("dC_dh")))
        + 1
    )
    assert findings["dC_dh"].source.startswith(r"\frac{\partial C}{\partial^{t-1} a_j^l}")
    assert findings["dC_dh"].checks[0].startswith("read in the claim language: ")
    # independently: the claim read from LaTeX against central differences of the step
    cell = load(LATEX)
    claims = {r.claim.key: r.claim for r in latex_claims(cell)}
    step = NumericStep(cell, 5)
    for key in ("dC_dBc", "dC_dh"):
        truth, value = step.gradient(key[4:]), step.evaluate_claim(claims[key])
        gap = abs(truth - value).max() / abs(truth).max()
        assert (gap < 1e-6) == (key == "dC_dBc"), (key, gap)


def _spec(tmp_path, claims: str, extra: str = "") -> Path:
    text = LATEX.read_text().split("[latex_claims]")[0]
    spec = tmp_path / "mine.toml"
    spec.write_text(text + "[latex_claims]\n" + extra + textwrap.dedent(claims))
    return spec


def test_an_mlp_claim_in_the_papers_notation(tmp_path):
    spec = tmp_path / "dense.toml"
    spec.write_text(
        textwrap.dedent(
            r"""
            name = "dense"
            kind = "feedforward"
            input = "x"
            output = "a"
            [params]
            W = "matrix"
            B = "vector"
            [equations]
            z = "W@x + B"
            a = "sigmoid(z)"
            [latex_claims]
            dC_dW = '''\frac{\partial C}{\partial W_{ji}^l} = \sigma'(z_j^{l+1})(a_i^l) \frac{\partial C}{\partial a_j^{l+1}}'''
            dC_dB = '''\frac{\partial C}{\partial B_i^l} = \sigma'(z_i^l)(2) \frac{\partial C}{\partial a_i^l}'''
            """
        )
    )
    findings = {f.id: f.verdict for f in verify_specs([spec])}
    assert findings == {"dC_dW": HOLDS, "dC_dB": FAILS}


@pytest.mark.parametrize(
    ("claim", "symbol", "words"),
    [
        (r"dC_dBc = '''\frac{\partial C}{\partial Bc_j^l} = {}^t Q_j^l'''", "Q", "does not know"),
        (
            r"dC_dBc = '''\frac{\partial C}{\partial Bc_j^l} = \sum_{t=1}^{T} {}^t G_j^l'''",
            "t",
            "one step",
        ),
        (r"dC_dBu = '''\frac{\partial C}{\partial Bc_j^l} = {}^t G_j^l'''", "Bc", "the key"),
        (r"dC_dBc = '''\frac{\partial C}{\partial Bc_j^l} = {}^t G_k^l'''", r"\Gamma", "neuron"),
    ],
)
def test_a_bad_latex_claim_is_a_spec_error_naming_its_line(tmp_path, claim, symbol, words):
    spec = _spec(tmp_path, claim.replace(r"G_k", r"\Gamma_k") + "\n")
    with pytest.raises(SpecError) as exc:
        verify_specs([spec])
    assert exc.value.line == len(spec.read_text().split("\n")) - 1
    assert words in str(exc.value)
    assert f"'{symbol}'" in str(exc.value)
    assert main(["verify", str(spec)]) == 2


def test_another_notation_file_relative_to_the_spec(tmp_path):
    notation = tmp_path / "mine.notation.toml"
    text = (
        EXAMPLES.parents[1] / "papers" / "neural-networks-derivatives.notation.toml"
    ).read_text()
    notation.write_text(text.replace('"\\\\Gamma" = "G"', '"\\\\gamma" = "G"'))
    claim = r"dC_dBc = '''\frac{\partial C}{\partial Bc_j^l} = \frac{\partial C}{\partial^t a_j^l} {}^t \gamma_j^l \tanh'({}^t Zc_j^l)'''"
    spec = _spec(tmp_path, claim + "\n", 'notation = "mine.notation.toml"\nsection = "grn"\n')
    assert [f.verdict for f in verify_specs([spec])] == [HOLDS]


@pytest.mark.parametrize(
    "claim",
    [
        # the input's gradient without its WXu term: the correction sums over the layer
        r"dC_dx = '''\frac{\partial C}{\partial^t a_i^{l-1}} = \sum_{j=0}^{n^l-1} "
        r"\frac{\partial C}{\partial^t a_j^l} \cdot {}^t\Gamma_j^l \cdot \tanh'({}^tZc_j^l)"
        r" \cdot WXc_{ji}^{l-1}'''",
        # a matrix entry's gradient without its gate
        r"dC_dWXc = '''\frac{\partial C}{\partial WXc_{ji}^{l-1}} = \frac{\partial C}"
        r"{\partial^t a_j^l} \cdot \tanh'({}^t Zc_j^l) \cdot {}^t a_i^{l-1}'''",
    ],
    ids=["input", "matrix"],
)
def test_a_failing_latex_claims_correction_is_printed_in_the_papers_notation(tmp_path, claim):
    spec = _spec(tmp_path, claim + "\n")
    (finding,) = verify_specs([spec])
    assert finding.verdict == FAILS
    assert finding.corrected.startswith(claim.split("= '''")[1].split(" = ")[0] + " = ")
    assert "corrected form, in the paper's notation, read back: holds" in finding.checks
    # the correction, as a claim of its own, holds (decided against finite differences)
    fixed = _spec(tmp_path, f"{claim.split(' = ')[0]} = '''{finding.corrected}'''\n")
    assert [f.verdict for f in verify_specs([fixed])] == [HOLDS]
