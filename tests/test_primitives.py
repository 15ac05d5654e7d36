"""The primitives table: every entry complete, its derivative right, its code stable.

The oracle for each derivative is a central finite difference of the primitive's NumPy
``reference`` (independent of SymPy); the SymPy side is ``sympy.diff`` rewritten in
elementary functions. A primitive added to the table is picked up by every test here.
"""

from __future__ import annotations

import importlib
import math
import warnings
from functools import cache

import numpy as np
import pytest
import sympy as sp

from symbolic import backends, primitives
from symbolic.backends.numba import primitives as numba_primitives
from symbolic.backends.numpy import primitives as numpy_primitives
from symbolic.primitives import PRIMITIVES, Primitive, to_elementary

NAMES = sorted(PRIMITIVES)
X = sp.Symbol("x", real=True)
OUT = sp.Symbol("out", real=True)

#: Where each primitive is smooth and defined (kinks and the log's pole excluded).
DOMAINS = {"log": (0.05, 6.0), "sqrt": (0.05, 6.0)}
KINKS = {"relu": 0.0, "step": 0.0, "abs": 0.0, "sign": 0.0}
#: Primitives whose derivative needs the argument, not only the output.
#: log' = 1/x, abs' = sign(x) and erf' = 2 e^(-x^2)/sqrt(pi): the output does not help.
NEEDS_ARGUMENT = {"log", "abs", "erf"}


#: What ``sympy.lambdify`` evaluates with: NumPy, and erf elementwise (NumPy has none).
MODULES = [{"erf": np.vectorize(math.erf, otypes=[float])}, "numpy"]


def sample(name: str, n: int = 40, seed: int = 0) -> np.ndarray:
    """Random points in the primitive's domain, away from its kink."""
    rng = np.random.default_rng(seed)
    low, high = DOMAINS.get(name, (-6.0, 6.0))
    x = rng.uniform(low, high, size=n)
    if name in KINKS:
        x = np.where(np.abs(x - KINKS[name]) < 0.1, x + 0.5, x)
    return x


def numpy_code(prim: Primitive, x: np.ndarray) -> np.ndarray:
    # Our own template (not spec text): eval is the point, it is what generated code runs.
    namespace = numpy_primitives.namespace()
    call = numpy_primitives.FORMS[prim.name].call
    return np.asarray(eval(call.format("x"), namespace, {"x": x}), dtype=float)


def numba_code(prim: Primitive, x: float) -> float:
    """The Numba template, compiled with its helpers (they build floats from bits, which
    plain Python cannot run), at one point."""
    return float(compiled(prim.name)(x))


@cache
def compiled(name: str):
    """The Numba template compiled by Numba (its float semantics: exp(1000) = inf)."""
    numba = pytest.importorskip("numba")
    prim = PRIMITIVES[name]
    namespace = numba_primitives.namespace()
    call = numba_primitives.FORMS[prim.name].call
    exec(f"def kernel(x):\n    return {call.format('x')}\n", namespace)
    return numba.njit(namespace["kernel"])


@pytest.mark.parametrize("name", NAMES)
def test_entry_is_complete(name):
    prim = PRIMITIVES[name]
    assert prim.name == name
    assert issubclass(prim.func, sp.Function) and prim.func.__name__ == name
    assert primitives.function(name) is prim.func
    for hook in (prim.derivative, prim.elementary, prim.reference):
        assert callable(hook)
    assert isinstance(prim.note, str)
    # every backend's table has the primitive's code
    for backend in backends.BUILTIN:
        table = importlib.import_module(f"symbolic.backends.{backend}.primitives").FORMS
        assert name in table, f"the {backend} backend has no code for {name}"
        assert isinstance(table[name].call, str) and "{0}" in table[name].call
        assert isinstance(table[name].helper, str)
        if table[name].helper:  # the helper defines what the code calls
            called = table[name].call.split("(")[0].strip()
            assert f"def {called}(" in table[name].helper
    for dep in numba_primitives.FORMS[name].requires:
        assert dep in PRIMITIVES
    call = prim.func(X)
    assert primitives.is_primitive_call(call)
    assert not primitives.is_primitive_call(sp.sin(X))
    # The elementary definition contains no primitive call.
    assert not any(
        primitives.is_primitive_call(a) for a in sp.preorder_traversal(to_elementary(call))
    )


