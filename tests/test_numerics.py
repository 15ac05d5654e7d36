"""Numerics and aliasing of the generated modules, both backends, both dtypes.

- sigmoid is accurate to a few ulp over the whole float range (against mpmath);
- a cost taking the log of a sigmoid is finite for every finite input;
- NaN and inf propagate, and the Numba modules agree with the NumPy ones on rows
  holding them (a NaN parameter never gives a finite output);
- an empty batch and an empty layer run; a parameter that cannot reach the cost gets a
  zero gradient;
- what forward and backward return is the caller's: editing it in place changes nothing
  a later backward computes;
- constants that overflow float64 or are not real are refused with a clear error.
"""

from __future__ import annotations

import importlib
import textwrap

import mpmath
import numpy as np
import pytest

from symbolic import parse
from symbolic.backends import array_backends
from symbolic.generate import builtin_specs
from symbolic.model import COST, RECURRENT

#: The NumPy-array backends (the torch modules are tested in tests/backends/).
BACKENDS = array_backends()

MODELS = {p.stem: parse.load(p) for p in builtin_specs()}
CELLS = [n for n, m in MODELS.items() if m.kind != COST]
DTYPES = (np.float32, np.float64)


def module(name: str, backend: str):
    return importlib.import_module(f"generated.{name}_{backend}")


def _exact_sigmoid(z: np.ndarray, dtype) -> np.ndarray:
    mpmath.mp.dps = 50
    return np.array([float(1 / (1 + mpmath.exp(-mpmath.mpf(float(v))))) for v in z]).astype(dtype)


def _ulps(got: np.ndarray, want: np.ndarray, dtype) -> np.ndarray:
    """Error in units in the last place of the exact value; in the subnormal range, in
    units of the smallest normal number (their precision is absolute)."""
    info = np.finfo(dtype)
    want64 = want.astype(np.float64)
    spacing = np.maximum(np.spacing(np.abs(want)).astype(np.float64), float(info.tiny))
    spacing = np.where(np.abs(want64) < info.tiny, float(info.tiny), spacing)
    return np.abs(got.astype(np.float64) - want64) / spacing


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_is_accurate_everywhere(backend, dtype):
    """dense_sigmoid with W = I and B = 0 computes sigmoid(x) itself: within 4 ulp of the
    correctly rounded value over every magnitude, both signs, both dtypes."""
    mod = module("dense_sigmoid", backend)
    mags = np.concatenate([np.logspace(-300, 2.9, 400), np.linspace(0, 750, 301)])
    z = np.concatenate([-mags, mags, [0.0, 20.0, -20.0, 38.0, -38.0, 88.0, -88.0, -103.0]])
    z = z.astype(dtype)
    n = z.size
    params = {"W": np.eye(n, dtype=dtype), "B": np.zeros(n, dtype=dtype)}
    a, _ = mod.forward(params, z[None, :])
    want = _exact_sigmoid(z, dtype)
    err = _ulps(a[0], want, dtype)
    worst = int(np.argmax(err))
    assert err.max() <= 4, f"sigmoid({z[worst]!r}) = {a[0][worst]!r}, exact {want[worst]!r}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_raises_nothing_where_the_user_traps_floating_point_errors(backend, dtype):
    """With every floating-point error trapped (np.errstate(all="raise")), a sigmoid layer
    and its gradient run on arguments whose e^-z overflows or underflows (flags raised
    inside the module, where they are expected), with the right limits."""
    mod = module("dense_sigmoid", backend)
    z = np.array([-1e4, -800.0, -720.0, -104.0, -90.0, -20.0, 0.0, 20.0, 90.0, 800.0], dtype)
    n = z.size
    params = {"W": np.eye(n, dtype=dtype), "B": np.zeros(n, dtype=dtype)}
    with np.errstate(all="raise"):
        try:
            a, cache = mod.forward(params, z[None, :])
            grads, dx = mod.backward(params, cache, np.ones_like(a))
        except FloatingPointError as error:
            pytest.fail(f"raised {error!r} under np.errstate(all='raise')")
    want = _exact_sigmoid(z, dtype)
    assert _ulps(a[0], want, dtype).max() <= 4
    assert a[0, 0] == 0.0 and a[0, -1] == 1.0
    for value in (*grads.values(), dx):
        assert np.all(np.isfinite(value))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_softplus_is_accurate_and_raises_nothing_where_the_user_traps_errors(dtype):
    """The NumPy modules' softplus, max(z, 0) + log1p(e^-|z|), against mpmath over the
    whole float range, within 2 ulp of the exact value (np.logaddexp(0, z), its former
    form, as the second oracle), with every floating-point error trapped; inf, -inf and
    NaN kept; the output written in place over the argument alike."""
    softplus = module("bce_logits", "numpy")._np_softplus
    rng = np.random.default_rng(5)
    limit = float(np.finfo(dtype).max)
    z = np.concatenate(
        [
            rng.standard_normal(400) * 4,
            rng.uniform(-120, 120, 300),
            -np.logspace(-30, np.log10(limit) - 0.01, 150),
            np.logspace(-30, np.log10(limit) - 0.01, 150),
            [0.0, -0.0, -745.2, -103.9, 88.7, 709.7],
        ]
    ).astype(dtype)
    with np.errstate(all="raise"):
        try:
            got = softplus(z)
            inplace = softplus(z.copy(), out=None)
            again = z.copy()
            softplus(again, out=again)
        except FloatingPointError as error:
            pytest.fail(f"raised {error!r} under np.errstate(all='raise')")
    assert got.dtype == dtype
    np.testing.assert_array_equal(inplace, got)
    np.testing.assert_array_equal(again, got)
    mpmath.mp.dps = 60
    exact = np.array([float(mpmath.log1p(mpmath.exp(mpmath.mpf(float(v))))) for v in z])
    want = exact.astype(dtype)
    err = _ulps(got, want, dtype)
    worst = int(err.argmax())
    assert err.max() <= 2, f"softplus({z[worst]!r}) = {got[worst]!r}, exact {exact[worst]!r}"
    with np.errstate(all="ignore"):
        former = np.logaddexp(0, z)
    assert _ulps(got, former, dtype).max() <= 2
    special = softplus(np.array([np.inf, -np.inf, np.nan], dtype))
    assert special[0] == np.inf and special[1] == 0.0 and np.isnan(special[2])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend", BACKENDS)
