"""The printers (symbolic/printing.py and each backend's printer): exact strings.

The templates receive these strings verbatim, so every case pins the exact text. The
NumPy printer emits array code (``np.tanh``); the Numba printer emits scalar code for a
compiled loop (``math.tanh``); a framework's printer emits the NumPy text with its own
calls (``torch.tanh``). All read symbols through a name map.
"""

from __future__ import annotations

import re

import pytest
import sympy as sp

from symbolic import backends, primitives
from symbolic.backends.jax import primitives as jax_primitives
from symbolic.backends.numba import primitives as numba_primitives
from symbolic.backends.numba.printer import NumbaPrinter
from symbolic.backends.numpy import primitives as numpy_primitives
from symbolic.backends.numpy.printer import NumpyPrinter
from symbolic.backends.torch import primitives as torch_primitives

x, y, z, h = sp.symbols("x y z h")
P = primitives.function

BACKENDS = tuple(backends.BUILTIN)
#: Each backend's table of primitive code.
TABLES = {
    "numpy": numpy_primitives,
    "numba": numba_primitives,
    "torch": torch_primitives,
    "jax": jax_primitives,
}
#: A whole-array framework's text is the NumPy text with its calls: NumPy's -> its own.
CALLS = {
    "torch": {
        "np.sqrt(": "torch.sqrt(",
        "_np_sigmoid(": "torch.sigmoid(",
        "np.tanh(": "torch.tanh(",
        "np.exp(": "torch.exp(",
        "np.log(": "torch.log(",
        "_np_softplus(x)": "_softplus(x)",
        "np.sign(np.maximum(x, 0))": "_step(x)",  # before relu's
        "np.maximum(x, 0)": "torch.relu(x)",
    },
    "jax": {
        "np.sqrt(": "_jnp.sqrt(",
        "_np_sigmoid(": "_jax.nn.sigmoid(",
        "np.tanh(": "_jnp.tanh(",
        "np.exp(": "_jnp.exp(",
        "np.log(": "_jnp.log(",
        "_np_softplus(x)": "_jnp.logaddexp(x, 0.0)",
        "np.sign(np.maximum(x, 0))": "_step(x)",  # before relu's
        "np.maximum(x, 0)": "_relu(x)",
    },
}


def expected_text(numpy_text: str, numba_text: str, backend: str) -> str:
    """The text ``backend`` prints, from the NumPy and Numba columns of a case."""
    if backend == "numba":
        return numba_text
    for numpy_call, call in CALLS.get(backend, {}).items():
        numpy_text = numpy_text.replace(numpy_call, call)
    return numpy_text


def code(expr: sp.Expr, backend: str, names: dict[str, str] | None = None) -> str:
    """``expr`` printed by ``backend``'s printer, as the registry hands it to layouts."""
    return backends.get(backend).code(expr, names)


