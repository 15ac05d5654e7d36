"""The hand-written NumPy models of symbolic/bench/reference.py.

Two independent checks: central finite differences in random directions (an oracle that
knows no derivative at all), and agreement with the generated NumPy modules (a second
implementation: if both derivations were wrong the same way, the finite differences
would still catch it).
"""

from __future__ import annotations

import numpy as np
import pytest

from generated import dense_sigmoid_numpy, grn_numpy, squared_error_numpy
from symbolic.bench import reference

MLP_SIZES = [5, 7, 6, 3]
GRN_DIMS = (9, 3, 4, 5)  # T, B, D, H


def _mlp(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    layers = [
        dense_sigmoid_numpy.init_params(n_in, n_out, seed=seed + i, dtype=dtype)
        for i, (n_in, n_out) in enumerate(zip(MLP_SIZES[:-1], MLP_SIZES[1:], strict=True))
    ]
    x = rng.standard_normal((4, MLP_SIZES[0])).astype(dtype)
    y = rng.uniform(0, 1, (4, MLP_SIZES[-1])).astype(dtype)
    return layers, x, y


def _grn(dtype=np.float64, seed=0):
    steps, batch, n_in, n_out = GRN_DIMS
    rng = np.random.default_rng(seed)
    params = grn_numpy.init_params(n_in, n_out, seed=seed, dtype=dtype)
    # Recurrent weights and biases large enough that every term of the recurrence matters.
    for name in ("WTu", "WTc", "Bu", "Bc"):
        params[name] = rng.uniform(-0.9, 0.9, n_out).astype(dtype)
    x = rng.standard_normal((steps, batch, n_in)).astype(dtype)
    y = rng.uniform(-0.5, 0.5, (steps, batch, n_out)).astype(dtype)
    h0 = rng.uniform(-0.5, 0.5, (batch, n_out)).astype(dtype)
    return params, x, y, h0


def _directional_check(cost, point, grads, seed, eps=1e-5, directions=4):
    """Compare <grad, v> with (cost(p + eps v) - cost(p - eps v)) / (2 eps) for random v
    over every entry of ``point`` (a dict of arrays) at once."""
    rng = np.random.default_rng(seed)
    for _ in range(directions):
        v = {k: rng.standard_normal(a.shape) for k, a in point.items()}
        plus = cost({k: a + eps * v[k] for k, a in point.items()})
        minus = cost({k: a - eps * v[k] for k, a in point.items()})
        numeric = (plus - minus) / (2 * eps)
        analytic = sum(float(np.sum(grads[k] * v[k])) for k in point)
        assert abs(numeric - analytic) <= 1e-6 * max(abs(analytic), 1e-3), (numeric, analytic)


def test_mlp_gradients_match_finite_differences():
    layers, x, y = _mlp()
    a, acts = reference.mlp_forward(layers, x)
    _, da = reference.squared_error(a, y)
    grads, dx = reference.mlp_backward(layers, acts, da, input_grad=True)

    point = {f"{i}.{n}": layers[i][n] for i in range(len(layers)) for n in ("W", "B")}
    point["x"] = x
    flat = {f"{i}.{n}": grads[i][n] for i in range(len(layers)) for n in ("W", "B")}
    flat["x"] = dx

    def cost(p):
        ls = [{"W": p[f"{i}.W"], "B": p[f"{i}.B"]} for i in range(len(layers))]
        return reference.squared_error(reference.mlp_forward(ls, p["x"])[0], y)[0]

    _directional_check(cost, point, flat, seed=1)


def test_grn_gradients_match_finite_differences():
    params, x, y, h0 = _grn()
    dh_last = np.random.default_rng(5).standard_normal(h0.shape)
    a, cache = reference.grn_forward(params, x, h0)
    _, da = reference.squared_error(a, y)
    grads, dx, dh0 = reference.grn_backward(params, cache, da, dh_last, input_grad=True)

    point = dict(params, x=x, h0=h0)
    flat = dict(grads, x=dx, h0=dh0)

    def cost(p):
        ps = {k: p[k] for k in reference.GRN_PARAMS}
        out, c = reference.grn_forward(ps, p["x"], p["h0"])
        # The gradient given for the final state enters the cost as a linear term.
        return reference.squared_error(out, y)[0] + float(np.sum(dh_last * c["h"][-1]))

    _directional_check(cost, point, flat, seed=2)


@pytest.mark.parametrize("block_bytes", [1, 1 << 30])
def test_grn_backward_blocks_do_not_change_the_result(monkeypatch, block_bytes):
    """The backward's time blocks (one step each, or the whole sequence) are an
    optimisation only."""
    params, x, y, h0 = _grn()
    a, cache = reference.grn_forward(params, x, h0)
    _, da = reference.squared_error(a, y)
    expected = reference.grn_backward(params, cache, da)
    monkeypatch.setattr(reference, "_BLOCK_BYTES", block_bytes)
    got = reference.grn_backward(params, cache, da)
    for name in reference.GRN_PARAMS:
        np.testing.assert_allclose(got[0][name], expected[0][name], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-13, atol=1e-15)


def _close(got, expected, tol):
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert float(np.max(np.abs(got - expected))) <= tol * scale


@pytest.mark.parametrize(("dtype", "tol"), [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_mlp_equals_generated_numpy(dtype, tol):
    layers, x, y = _mlp(dtype)
    a_ref, acts = reference.mlp_forward(layers, x)
    cost_ref, da_ref = reference.squared_error(a_ref, y)
    grads_ref, dx_ref = reference.mlp_backward(layers, acts, da_ref, input_grad=True)

    a, caches = x, []
    for layer in layers:
        a, cache = dense_sigmoid_numpy.forward(layer, a)
        caches.append(cache)
    cost, da = squared_error_numpy.loss(a, y)
    _close(a_ref, a, tol)
    assert abs(cost_ref - cost) <= tol * abs(cost)
    _close(da_ref, da, tol)
    for index in range(len(layers) - 1, -1, -1):
        grads, da = dense_sigmoid_numpy.backward(layers[index], caches[index], da)
        for name in ("W", "B"):
            _close(grads_ref[index][name], grads[name], tol)
    _close(dx_ref, da, tol)


@pytest.mark.parametrize(("dtype", "tol"), [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_grn_equals_generated_numpy(dtype, tol):
    params, x, y, h0 = _grn(dtype)
    dh_last = np.random.default_rng(5).standard_normal(h0.shape).astype(dtype)
    a_ref, cache_ref = reference.grn_forward(params, x, h0)
    cost_ref, da_ref = reference.squared_error(a_ref, y)
    grads_ref, dx_ref, dh0_ref = reference.grn_backward(
        params, cache_ref, da_ref, dh_last, input_grad=True
    )

    a, cache = grn_numpy.forward(params, x, {"h": h0})
    cost, da = squared_error_numpy.loss(a, y)
    grads, dx, dstate0 = grn_numpy.backward(params, cache, da, {"h": dh_last})
    _close(a_ref, a, tol)
    assert abs(cost_ref - cost) <= tol * abs(cost)
    for name in grn_numpy.PARAMS:
        _close(grads_ref[name], grads[name], tol)
    _close(dx_ref, dx, tol)
    _close(dh0_ref, dstate0["h"], tol)


def test_grn_default_state_is_zero_and_steps_agree():
    params, x, y, _ = _grn()
    cost, grads = reference.grn_step(params, x, y)
    a, cache = reference.grn_forward(params, x, np.zeros((x.shape[1], params["WTu"].shape[0])))
    expected_cost, da = reference.squared_error(a, y)
    expected, _, _ = reference.grn_backward(params, cache, da)
    assert cost == pytest.approx(expected_cost, rel=1e-15)
    for name in reference.GRN_PARAMS:
        np.testing.assert_array_equal(grads[name], expected[name])


def test_sigmoid_is_stable_and_keeps_dtype():
    z = np.array([-800.0, -30.0, 0.0, 30.0, 800.0], np.float32)
    s = reference.sigmoid(z)
    assert s.dtype == np.float32 and np.all(np.isfinite(s))
    e = np.exp(-np.abs(z.astype(np.float64)))  # the textbook form, without overflow
    expected = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    # (1 + tanh(z/2))/2 is accurate in absolute, not relative, terms deep in the tail.
    np.testing.assert_allclose(s, expected, rtol=1e-6, atol=1e-7)
    assert z[0] == -800.0  # the input is left alone
