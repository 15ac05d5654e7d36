"""The Numba recurrences' walk over lanes in blocks of neighbouring neurons (``_BLOCK``).

Validation's problems have 5 neurons, so each row of lanes is one block there. Here a
layer is wider than a block (two blocks a row, the second short), and the threads' shares
of the lanes start inside a row: forward and backward must still give what the NumPy
module gives, whatever the number of threads.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from symbolic.generate import builtin_specs

numba = pytest.importorskip("numba")

NAMES = [
    path.stem
    for path in sorted(builtin_specs())
    if hasattr(importlib.import_module(f"generated.{path.stem}_numba"), "_BLOCK")
]


def test_the_blocked_recurrences_are_found():
    assert {"grn", "indrnn", "mingru", "sru"} <= set(NAMES)


def _pass(module, params, x, state0, da, dstate):
    a, cache = module.forward(params, x, state0)
    grads, dx, dstate0 = module.backward(params, cache, da, dstate)
    return {"a": a, "dx": dx, **grads, **{f"dstate0 {k}": v for k, v in dstate0.items()}}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_rows_wider_than_a_block_match_numpy(name, threads, monkeypatch):
    fast = importlib.import_module(f"generated.{name}_numba")
    plain = importlib.import_module(f"generated.{name}_numpy")
    n_out = fast._BLOCK + 3  # a full block and a short one in each row
    # 3 rows: two threads' shares meet inside the second. The loops run on every thread
    # only with enough steps (below _REGION_FLOPS of work they run on one) and whatever
    # the products' share of the work (above _RATIO they run on one too).
    monkeypatch.setattr(fast, "_RATIO", float("inf"))
    batch = 3
    steps = -(-fast._REGION_FLOPS // (batch * n_out * fast._LANE_FLOPS))
    n_in = n_out if getattr(plain, "INPUT_ELEMENTWISE", False) else 6
    rng = np.random.default_rng(5)
    params = plain.init_params(n_in, n_out, seed=5, dtype=np.float64)
    x = rng.standard_normal((steps, batch, n_in))
    state0 = {s: rng.standard_normal((batch, n_out)) * 0.5 for s in plain.STATES}
    da = rng.standard_normal((steps, batch, n_out))
    dstate = {s: rng.standard_normal((batch, n_out)) for s in plain.STATES}
    want = _pass(plain, params, x, state0, da, dstate)
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        got = _pass(fast, params, x, state0, da, dstate)
    finally:
        numba.set_num_threads(before)
    assert got.keys() == want.keys()
    for key, value in want.items():
        scale = max(1.0, float(np.max(np.abs(value))))
        error = float(np.max(np.abs(got[key] - value))) / scale
        assert error < 1e-10, f"{name}: {key} differs by {error:.2e}"


def _loops(phases):
    """Each loop of a block's step as ``(loads, statements, stores)`` of plain strings."""
    return [
        (
            {load["name"]: load["source"] for load in phase["loads"]},
            [st["target"] for st in phase["statements"]],
            [f"{st['lhs']} {st['op']} {st['rhs']}" for st in phase["stores"]],
        )
        for phase in phases
    ]


def test_the_gradient_sums_run_in_a_loop_of_their_own():
    """A vector parameter's per-lane sum runs after the step's loops, in a loop of its own,
    and reads an adjoint the step stores from the row it is stored in."""
    import sympy as sp

    from symbolic.backends.numba.layout import STEP_LANE, Lane, _phases
    from symbolic.ir import Assign

    d_z, h, da = sp.symbols("dZ h da")
    stmts = [Assign("dZ", 2 * da, "dZ"), Assign("dh", 3 * d_z, "dh")]
    place = {
        "da": Lane("_dout", STEP_LANE),
        "h": Lane("h_seq", STEP_LANE),
        "dh_next": Lane("_s_dh_next", "_b, "),
    }
    final = [
        (Lane("dZ_seq", STEP_LANE), "=", d_z),
        (Lane("_s_dh_next", "_b, "), "=", sp.Symbol("dh")),
    ]
    sums = [(Lane("_g_W", "_b, "), "+=", d_z * h)]
    loops = _loops(_phases(stmts, place, final, sums)[0])
    assert len(loops) == 2
    step, summed = loops
    assert step[2] == ["_r_dZ_seq[_k] = dZ", "_r__s_dh_next[_k] = dh"]
    assert summed == (
        {"h": "_r_h_seq[_k]", "dZ": "_r_dZ_seq[_k]"},
        [],
        ["_r__g_W[_k] += dZ*h"],
    )
    # a sum that reads a carried state, which the step's last loop overwrites, stays in
    # that loop, where the state is read before it is stored
    late = [(Lane("_g_W", "_b, "), "+=", sp.Symbol("dh_next") * h)]
    stmts = [Assign("dh", 3 * sp.Symbol("dh_next"), "dh")]
    (only,) = _loops(_phases(stmts, place, final[1:], late)[0])
    assert only[2] == ["_r__s_dh_next[_k] = dh", "_r__g_W[_k] += dh_next*h"]
    assert only[0]["dh_next"] == "_r__s_dh_next[_k]"


def test_a_call_shares_the_loop_of_the_number_free_statements_before_it():
    """The loops of a block's step: a primitive call joins the loop of the calls and of
    the number-free statements before it; a statement with a number in it (mixed
    precision in float32) and any statement after a call start a loop of their own."""
    import sympy as sp

    from symbolic.backends.numba.layout import STEP_LANE, Lane, _phases
    from symbolic.ir import Assign
    from symbolic.primitives import function

    sigmoid, tanh = function("sigmoid"), function("tanh")
    x, w, h = sp.symbols("x w h")
    zu, zc, g, ac = sp.symbols("Zu Zc G ac")
    place = {n: Lane(f"{n}_seq", STEP_LANE) for n in ("x", "w", "h")}
    final = [(Lane("a_seq", STEP_LANE), "=", sp.Symbol("a"))]
    gated = [
        Assign("Zu", w * h + x, "Zu"),
        Assign("Zc", w * x + h, "Zc"),
        Assign("G", sigmoid(zu), "G"),
        Assign("ac", tanh(zc), "ac"),
        Assign("a", g * ac + (1 - g) * h, "a"),
    ]
    loops = _loops(_phases(gated, place, final)[0])
    assert [targets for _, targets, _ in loops] == [["Zu", "Zc", "G", "ac"], ["a"]]
    assert loops[0][2] == ["_k_G[_k] = G", "_k_ac[_k] = ac"]  # what the next loop reads
    assert loops[1][0] == {"G": "_k_G[_k]", "ac": "_k_ac[_k]", "h": "_r_h_seq[_k]"}
    # a number before the call: the value is stored in the arrays' dtype first
    scaled = [Assign("Zu", 2 * x + w, "Zu"), Assign("G", sigmoid(zu), "G")]
    final = [(Lane("a_seq", STEP_LANE), "=", g)]
    loops = _loops(_phases(scaled, place, final)[0])
    assert [targets for _, targets, _ in loops] == [["Zu"], ["G"]]
    assert loops[1][0] == {"Zu": "_k_Zu[_k]"}