# (expression, numpy text, numba text)
CASES = [
    # arithmetic
    pytest.param(x + y, "x + y", "x + y", id="add"),
    pytest.param(x - y, "x - y", "x - y", id="sub"),
    pytest.param(-x, "-x", "-x", id="neg"),
    pytest.param(2 * x, "2*x", "2*x", id="int-coefficient"),
    pytest.param(x / y, "x/y", "x/y", id="div"),
    pytest.param(x * y**2 / (x + y), "x*y**2/(x + y)", "x*y**2/(x + y)", id="mul-div"),
    pytest.param(sp.Integer(3), "3", "3", id="integer"),
    pytest.param(sp.Float(0.1) * x, "0.1*x", "0.1*x", id="float"),
    pytest.param(sp.Float(1e-30), "1e-30", "1e-30", id="tiny-float"),
    # powers
    pytest.param(x**2, "x**2", "x**2", id="square"),
    pytest.param(x**3, "x**3", "x**3", id="cube"),
    pytest.param((x - y) ** 3, "(x - y)**3", "(x - y)**3", id="power-of-sum"),
    pytest.param(1 / x, "1/x", "1/x", id="reciprocal"),
    pytest.param(1 / (x + y), "1/(x + y)", "1/(x + y)", id="reciprocal-of-sum"),
    pytest.param(1 / x**2, "1/x**2", "1/x**2", id="reciprocal-square"),
    pytest.param(x**-3, "1/x**3", "1/x**3", id="reciprocal-cube"),
    pytest.param(sp.sqrt(x), "np.sqrt(x)", "math.sqrt(x)", id="sqrt"),
    pytest.param(sp.sqrt(x + y), "np.sqrt(x + y)", "math.sqrt(x + y)", id="sqrt-of-sum"),
    pytest.param(2 * sp.sqrt(x), "2*np.sqrt(x)", "2*math.sqrt(x)", id="sqrt-times"),
    pytest.param(x ** sp.Rational(-3, 2), "x**(-1.5)", "x**(-1.5)", id="rational-power"),
    # rationals: exact binary fractions as floats, others as a division
    pytest.param(sp.Rational(1, 2), "0.5", "0.5", id="half"),
    pytest.param(sp.Rational(-1, 2), "-0.5", "-0.5", id="minus-half"),
    pytest.param(sp.Rational(3, 2), "1.5", "1.5", id="three-halves"),
    pytest.param(sp.Rational(1, 3), "(1/3)", "(1/3)", id="third"),
    pytest.param(sp.Rational(1, 10), "(1/10)", "(1/10)", id="tenth"),
    pytest.param(x / 2, "(0.5)*x", "(0.5)*x", id="half-x"),
    pytest.param(x / 3, "((1/3))*x", "((1/3))*x", id="third-x"),
    pytest.param(-x / 3, "-(1/3)*x", "-(1/3)*x", id="minus-third-x"),
    pytest.param(2 * x / 3, "((2/3))*x", "((2/3))*x", id="two-thirds-x"),
    # primitives
    pytest.param(P("sigmoid")(x), "_np_sigmoid(x)", "_sigmoid(x)", id="sigmoid"),
    pytest.param(P("tanh")(x), "np.tanh(x)", "_tanh(x)", id="tanh"),
    pytest.param(P("exp")(x), "np.exp(x)", "_exp(x)", id="exp"),
    pytest.param(P("exp")(-x), "np.exp(-x)", "_exp(-x)", id="exp-neg"),
    pytest.param(P("log")(x), "np.log(x)", "_log(x)", id="log"),
    pytest.param(
        P("softplus")(x),
        "_np_softplus(x)",
        "_softplus(x)",
        id="softplus",
    ),
    pytest.param(P("relu")(x), "np.maximum(x, 0)", "max(x, 0.0)", id="relu"),
    pytest.param(P("step")(x), "np.sign(np.maximum(x, 0))", "_step(x)", id="step"),
    # primitives inside expressions: arguments printed recursively, precedence kept
    pytest.param(P("tanh")(x + y), "np.tanh(x + y)", "_tanh(x + y)", id="tanh-of-sum"),
    pytest.param(
        P("sigmoid")(P("tanh")(x)),
        "_np_sigmoid(np.tanh(x))",
        "_sigmoid(_tanh(x))",
        id="nested",
    ),
    pytest.param(1 - P("tanh")(x) ** 2, "1 - np.tanh(x)**2", "1 - _tanh(x)**2", id="tanh-prime"),
    pytest.param(
        -P("sigmoid")(x),
        "-_np_sigmoid(x)",
        "-_sigmoid(x)",
        id="neg-sigmoid",
    ),
    pytest.param(
        1 / P("sigmoid")(x),
        "1/_np_sigmoid(x)",
        "1/_sigmoid(x)",
        id="reciprocal-sigmoid",
    ),
    pytest.param(
        P("softplus")(x) ** 2,
        "_np_softplus(x)**2",
        "_softplus(x)**2",
        id="softplus-squared",
    ),
    pytest.param(y * P("step")(x), "y*np.sign(np.maximum(x, 0))", "y*_step(x)", id="step-times"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("expr", "numpy_text", "numba_text"), CASES)
def test_exact_text(expr, numpy_text, numba_text, backend):
    assert code(expr, backend) == expected_text(numpy_text, numba_text, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_symbols_are_renamed_through_the_name_map(backend):
    names = {"x": "G_seq", "h": "h_seq", "y": "p_W"}
    assert code(x * y + h, backend, names) == "h_seq + G_seq*p_W"
    assert code(P("tanh")(x) * z, backend, names) == expected_text(
        "z*np.tanh(G_seq)", "z*_tanh(G_seq)", backend
    )
    # names not in the map print as themselves; the map is not mutated
    assert code(z, backend, names) == "z"
    assert names == {"x": "G_seq", "h": "h_seq", "y": "p_W"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_renaming_applies_inside_primitive_arguments_and_powers(backend):
    names = {"x": "Zu", "y": "ac"}
    assert code(P("sigmoid")(x), backend, names) == expected_text(
        "_np_sigmoid(Zu)", "_sigmoid(Zu)", backend
    )
    assert code(1 - y**2, backend, names) == "1 - ac**2"
    assert code(1 / y**2, backend, names) == "1/ac**2"


def test_printer_classes_and_code_agree():
    assert NumpyPrinter({"x": "u"}).doprint(x**2) == code(x**2, "numpy", {"x": "u"})
    assert NumbaPrinter().doprint(sp.sqrt(x)) == code(sp.sqrt(x), "numba")


#: Primitives whose bare call is Python's builtin of the same meaning.
BUILTIN_CALLS = {"abs"}


def _bare_call(name: str, text: str) -> bool:
    """True when ``text`` calls ``name`` without a module prefix (``tanh(`` not ``np.tanh(``)."""
    return re.search(rf"(?<![\w.]){re.escape(name)}\(", text) is not None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(primitives.PRIMITIVES))
def test_no_primitive_is_printed_as_a_bare_sympy_name(name, backend):
    prim = primitives.PRIMITIVES[name]
    # each primitive, alone, nested, and inside arithmetic
    for expr in (prim.func(x), prim.func(x + y) * z, prim.func(P("tanh")(x)), prim.func(x) ** 2):
        text = code(expr, backend)
        for other in primitives.PRIMITIVES:
            if other in BUILTIN_CALLS:
                continue  # Python's own abs() is the primitive, in scalar and array code
            assert not _bare_call(other, text), f"{expr} printed as {text!r}"
        if name not in BUILTIN_CALLS:  # SymPy's own text would be the same builtin call
            assert str(expr) != text
    # the printed entry is the registry's, so a primitive has one definition
    assert code(prim.func(x), backend) == TABLES[backend].FORMS[name].call.format("x")


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_functions_are_refused(backend):
    with pytest.raises(TypeError, match="not a primitive"):
        code(sp.Function("f")(x), backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "expr",
    [
        pytest.param(sp.log(2) * x, id="log(2)"),
        pytest.param(sp.exp(x), id="sympy-exp"),
        pytest.param(sp.tanh(x), id="sympy-tanh"),
        pytest.param(sp.log(x), id="sympy-log"),
    ],
)
def test_sympy_builtin_functions_are_not_printed_bare(expr, backend):
    try:
        text = code(expr, backend)
    except TypeError:
        return  # refusing is fine; emitting an undefined name is not
    for name in ("exp", "tanh", "log"):
        assert not _bare_call(name, text), f"{expr} printed as {text!r}"


def _namespace(backend: str) -> dict:
    return TABLES[backend].namespace()


def _values(backend: str, values: dict[str, float]) -> dict:
    """The values a backend's code runs on: floats, float64 tensors for torch, float64
    arrays for JAX (its x64 mode on, as the JAX adapter sets it)."""
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        return {k: jnp.asarray(v, dtype=jnp.float64) for k, v in values.items()}
    if backend != "torch":
        return dict(values)
    import torch

    return {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_printed_code_evaluates_to_the_expression(backend):
    """The strings are code: evaluate them and compare with SymPy's elementary value."""
    values = {"x": 0.7, "y": 1.3, "z": -0.4}
    exprs = [
        x**2 / y,
        1 / x**2 + sp.sqrt(y),
        sp.Rational(1, 3) * x - sp.Rational(1, 2) * y,
        P("sigmoid")(z) * (1 - P("sigmoid")(z)),
        P("tanh")(z) + P("tanh")(x) * P("sigmoid")(-y),
        P("softplus")(z) + P("relu")(z) + P("step")(x) + P("log")(y) + P("exp")(-x),
        x ** sp.Rational(-3, 2),
    ]
    namespace = _namespace(backend)
    for expr in exprs:
        text = code(expr, backend)
        got = float(eval(text, namespace, _values(backend, values)))  # noqa: S307 - test oracle
        want = float(primitives.to_elementary(expr).subs(values).evalf(30))
        assert got == pytest.approx(want, rel=1e-13), text


#: Points where each primitive's printed code must match its NumPy reference: around
#: zero, the curved region, and far out (|x| = 1000 for the bounded ones).
POINTS = {
    "sigmoid": [-1000, -40, -5, -1, -1e-9, 0, 1e-9, 0.3, 1, 5, 40, 1000],
    "tanh": [-1000, -20, -1, -0.6, -0.1, -1e-9, 0, 1e-9, 0.1, 0.6, 0.7, 1, 20, 1000],
    "exp": [-700, -30, -1, -1e-9, 0, 1e-9, 0.5, 1, 30, 700],
    "log": [1e-300, 1e-9, 0.5, 1, 2, 1e300],
    "softplus": [-1000, -40, -1, 0, 1e-9, 1, 40, 1000],
    "relu": [-1000, -1, -1e-9, 0, 1e-9, 1, 1000],
    "step": [-1000, -1, -1e-300, 0, 1e-300, 1, 1000],
    "sign": [-1000, -1, -1e-300, 0, 1e-300, 1, 1000],
    "abs": [-1000, -1, -1e-300, 0, 1e-300, 1, 1000],
    "sqrt": [0, 1e-300, 1e-9, 0.5, 1, 2, 1e300],
    "erf": [-30, -6, -1, -1e-9, 0, 1e-300, 1e-9, 0.3, 1, 6, 30],
}


def _reference_cases() -> list:
    return [
        pytest.param(name, backend, id=f"{name}-{backend}")
        for name in sorted(primitives.PRIMITIVES)
        for backend in BACKENDS
    ]


@pytest.mark.parametrize(("name", "backend"), _reference_cases())
def test_each_primitive_computes_its_reference(name, backend):
    """The printed code of each primitive, run, agrees with the registry's NumPy
    reference to 1e-13 (relative), far into the tails included, without overflow or
    invalid operations (underflow to 0 is the right answer in a tail)."""
    import numpy as np

    assert name in POINTS, f"no test points for the primitive {name}: add them"
    namespace = _namespace(backend)
    text = code(primitives.function(name)(x), backend)
    prim = primitives.PRIMITIVES[name]
    for point in POINTS[name]:
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            got = float(eval(text, namespace, _values(backend, {"x": float(point)})))  # noqa: S307
            want = float(prim.reference(np.float64(point)))
        assert got == pytest.approx(want, rel=1e-13, abs=1e-300), f"{name}({point}): {text}"
