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
