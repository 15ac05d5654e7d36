"""The parallel scan of an affine recurrence (minGRU) against its sequential loop."""

from __future__ import annotations

import numpy as np
import pytest

from generated import mingru_numpy
from symbolic.derive import derive
from symbolic.generate import builtin_specs
from symbolic.ir import AFFINE
from symbolic.lower import lower
from symbolic.parse import load


def test_only_affine_recurrences_get_a_scan():
    for path in builtin_specs():
        model = load(path)
        if model.kind != "recurrent":
            continue
        kernel = lower(derive(model))
        assert (kernel.scan is not None) == (kernel.recurrence == AFFINE), path.name
    assert lower(derive(load(builtin_specs()[0].parent / "mingru.toml"))).recurrence == AFFINE


@pytest.mark.parametrize("T", [1, 2, 7, 1000])
def test_scan_matches_the_sequential_loop(T):
    rng = np.random.default_rng(T)
    B, n_in, n_out = 4, 3, 6
    params = mingru_numpy.init_params(n_in, n_out, seed=1)
    x = rng.standard_normal((T, B, n_in))
    state0 = {"h": rng.standard_normal((B, n_out))}
    a1, c1 = mingru_numpy.forward(params, x, state0)
    a2, c2 = mingru_numpy.forward_scan(params, x, state0)
    np.testing.assert_allclose(a2, a1, rtol=1e-10, atol=1e-12)
    assert set(c1) == set(c2)
    np.testing.assert_allclose(c2["state"]["h"], c1["state"]["h"], rtol=1e-10, atol=1e-12)
    da = rng.standard_normal(a1.shape)
    dstate = {"h": rng.standard_normal((B, n_out))}
    g1, dx1, d1 = mingru_numpy.backward(params, c1, da, dstate)
    g2, dx2, d2 = mingru_numpy.backward_scan(params, c2, da, dstate)
    for key in g1:
        np.testing.assert_allclose(g2[key], g1[key], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx2, dx1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d2["h"], d1["h"], rtol=1e-10, atol=1e-12)
    # the scan's cache also feeds the sequential backward, and vice versa
    g3, _, _ = mingru_numpy.backward(params, c2, da, dstate)
    np.testing.assert_allclose(g3["Wz"], g1["Wz"], rtol=1e-10, atol=1e-12)


def test_scan_keeps_float32():
    params = mingru_numpy.init_params(3, 4, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((50, 2, 3)).astype(np.float32)
    a, cache = mingru_numpy.forward_scan(params, x)
    grads, dx, dstate = mingru_numpy.backward_scan(params, cache, np.ones_like(a))
    assert a.dtype == dx.dtype == dstate["h"].dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    a64, _ = mingru_numpy.forward(
        {k: v.astype(np.float64) for k, v in params.items()}, x.astype(np.float64)
    )
    np.testing.assert_allclose(a, a64, rtol=1e-4, atol=1e-5)
