"""`derivgen verify SPEC`: claims are decided as single-step gradients.

Each verdict is checked against an oracle that does not use the derivation: central
finite differences of the generated GRN forward pass at T = 1 (one step), with the
upstream gradient dC/da = c at that step.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from generated import grn_numpy
from symbolic.cli import main
from symbolic.parse import SpecError
from symbolic.verify.claims import verify_specs
from symbolic.verify.verdict import FAILS, HOLDS

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "symbolic" / "specs" / "examples" / "grn_claims.toml"
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


def test_input_claim_not_written_as_transposed_products_fails_with_its_repair(tmp_path):
    text = EXAMPLE.read_text()
    start = text.index("dC_dx   =")
    line_end = text.index("\n", start)
    bad = text[:start] + 'dC_dx   = "dC_da*G"' + text[line_end:]
    spec = tmp_path / "bad.toml"
    spec.write_text(bad)
    finding = {f.id: f for f in verify_specs([spec])}["dC_dx"]
    # dC_da*G is a value per neuron of the layer, not the sum the input's gradient is:
    # a symbol against its meaning (fails), and the detail gives the repair
    assert finding.verdict == FAILS
    assert "M.T @ v" in finding.detail
    assert finding.corrected and f"Repaired, the single-step gradient is {finding.corrected}" in (
        finding.detail
    )


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


# --- claims on two-state cells, through matrices, on matrix entries -----------------------
#
# The meaning of a claim (DESIGN.md): its key is the gradient flowing into that parameter,
# input or state through one step, and every dC_d<symbol> in its value is the total
# gradient by that symbol at the step. Each verdict below is checked against finite
# differences of the generated module over one step, with the total adjoints written out
# by hand from the reference interpreter's values (not from the derivation).

SPEC_DIR = Path(__file__).resolve().parents[2] / "symbolic" / "specs"


def _with_claims(tmp_path, spec: str, claims: str, name: str = "") -> Path:
    path = tmp_path / f"{spec}_{name}claims.toml"
    path.write_text((SPEC_DIR / f"{spec}.toml").read_text() + claims)
    return path


def _one_step_truth(spec: str, seed: int = 3):
    """One step of the generated module: the parameters, every symbol's value (reference
    interpreter), the weights of C = <c, out> + sum_s <w_s, next state s>, and the FD
    gradients of C by every parameter and state."""
    import importlib

    from symbolic import evaluate, parse

    module = importlib.import_module(f"generated.{spec}_numpy")
    model = parse.load(SPEC_DIR / f"{spec}.toml")
    rng = np.random.default_rng(seed)
    n_in, n_out = 3, 4
    params = {k: 0.7 * rng.standard_normal(s) for k, s in module.param_shapes(n_in, n_out).items()}
    x = rng.standard_normal((1, 1, n_in))
    state0 = {s: 0.7 * rng.standard_normal((1, n_out)) for s in model.states}
    c = rng.uniform(0.5, 1.5, (1, 1, n_out))
    w = {s: rng.uniform(0.5, 1.5, (1, n_out)) for s in model.states}

    def cost(p, s0):
        a, cache = module.forward(p, x, s0)
        return float(np.sum(c * a) + sum(np.sum(w[s] * cache["state"][s]) for s in model.states))

    def fd(fn, value):
        grad = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[idx] += 1e-6
            minus[idx] -= 1e-6
            grad[idx] = (fn(plus) - fn(minus)) / 2e-6
        return grad

    truth = {k: fd(lambda v, k=k: cost({**params, k: v}, state0), v) for k, v in params.items()}
    for s in model.states:
        truth[s] = fd(lambda v, s=s: cost(params, {**state0, s: v}), state0[s])[0]
    env = evaluate.step(model, params, x[0, 0], {s: v[0] for s, v in state0.items()})
    weights = {"out": c[0, 0], **{s: w[s][0] for s in model.states}}
    return params, env, weights, truth


LSTM_CLAIMS = """
[claims]
dC_dc = "dC_dcn * fg"
dC_dbf = "dC_dcn * c * sigmoid_prime(Wf@x + Uf@h + bf)"
dC_dbi = "dC_dcn * ig"
"""


def test_lstm_state_claims_read_adjoints_as_totals(tmp_path):
    findings = {f.id: f for f in verify_specs([_with_claims(tmp_path, "lstm", LSTM_CLAIMS)])}
    assert {k: f.verdict for k, f in findings.items()} == {
        "dC_dc": HOLDS,
        "dC_dbf": HOLDS,
        "dC_dbi": FAILS,
    }
    _, env, wt, truth = _one_step_truth("lstm")
    # the total gradient by cn at the step: its own weight (c's next value) plus the path
    # through a = og*tanh(cn), whose total weight is c_out + w_h (a is h's next value)
    dcn = wt["c"] + (wt["out"] + wt["h"]) * env["og"] * (1 - np.tanh(env["cn"]) ** 2)
    np.testing.assert_allclose(dcn * env["fg"], truth["c"], rtol=1e-6)
    fg = env["fg"]
    np.testing.assert_allclose(dcn * env["c"] * fg * (1 - fg), truth["bf"], rtol=1e-6)
    assert not np.allclose(dcn * env["ig"], truth["bi"], rtol=1e-3)
    # the failing claim's correction is the true gradient, in the spec's names
    corrected = findings["dC_dbi"].corrected
    assert "_t" not in corrected and "_x" not in corrected, corrected
    ig = env["ig"]
    np.testing.assert_allclose(dcn * env["g"] * ig * (1 - ig), truth["bi"], rtol=1e-6)
    fixed = _with_claims(tmp_path, "lstm", f'\n[claims]\ndC_dbi = "{corrected}"\n', "fixed_")
    assert [f.verdict for f in verify_specs([fixed])] == [HOLDS]


GRU_DH = (
    "dC_da*z"
    " + Uz.T @ (dC_da*(h - n)*sigmoid_prime(Wz@x + Uz@h + bz))"
    " + r*(Un.T @ (dC_da*(1 - z)*tanh_prime(Wn@x + Un@(r*h) + bn)))"
    " + Ur.T @ (h*(Un.T @ (dC_da*(1 - z)*tanh_prime(Wn@x + Un@(r*h) + bn)))"
    "*sigmoid_prime(Wr@x + Ur@h + br))"
)


def test_gru_state_claim_through_matrices(tmp_path):
    """A state's gradient through the matrices that multiply it (M.T @ v), and the same
    claim with one term's matrix wrong."""
    (finding,) = verify_specs([_with_claims(tmp_path, "gru", f'\n[claims]\ndC_dh = "{GRU_DH}"\n')])
    assert finding.verdict == HOLDS, finding.detail
    wrong = GRU_DH.replace("Uz.T", "Ur.T")
    (bad,) = verify_specs([_with_claims(tmp_path, "gru", f'\n[claims]\ndC_dh = "{wrong}"\n', "w")])
    assert bad.verdict == FAILS
    spec_names = set(re.findall(r"[A-Za-z_]\w*", (SPEC_DIR / "gru.toml").read_text()))
    names = set(re.findall(r"[A-Za-z_]\w*", bad.corrected)) - {"T", "dC_da"}
    assert names <= spec_names, names - spec_names
    fixed = _with_claims(tmp_path, "gru", f'\n[claims]\ndC_dh = "{bad.corrected}"\n', "fixed_")
    assert [f.verdict for f in verify_specs([fixed])] == [HOLDS]
    # independent: the hand-written claim equals finite differences of the module
    p, env, wt, truth = _one_step_truth("gru")
    da = wt["out"] + wt["h"]
    dn = da * (1 - env["z"]) * (1 - env["n"] ** 2)
    dz = da * (env["h"] - env["n"]) * env["z"] * (1 - env["z"])
    back = p["Un"].T @ dn
    hand = (
        da * env["z"]
        + p["Uz"].T @ dz
        + env["r"] * back
        + p["Ur"].T @ (env["h"] * back * env["r"] * (1 - env["r"]))
    )
    np.testing.assert_allclose(hand, truth["h"], rtol=1e-6)