def test_log_of_a_sigmoid_in_a_cost_is_finite(backend, dtype):
    """bce_logits takes log(sigmoid(z)) and log(1 - sigmoid(z)): finite for every finite
    z (computed as -softplus(-z), -softplus(z)), and right where it can be checked."""
    cost = module("bce_logits", backend)
    z = np.array([[-1e4, -1000.0, -40.0, -1.0, 0.0, 1.0, 40.0, 1000.0, 1e4]], dtype=dtype)
    y = np.array([[1.0, 0.0, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0, 0.0]], dtype=dtype)
    C, da = cost.loss(z, y)
    assert np.isfinite(C) and np.all(np.isfinite(da)) and da.dtype == dtype
    mpmath.mp.dps = 50
    # log(sigmoid(z)) = -log(1 + e^-z), log(1 - sigmoid(z)) = -log(1 + e^z), in 50 digits
    exact = sum(
        float(yi) * mpmath.log1p(mpmath.exp(-mpmath.mpf(float(zi))))
        + (1 - float(yi)) * mpmath.log1p(mpmath.exp(mpmath.mpf(float(zi))))
        for zi, yi in zip(z[0], y[0], strict=True)
    )
    assert C == pytest.approx(float(exact), rel=1e-6 if dtype == np.float32 else 1e-13)
    with np.errstate(over="ignore"):
        exact_grad = 1 / (1 + np.exp(-z.astype(np.float64))) - y
    np.testing.assert_allclose(da[0], exact_grad[0], rtol=1e-6, atol=1e-7)


def _n_in(model, n_out: int) -> int:
    """The input's width: 3, or the output's for a cell that uses its input elementwise."""
    return n_out if model.input_elementwise else 3


def _problem(name: str, dtype=np.float64, *, seed: int = 0, batch: int = 4):
    model = MODELS[name]
    mod = module(name, "numpy")
    rng = np.random.default_rng(seed)
    n_in = _n_in(model, 5)
    params = {
        k: (0.6 * rng.standard_normal(s)).astype(dtype)
        for k, s in mod.param_shapes(n_in, 5).items()
    }
    lead = (4, batch) if model.kind == RECURRENT else (batch,)
    x = rng.standard_normal((*lead, n_in)).astype(dtype)
    state0 = {s: (0.5 * rng.standard_normal((batch, 5))).astype(dtype) for s in model.states}
    da = rng.standard_normal((*lead, 5)).astype(dtype)
    return model, params, x, state0, da


def _run(model, mod, params, x, state0, da):
    if model.kind == RECURRENT:
        a, cache = mod.forward(params, x, state0)
        grads, dx, dstate0 = mod.backward(params, cache, da)
    else:
        a, cache = mod.forward(params, x)
        grads, dx = mod.backward(params, cache, da)
        dstate0 = {}
    return a, grads, dx, dstate0


def _arrays(run):
    a, grads, dx, dstate0 = run
    return {"a": a, "dx": dx, **{f"grad {k}": v for k, v in grads.items()},
            **{f"dstate0 {k}": v for k, v in dstate0.items()}}  # fmt: skip


