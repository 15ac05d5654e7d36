"""`derivgen verify SPEC`: claims are decided as single-step gradients.

Each verdict is checked against an oracle that does not use the derivation: central
finite differences of the generated GRN forward pass at T = 1 (one step), with the
upstream gradient dC/da = c at that step.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from generated import grn_numpy
from symbolic.cli import main
from symbolic.parse import SpecError
from symbolic.verdict import FAILS, HOLDS, ILL_FORMED
from symbolic.verify import verify_specs

EXAMPLE = (
    Path(__file__).resolve().parent.parent / "symbolic" / "specs" / "examples" / "grn_claims.toml"
)


@pytest.fixture(scope="module")
def findings():
    return {f.id: f for f in verify_specs([EXAMPLE])}


def _one_step(seed=0):
    """A one-step GRN point, its forward values, and FD gradients of C = sum c*a."""
    rng = np.random.default_rng(seed)
    n_in, n_out = 3, 4
    params = {
        k: v + rng.uniform(-0.5, 0.5, v.shape)
        for k, v in grn_numpy.init_params(n_in, n_out, seed=seed).items()
    }
    x = rng.standard_normal((1, 1, n_in))
    h = rng.standard_normal((1, n_out))
    c = rng.uniform(0.5, 1.5, (1, 1, n_out))

    def cost(p, x, h):
        return float(np.sum(c * grn_numpy.forward(p, x, {"h": h})[0]))

    def fd(fn, value):
        grad = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[idx] += 1e-6
            minus[idx] -= 1e-6
            grad[idx] = (fn(plus) - fn(minus)) / 2e-6
        return grad

    truth = {
        name: fd(lambda v, n=name: cost({**params, n: v}, x, h), value)
        for name, value in params.items()
    }
    truth["x"] = fd(lambda v: cost(params, v, h), x)[0, 0]
    truth["h"] = fd(lambda v: cost(params, x, v), h)[0]
    zu = params["WTu"] * h[0] + params["WXu"] @ x[0, 0] + params["Bu"]
    zc = params["WTc"] * h[0] + params["WXc"] @ x[0, 0] + params["Bc"]
    g = 1 / (1 + np.exp(-zu))
    ac = np.tanh(zc)
    values = dict(params, x=x[0, 0], h=h[0], G=g, ac=ac, dC_da=c[0, 0], Zu=zu, Zc=zc)
    return values, truth


def test_every_claim_is_decided_with_its_line(findings):
    lines = EXAMPLE.read_text().splitlines()
    for finding in findings.values():
        assert finding.verdict in (HOLDS, FAILS)
        assert lines[finding.line - 1].startswith(finding.id)


@pytest.mark.parametrize(
    "key, formula",
    [
        ("dC_dWTc", lambda v: v["dC_da"] * v["G"] * (1 - v["ac"] ** 2) * v["h"]),
        ("dC_dWTu", lambda v: v["dC_da"] * (v["ac"] - v["h"]) * v["G"] * (1 - v["G"]) * v["h"]),
        ("dC_dBc", lambda v: v["dC_da"] * v["G"] * (1 - v["ac"] ** 2)),
        ("dC_dBu", lambda v: v["dC_da"] * (v["ac"] - v["h"]) * v["G"] * (1 - v["G"])),
        (
            "dC_dWXu",
            lambda v: np.outer(v["dC_da"] * (v["ac"] - v["h"]) * v["G"] * (1 - v["G"]), v["x"]),
        ),
        ("dC_dWXc", lambda v: np.outer(v["dC_da"] * v["G"] * (1 - v["ac"] ** 2), v["x"])),
        (
            "dC_dx",
            lambda v: (
                v["WXc"].T @ (v["dC_da"] * v["G"] * (1 - v["ac"] ** 2))
                + v["WXu"].T @ (v["dC_da"] * (v["ac"] - v["h"]) * v["G"] * (1 - v["G"]))
            ),
        ),
    ],
)
def test_holding_claims_equal_finite_differences(findings, key, formula):
    """The claim as written (transcribed to NumPy) equals the one-step FD gradient."""
    assert findings[key].verdict == HOLDS
    values, truth = _one_step()
    np.testing.assert_allclose(formula(values), truth[key[4:]], rtol=1e-6, atol=1e-9)


def test_the_misplaced_bracket_fails_and_its_correction_holds(findings):
    finding = findings["dC_dh"]
    assert finding.verdict == FAILS
    values, truth = _one_step()
    v = values
    as_printed = (
        v["dC_da"] * ((1 - v["G"]) + v["G"] * (1 - v["ac"] ** 2) * v["WTc"])
        + (v["ac"] - v["h"]) * v["G"] * (1 - v["G"]) * v["WTu"]
    )
    assert not np.allclose(as_printed, truth["h"], rtol=1e-3)
    corrected = v["dC_da"] * (
        (1 - v["G"])
        + v["G"] * (1 - v["ac"] ** 2) * v["WTc"]
        + (v["ac"] - v["h"]) * v["G"] * (1 - v["G"]) * v["WTu"]
    )
    np.testing.assert_allclose(corrected, truth["h"], rtol=1e-6)
    # the reported counterexample is real: its two values differ
    ce = finding.counterexample
    assert not np.allclose(ce["finite_difference"], ce["claim"], rtol=1e-4)


def test_corrected_form_verifies(tmp_path, findings):
    text = EXAMPLE.read_text()
    start = text.index("dC_dh   =")
    line_end = text.index("\n", start)
    fixed = text[:start] + f'dC_dh   = "{findings["dC_dh"].corrected}"' + text[line_end:]
    spec = tmp_path / "fixed.toml"
    spec.write_text(fixed)
    verdicts = {f.id: f.verdict for f in verify_specs([spec])}
    assert verdicts["dC_dh"] == HOLDS


def test_input_claim_not_written_as_transposed_products_is_ill_formed(tmp_path):
    text = EXAMPLE.read_text()
    start = text.index("dC_dx   =")
    line_end = text.index("\n", start)
    bad = text[:start] + 'dC_dx   = "dC_da*G"' + text[line_end:]
    spec = tmp_path / "bad.toml"
    spec.write_text(bad)
    finding = {f.id: f for f in verify_specs([spec])}["dC_dx"]
    assert finding.verdict == ILL_FORMED
    assert "M.T @ v" in finding.detail


def test_claim_about_an_unknown_symbol_is_a_spec_error(tmp_path):
    spec = tmp_path / "unknown.toml"
    spec.write_text(
        textwrap.dedent(
            """
            name = "cell"
            kind = "feedforward"
            input = "x"
            output = "a"
            [params]
            W = "matrix"
            [equations]
            a = "tanh(W@x)"
            [claims]
            dC_dV = "dC_da"
            """
        )
    )
    with pytest.raises(SpecError) as info:
        verify_specs([spec])
    assert "unknown.toml:11" in str(info.value) and "dC_dV" in str(info.value)


def test_cli_json_and_exit_codes(capsys):
    assert main(["verify", "--json", str(EXAMPLE)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"id", "line", "source", "verdict", "corrected"} <= set(rows[0])
    assert main(["verify", "--strict", str(EXAMPLE)]) == 1