ENTRY_CELL = """
name = "entry"
kind = "recurrent"
input = "x"
output = "a"
state = { h = "a" }
[params]
U = "matrix"
W = "matrix"
[equations]
G = "sigmoid(U@h + W@x)"
a = "G*h"
[claims]
dC_dU = "dC_da*h*sigmoid_prime(U@h + W@x)*h"
dC_dW = "dC_da*h*sigmoid_prime(U@h + W@x)*x"
"""


def test_matrix_entry_claim_whose_vector_also_appears_per_neuron(tmp_path):
    """In dC_dU = dC_da*h*sigmoid'(U@h + W@x)*h the first h is the neuron's (index i), the
    last the entry's input (index j): one factor of a term is the entry's vector."""
    spec = tmp_path / "entry.toml"
    spec.write_text(ENTRY_CELL)
    findings = {f.id: f for f in verify_specs([spec])}
    assert findings["dC_dU"].verdict == HOLDS, findings["dC_dU"].detail
    assert findings["dC_dW"].verdict == HOLDS
    # independent: one step of the cell by hand, against finite differences of it
    rng = np.random.default_rng(0)
    U, W = rng.standard_normal((4, 4)), rng.standard_normal((4, 3))
    h, x, c = rng.standard_normal(4), rng.standard_normal(3), rng.uniform(0.5, 1.5, 4)

    def cost(U):
        return float(c @ (1 / (1 + np.exp(-(U @ h + W @ x))) * h))

    fd = np.zeros_like(U)
    for idx in np.ndindex(U.shape):
        e = np.zeros_like(U)
        e[idx] = 1e-6
        fd[idx] = (cost(U + e) - cost(U - e)) / 2e-6
    g = 1 / (1 + np.exp(-(U @ h + W @ x)))
    np.testing.assert_allclose(np.outer(c * h * g * (1 - g), h), fd, rtol=1e-6)


def test_state_claim_with_a_transposed_product_of_a_vector_parameter(tmp_path):
    """M.T @ v in a claim on a vector parameter (it once raised a KeyError)."""
    text = ENTRY_CELL.replace("[claims]", '[claims]\ndC_dh = "dC_da*G + U.T @ (dC_da*h*G*(1 - G))"')
    spec = tmp_path / "entry2.toml"
    spec.write_text(text)
    findings = {f.id: f for f in verify_specs([spec])}
    assert findings["dC_dh"].verdict == HOLDS, findings["dC_dh"].detail