@pytest.mark.parametrize("name", CELLS)
def test_numba_agrees_with_numpy_on_rows_with_nan_and_inf(name):
    """Row 0 of x holds a NaN, row 1 an inf, row 2 a -inf (and one vector parameter a NaN
    entry): every output and gradient is NaN or inf exactly where the NumPy module's is,
    and equal elsewhere; the NaN row's outputs are not finite."""
    pytest.importorskip("numba")
    model, params, x, state0, da = _problem(name)
    x[..., 0, 0] = np.nan
    x[..., 1, 1] = np.inf
    x[..., 2, 2] = -np.inf
    vector = next(k for k, kind in model.params.items() if kind == "vector")
    params[vector][3] = np.nan
    with np.errstate(all="ignore"):
        ref = _arrays(_run(model, module(name, "numpy"), params, x, state0, da))
        got = _arrays(_run(model, module(name, "numba"), params, x, state0, da))
    for key, want in ref.items():
        mask = np.isfinite(want)
        assert np.array_equal(np.isfinite(got[key]), mask), f"{name} {key}: NaN/inf differ"
        np.testing.assert_allclose(got[key][mask], want[mask], rtol=1e-9, atol=1e-12, err_msg=key)
    assert not np.any(np.isfinite(ref["a"][..., 0, :])), "a NaN input gave finite outputs"
    assert not np.any(np.isfinite(ref["a"][..., 3])), "a NaN parameter gave finite outputs"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_nan_parameter_never_gives_finite_outputs(backend):
    """The Numba exp once turned NaN into inf, so sigmoid(NaN) was 0 and a NaN bias gave
    a finite GRN output."""
    model, params, x, state0, da = _problem("grn")
    params["Bu"][:] = np.nan
    with np.errstate(all="ignore"):
        a, _ = module("grn", backend).forward(params, x, state0)
    assert np.all(np.isnan(a))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CELLS)
def test_empty_batch_and_empty_layer(name, backend):
    mod = module(name, backend)
    model = MODELS[name]
    for batch, n_out in ((0, 5), (3, 0)):
        n_in = _n_in(model, n_out)
        params = {k: np.zeros(s) for k, s in mod.param_shapes(n_in, n_out).items()}
        lead = (2, batch) if model.kind == RECURRENT else (batch,)
        x = np.zeros((*lead, n_in))
        a, grads, dx, dstate0 = _run(model, mod, params, x, None, np.zeros((*lead, n_out)))
        assert a.shape == (*lead, n_out) and dx.shape == x.shape
        assert all(g.shape == params[k].shape and not g.any() for k, g in grads.items())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [n for n, m in MODELS.items() if m.kind == COST])
def test_cost_of_an_empty_batch_is_nan_not_an_error(name, backend):
    C, da = module(name, backend).loss(np.zeros((0, 4)), np.zeros((0, 4)))
    assert np.isnan(C) and da.shape == (0, 4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CELLS)
def test_editing_what_is_returned_changes_nothing(name, backend):
    """A caller may edit the output in place (a mask, dropout) and the gradients it got:
    the next backward on the same cache gives the same gradients."""
    mod = module(name, backend)
    model, params, x, state0, da = _problem(name)
    if model.kind == RECURRENT:
        a, cache = mod.forward(params, x, state0)
        first = mod.backward(params, cache, da)
    else:
        a, cache = mod.forward(params, x)
        first = mod.backward(params, cache, da)
    want = [dict(first[0]), None if first[1] is None else first[1].copy()]
    want[0] = {k: v.copy() for k, v in want[0].items()}
    a *= 0.0
    a += 7.0
    for g in first[0].values():
        g.fill(-3.0)
    first[1].fill(5.0)
    again = mod.backward(params, cache, da)
    for k, v in want[0].items():
        np.testing.assert_array_equal(again[0][k], v, err_msg=k)
    np.testing.assert_array_equal(again[1], want[1])


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("tanh(W@x) + 1e308*10", "not a finite float64"),
        ("tanh(W@x)*exp(1000)", "not a finite float64"),
        ("tanh(W@x) + log(-1)", "not a real number"),
        ("(tanh(W@x)*1e200)**2", "not a finite float64"),
    ],
)
def test_constants_that_overflow_or_are_complex_are_refused(expression, message):
    spec = textwrap.dedent(
        f"""\
        name = "c"
        kind = "feedforward"
        input = "x"
        output = "a"
        [params]
        W = "matrix"
        [equations]
        a = "{expression}"
        """
    )
    with pytest.raises(parse.SpecError) as info:
        parse.loads(spec, "c.toml")
    assert str(info.value).startswith("c.toml:8:") and message in str(info.value)


def test_a_derived_constant_beyond_float64_prints_as_infinity():
    """A derivative's constant may overflow where the spec's do not: IEEE's inf, as the
    computation in float64 would give, not a crash of the printer."""
    import sympy as sp

    from symbolic import backends

    big = sp.Integer(10) ** 400
    assert backends.get("numpy").code(big * sp.Symbol("x")) == "1e999*x"
    assert backends.get("numba").code(-big * sp.Symbol("x")) == "-1e999*x"