@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_finite_difference(name):
    prim = PRIMITIVES[name]
    derivative = to_elementary(sp.diff(prim.func(X), X))
    assert not any(primitives.is_primitive_call(a) for a in sp.preorder_traversal(derivative))
    symbolic = sp.lambdify(X, derivative, MODULES)
    x = sample(name)
    h = 1e-6
    central = (prim.reference(x + h) - prim.reference(x - h)) / (2 * h)
    np.testing.assert_allclose(np.broadcast_to(symbolic(x), x.shape), central, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_elementary_definition_matches_reference(name):
    prim = PRIMITIVES[name]
    x = sample(name, seed=1)
    elementary = sp.lambdify(X, prim.elementary(X), MODULES)
    np.testing.assert_allclose(elementary(x), prim.reference(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(set(NAMES) - NEEDS_ARGUMENT))
def test_derivative_is_written_with_the_output(name):
    prim = PRIMITIVES[name]
    # Stated with the output alone: no trace of the argument.
    assert X not in prim.derivative(OUT, X).free_symbols
    # And sympy.diff, through fdiff, speaks in the one call f(x): replacing it by a symbol
    # leaves nothing of x.
    call = prim.func(X)
    assert X not in sp.diff(call, X).xreplace({call: OUT}).free_symbols


def test_sigmoid_and_tanh_derivatives_reuse_the_output():
    sigmoid, tanh = PRIMITIVES["sigmoid"].func, PRIMITIVES["tanh"].func
    ds = sp.diff(sigmoid(X), X)
    assert ds.atoms(sp.Function) == {sigmoid(X)}
    assert not ds.atoms(sp.exp)
    assert sp.expand(ds - sigmoid(X) * (1 - sigmoid(X))) == 0
    dt = sp.diff(tanh(X), X)
    assert dt.atoms(sp.Function) == {tanh(X)}
    assert sp.expand(dt - (1 - tanh(X) ** 2)) == 0


@pytest.mark.parametrize("name", NAMES)
def test_prime_is_the_derivative(name):
    prim = PRIMITIVES[name]
    assert primitives.prime(name, X) == sp.diff(prim.func(X), X)


@pytest.mark.parametrize("name", NAMES)
def test_numpy_template_matches_reference(name):
    prim = PRIMITIVES[name]
    x = sample(name, seed=2)
    with np.errstate(all="raise"):
        np.testing.assert_allclose(numpy_code(prim, x), prim.reference(x), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_numba_template_matches_reference(name):
    prim = PRIMITIVES[name]
    x = sample(name, n=10, seed=3)
    scalar = np.array([numba_code(prim, float(v)) for v in x])
    np.testing.assert_allclose(scalar, prim.reference(x), rtol=1e-12, atol=1e-15)
    kernel = compiled(name)
    np.testing.assert_allclose(
        [kernel(float(v)) for v in x], prim.reference(x), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("name", NAMES)
def test_evalf_uses_the_elementary_definition(name):
    prim = PRIMITIVES[name]
    value = sp.Rational(3, 7)
    expected = prim.elementary(value).evalf(30)
    assert abs(prim.func(value).evalf(30) - expected) < sp.Float(10) ** -25


@pytest.mark.parametrize("x, expected", [(1000.0, 1.0), (-1000.0, 0.0), (0.0, 0.5)])
def test_sigmoid_is_stable_at_large_arguments(x, expected):
    prim = PRIMITIVES["sigmoid"]
    arr = np.array([x])
    # no overflow and no invalid operation; underflow to 0 is the right answer in a tail
    with np.errstate(all="raise", under="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert numpy_code(prim, arr)[0] == expected
        assert prim.reference(arr)[0] == expected
        assert compiled("sigmoid")(x) == expected


@pytest.mark.parametrize("x, expected", [(1000.0, 1000.0), (-1000.0, 0.0), (0.0, math.log(2.0))])
def test_softplus_is_stable_at_large_arguments(x, expected):
    prim = PRIMITIVES["softplus"]
    arr = np.array([x])
    # exp(-1000) underflowing to 0 inside logaddexp is harmless (and unavoidable: the
    # answer's last bits are below double precision); overflow and invalid values are not.
    with np.errstate(all="raise", under="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in (numpy_code(prim, arr)[0], prim.reference(arr)[0], compiled("softplus")(x)):
            assert math.isfinite(value)
            assert value == pytest.approx(expected, rel=1e-15, abs=1e-300)


def test_relu_derivative_at_zero_is_zero():
    relu = PRIMITIVES["relu"]
    derivative = sp.diff(relu.func(X), X)
    # Symbolically, through the elementary definitions (Heaviside(0, 0) = 0) ...
    assert to_elementary(derivative.subs(X, 0)) == 0
    # ... and as the backends compute it, from the cached output relu(0) = 0.
    step = PRIMITIVES["step"]
    out = numpy_code(relu, np.array([0.0]))
    assert float(numpy_code(step, out)[0]) == 0.0
    assert numba_code(step, numba_code(relu, 0.0)) == 0.0
    assert compiled("step")(compiled("relu")(0.0)) == 0.0
    # Either side of the kink the derivative is 0 and 1.
    assert to_elementary(derivative.subs(X, -1)) == 0
    assert to_elementary(derivative.subs(X, 1)) == 1


def test_log_derivative_is_one_over_argument():
    log = PRIMITIVES["log"].func
    assert sp.diff(log(X), X) == 1 / X


def test_a_primitive_is_registered_once():
    prim = PRIMITIVES["sigmoid"]
    with pytest.raises(ValueError, match="already registered"):
        primitives.register("sigmoid", prim.derivative, prim.elementary, prim.reference)
    assert PRIMITIVES["sigmoid"] is prim


def test_numeric_namespace_covers_every_primitive():
    namespace = primitives.numeric_namespace()
    assert set(namespace) == set(PRIMITIVES)
    x = sample("sigmoid")
    np.testing.assert_allclose(namespace["sigmoid"](x), 1 / (1 + np.exp(-x)))


def test_to_elementary_rewrites_nested_calls():
    sigmoid, tanh = PRIMITIVES["sigmoid"].func, PRIMITIVES["tanh"].func
    expr = sigmoid(tanh(X) + 1)
    assert to_elementary(expr) == 1 / (1 + sp.exp(-(sp.tanh(X) + 1)))


@pytest.mark.parametrize("name", ["exp", "sigmoid", "tanh", "softplus"])
def test_compiled_transcendentals_are_accurate_everywhere(name):
    """The vectorizable polynomial forms stay within a few ulp of NumPy's libm over
    tiny, moderate and huge arguments (where exp overflows to inf or underflows to 0)."""
    numba = pytest.importorskip("numba")
    prim = PRIMITIVES[name]
    namespace = numba_primitives.namespace()
    exec(
        "def kernel(x, out):\n"
        "    for i in range(x.size):\n"
        f"        out[i] = {numba_primitives.FORMS[name].call.format('x[i]')}\n",
        namespace,
    )
    kernel = numba.njit(namespace["kernel"])
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.standard_normal(20000) * 3,
            rng.uniform(-700, 700, 2000),
            rng.standard_normal(2000) * 1e-8,
            [0.0, -0.0, 0.625, -0.625, 708.5, -708.5, 709.7, 1e300, -1e300],
        ]
    )
    out = np.empty_like(x)
    kernel(x, out)
    with np.errstate(over="ignore"):
        ref = prim.reference(x)
    finite = np.isfinite(ref) & (np.abs(ref) > 1e-300)
    rel = np.abs(out[finite] - ref[finite]) / np.abs(ref[finite])
    assert rel.max() < 1e-15
    assert np.array_equal(out[np.isinf(ref)], ref[np.isinf(ref)])
    assert np.all(np.abs(out[~finite & ~np.isinf(ref)]) < 1e-300)


@pytest.mark.parametrize("name", ["exp", "sigmoid", "tanh", "softplus"])
def test_compiled_transcendentals_keep_float32_in_float32(name):
    """A float32 argument is computed in float32 (twice the lanes of a vector), within
    3 ulp of the correctly rounded value wherever that is a normal float32, to the
    nearest subnormal below, and exactly at 0, the infinities and NaN."""
    numba = pytest.importorskip("numba")
    prim = PRIMITIVES[name]
    namespace = numba_primitives.namespace()
    call = numba_primitives.FORMS[name].call.format("v")
    exec(f"def one(v):\n    return {call}\n", namespace)
    exec(
        "def kernel(x, out):\n"
        "    for i in range(x.size):\n"
        f"        out[i] = {numba_primitives.FORMS[name].call.format('x[i]')}\n",
        namespace,
    )
    one = numba.njit(namespace["one"])
    one(np.float32(0.5))
    assert one.nopython_signatures[0].return_type == numba.float32
    kernel = numba.njit(namespace["kernel"])
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [
            rng.standard_normal(20000) * 3,
            rng.uniform(-110, 95, 20000),  # exp's overflow, subnormal and underflow ranges
            rng.standard_normal(2000) * 1e-6,
            [0.0, -0.0, 0.625, -0.625, 88.72, 88.73, -87.3, -103.9, -104.0],
            [np.inf, -np.inf, np.nan],
        ]
    ).astype(np.float32)
    out = np.empty_like(x)
    kernel(x, out)
    with np.errstate(over="ignore", under="ignore"):
        exact = prim.reference(x.astype(np.float64))
        rounded = exact.astype(np.float32)
    tiny = np.finfo(np.float32).tiny
    normal = np.isfinite(rounded) & (np.abs(rounded) >= tiny)
    ulp = np.spacing(np.abs(rounded[normal])).astype(np.float64)
    assert (np.abs(out[normal] - exact[normal]) / ulp).max() <= 3
    small = np.isfinite(rounded) & ~normal  # subnormal or zero
    assert np.all(np.abs(out[small].astype(np.float64) - exact[small]) <= 2 * tiny * 2.0**-23)
    special = ~np.isfinite(rounded)
    np.testing.assert_array_equal(out[special], rounded[special])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: np.dtype(d).name)
def test_compiled_log_is_within_one_ulp_everywhere(dtype):
    """The Numba modules' log (fdlibm's reduction and polynomial, from the argument's
    bits): within 1 ulp of the exact value (mpmath) over the normal and subnormal range,
    exact at 1, -inf at +-0, NaN below 0 and at NaN, inf at inf; a float32 argument
    computed in float32."""
    numba = pytest.importorskip("numba")
    mpmath = pytest.importorskip("mpmath")
    namespace = numba_primitives.namespace()
    call = numba_primitives.FORMS["log"].call
    exec(f"def one(v):\n    return {call.format('v')}\n", namespace)
    exec(
        f"def kernel(x, out):\n    for i in range(x.size):\n        out[i] = {call.format('x[i]')}\n",
        namespace,
    )
    one = numba.njit(namespace["one"])
    kernel = numba.njit(namespace["kernel"])
    info = np.finfo(dtype)
    rng = np.random.default_rng(3)
    lo, hi = np.log(float(info.smallest_subnormal)), np.log(float(info.max))
    x = np.concatenate(
        [
            rng.uniform(0, 3, 3000),
            np.exp(rng.uniform(lo, hi, 3000)),  # every binade, subnormals included
            1 + rng.standard_normal(1000) * 1e-6,  # near 1, where log is near 0
            rng.uniform(0.7, 1.42, 1000),  # either side of the reduction's sqrt(2)
            [info.smallest_subnormal, info.tiny, 1.0, 2.0, 0.5, info.max, np.sqrt(2.0)],
        ]
    ).astype(dtype)
    x = x[np.isfinite(x) & (x > 0)]
    out = np.empty_like(x)
    kernel(x, out)
    assert one(dtype(0.5)) == pytest.approx(math.log(0.5), rel=1e-6)
    assert one.nopython_signatures[0].return_type == numba.from_dtype(np.dtype(dtype))
    mpmath.mp.dps = 40
    exact = np.array([float(mpmath.log(mpmath.mpf(float(v)))) for v in x])
    nonzero = exact != 0
    ulp = np.spacing(np.abs(exact[nonzero].astype(dtype))).astype(np.float64)
    err = np.abs(out[nonzero].astype(np.float64) - exact[nonzero]) / ulp
    assert err.max() <= 1.0, f"log({x[nonzero][err.argmax()]!r}): {err.max():.2f} ulp"
    assert np.all(out[x == 1] == 0)
    special = np.array([0.0, -0.0, -1.0, -np.inf, np.nan, np.inf], dtype)
    got = np.empty_like(special)
    kernel(special, got)
    assert got[0] == got[1] == -np.inf
    assert np.isnan(got[2:5]).all() and got[5] == np.inf
