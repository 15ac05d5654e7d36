"""The Numba recurrences that run a chunk of steps at a time (``_chunks``).

Such a module computes the input's projections of each chunk just before its loop, and
the products and sums of the chunk's adjoints just after it. Whatever the chunks, the
pass must be the same: these tests cut a sequence into chunks of one step, and into
chunks of three with a shorter last one, and check the result against the same module
in one chunk, against the NumPy module, and (float64) against central finite
differences of the loss in random directions.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from symbolic.generate import builtin_specs

pytest.importorskip("numba")

NAMES = [
    path.stem
    for path in sorted(builtin_specs())
    if hasattr(importlib.import_module(f"generated.{path.stem}_numba"), "_chunks")
]
T, B, N_IN, N_OUT = 7, 3, 4, 5


def test_the_chunked_recurrences_are_found():
    assert {"grn", "mingru"} <= set(NAMES)


def _problem(numpy_module, dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = numpy_module.init_params(N_IN, N_OUT, seed=seed, dtype=dtype)
    x = rng.standard_normal((T, B, N_IN)).astype(dtype)
    state0 = {s: rng.standard_normal((B, N_OUT)).astype(dtype) * 0.5 for s in numpy_module.STATES}
    da = rng.standard_normal((T, B, N_OUT)).astype(dtype)
    dstate = {s: rng.standard_normal((B, N_OUT)).astype(dtype) for s in numpy_module.STATES}
    return params, x, state0, da, dstate


def _pass(module, params, x, state0, da, dstate):
    a, cache = module.forward(params, x, state0)
    grads, dx, dstate0 = module.backward(params, cache, da, dstate)
    return {
        "a": a,
        "dx": dx,
        **{f"grad {k}": v for k, v in grads.items()},
        **{f"dstate0 {k}": v for k, v in dstate0.items()},
        **{f"state {k}": v for k, v in cache["state"].items()},
    }


def _chunked(monkeypatch, module, steps_per_chunk):
    """Make ``module`` cut every pass into chunks of ``steps_per_chunk`` steps; returns
    the chunks each pass was cut into."""
    cut = []
    real = module._chunks

    def recorded(steps, step_bytes):
        monkeypatch.setattr(module, "_CHUNK_BYTES", steps_per_chunk * step_bytes)
        chunks = real(steps, step_bytes)
        cut.append(chunks)
        return chunks

    monkeypatch.setattr(module, "_chunks", recorded)
    return cut


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_chunks_of_steps_give_the_whole_pass(monkeypatch, name, steps, dtype):
    numba_module = importlib.import_module(f"generated.{name}_numba")
    numpy_module = importlib.import_module(f"generated.{name}_numpy")
    problem = _problem(numpy_module, dtype)
    whole = _pass(numba_module, *problem)
    reference = _pass(numpy_module, *problem)
    cut = _chunked(monkeypatch, numba_module, steps)
    chunked = _pass(numba_module, *problem)
    expected = [(t, min(t + steps, T)) for t in range(0, T, steps)]
    assert cut == [expected, expected]  # forward and backward, the last chunk shorter
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for key, value in whole.items():
        scale = max(1.0, float(np.abs(reference[key]).max()))
        np.testing.assert_allclose(chunked[key], value, rtol=tol, atol=tol * scale, err_msg=key)
        np.testing.assert_allclose(
            chunked[key], reference[key], rtol=20 * tol, atol=20 * tol * scale, err_msg=key
        )


@pytest.mark.parametrize("name", NAMES)
def test_chunked_gradients_match_finite_differences(monkeypatch, name):
    """The loss L = sum(a * da) + sum(state_T * dstate), differentiated by the chunked
    module, against central differences along random directions of every input."""
    numba_module = importlib.import_module(f"generated.{name}_numba")
    numpy_module = importlib.import_module(f"generated.{name}_numpy")
    params, x, state0, da, dstate = _problem(numpy_module, np.float64, seed=3)
    _chunked(monkeypatch, numba_module, 2)

    def loss(params, x, state0):
        a, cache = numba_module.forward(params, x, state0)
        total = float(np.sum(a * da))
        return total + sum(float(np.sum(cache["state"][s] * dstate[s])) for s in dstate)

    a, cache = numba_module.forward(params, x, state0)
    grads, dx, dstate0 = numba_module.backward(params, cache, da, dstate)
    rng = np.random.default_rng(11)
    eps = 1e-6
    for _ in range(3):
        v_params = {k: rng.standard_normal(p.shape) for k, p in params.items()}
        v_x = rng.standard_normal(x.shape)
        v_state = {s: rng.standard_normal(v.shape) for s, v in state0.items()}

        def moved(sign, v_params=v_params, v_x=v_x, v_state=v_state):
            return loss(
                {k: p + sign * eps * v_params[k] for k, p in params.items()},
                x + sign * eps * v_x,
                {s: v + sign * eps * v_state[s] for s, v in state0.items()},
            )

        numeric = (moved(1.0) - moved(-1.0)) / (2 * eps)
        analytic = sum(float(np.sum(grads[k] * v_params[k])) for k in params)
        analytic += float(np.sum(dx * v_x))
        analytic += sum(float(np.sum(dstate0[s] * v_state[s])) for s in state0)
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("path", ["loops", "python threads", "one product"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_product_into_an_array_or_added_to_it(monkeypatch, path, dtype):
    """``_matmul(a, b, out=..., accumulate=...)`` writes or adds ``a @ b``, split or not."""
    module = importlib.import_module("generated.grn_numba")
    gemm = next((found for _, _, found, _ in module._blas_pools() if found), None)
    if path == "loops" and gemm is None:
        pytest.skip("BLAS is not OpenBLAS: its gemm is not called from the loops")
    parts = 1 if path == "one product" else 3
    monkeypatch.setattr(module, "_split", [parts, gemm if path == "loops" else None])
    rng = np.random.default_rng(5)
    a = rng.standard_normal((64, 3001)).astype(dtype)
    b = rng.standard_normal((3001, 512)).astype(dtype)
    for left, right in ((a, b), (a.T.copy().T, b), (b.T, a.T)):
        want = left @ right
        start = rng.standard_normal(want.shape).astype(dtype)
        out = start.copy()
        assert module._matmul(left, right, out=out) is out
        tol = 1e-4 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol * np.abs(want).max())
        out = start.copy()
        module._matmul(left, right, out=out, accumulate=True)
        np.testing.assert_allclose(out, start + want, rtol=tol, atol=tol * np.abs(want).max())
