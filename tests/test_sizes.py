"""Named sizes (``[sizes]``, :mod:`symbolic.sizes`): the widths a spec declares and
infers, the errors of widths that do not fit, and the two-layer block ``mlp_block``
checked for every backend against an unrolled SymPy model (a second derivation,
independent of ours) and finite differences in random directions, at several sizes
(hidden != n_in != n_out); a matrix product of an intermediate compiled by Numba."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import textwrap

import numpy as np
import pytest
import sympy as sp

from symbolic import backends, parse
from symbolic.generate import builtin_specs
from symbolic.generate import render_model as render
from symbolic.parse import SpecError
from symbolic.validate import stage

BACKENDS = ("numpy", "numba", "torch", "jax")
#: (n_in, hidden, n_out): three distinct widths each time
SIZES = [(2, 3, 4), (3, 5, 2), (4, 2, 3)]

HEAD = """\
name = "sized"
kind = "feedforward"
input = "x"
output = "a"
"""


def _spec(body: str, head: str = HEAD) -> str:
    return head + textwrap.dedent(body)


def _module(spec_name: str, backend: str):
    mod = importlib.import_module(f"generated.{spec_name}_{backend}")
    adapt = backends.get(backend).adapt
    return adapt(mod) if adapt is not None else mod


def _staged(text: str, backend: str):
    """The module of a spec given as text, rendered for ``backend`` and imported."""
    model = parse.loads(text, "inner.toml")
    module = render(model, backend)
    path = stage(module.text, module.filename)
    spec = importlib.util.spec_from_file_location(f"_sized_{backend}_{path.parent.name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- parsing --------------------------------------------------------------------------------


def test_mlp_block_declares_its_hidden_width():
    cell = parse.load(next(p for p in builtin_specs() if p.stem == "mlp_block"))
    assert cell.sizes == {"hidden": 64}
    assert cell.shapes == {
        "W": ("hidden", "n_in"),
        "b": ("hidden",),
        "V": ("n_out", "hidden"),
        "c": ("n_out",),
    }
    assert cell.widths["h"] == "hidden" and cell.widths["a"] == "n_out"


def test_a_plain_matrix_takes_the_width_of_what_it_multiplies():
    cell = parse.loads(
        _spec("""
        [sizes]
        hidden = 8
        [params]
        W = { kind = "matrix", shape = ["hidden", "n_in"] }
        V = "matrix"
        [equations]
        h = "tanh(W@x)"
        a = "V@h"
        """)
    )
    assert cell.shapes["V"] == ("n_out", "hidden")


def test_a_spec_without_sizes_keeps_its_shapes():
    cell = parse.load(next(p for p in builtin_specs() if p.stem == "gru"))
    assert cell.sizes == {}
    assert cell.shapes["Uz"] == ("n_out", "n_out") and cell.shapes["Wz"] == ("n_out", "n_in")
    assert set(cell.widths.values()) == {"n_in", "n_out"}


BAD = {
    "vectors of two widths": (
        """
        [sizes]
        hidden = 8
        [params]
        W = { kind = "matrix", shape = ["hidden", "n_in"] }
        U = "matrix"
        [equations]
        h = "tanh(W@x)"
        g = "U@x"
        a = "h + g"
        """,
        'a = "h + g"',
        "a",
        "'g' has n_out units and 'h' has hidden units",
    ),
    "a matrix whose columns are another width": (
        """
        [sizes]
        hidden = 8
        [params]
        W = { kind = "matrix", shape = ["hidden", "n_in"] }
        V = { kind = "matrix", shape = ["n_out", "n_out"] }
        [equations]
        h = "tanh(W@x)"
        a = "V@h"
        """,
        'a = "V@h"',
        "V",
        "multiplies 'h' of hidden units, but its columns are n_out",
    ),
    "an output of a named width": (
        """
        [sizes]
        hidden = 8
        [params]
        W = { kind = "matrix", shape = ["hidden", "n_in"] }
        [equations]
        a = "tanh(W@x)"
        """,
        'a = "tanh(W@x)"',
        "a",
        "'a' has hidden units, but the output has n_out",
    ),
    "an unknown size": (
        """
        [params]
        W = { kind = "matrix", shape = ["hiden", "n_in"] }
        [equations]
        a = "W@x"
        """,
        "W = {",
        "W",
        "unknown size 'hiden'",
    ),
    "a size that is not a positive integer": (
        """
        [sizes]
        hidden = 0
        [params]
        W = "matrix"
        [equations]
        a = "W@x"
        """,
        "hidden = 0",
        "hidden",
        "an integer from 1",
    ),
    "an unused size": (
        """
        [sizes]
        hidden = 4
        [params]
        W = "matrix"
        [equations]
        a = "W@x"
        """,
        "hidden = 4",
        "hidden",
        "unused",
    ),
    "a size named like the layer's": (
        """
        [sizes]
        out = 4
        [params]
        W = "matrix"
        [equations]
        a = "W@x"
        """,
        "out = 4",
        "out",
        "reserved",
    ),
    "a size that is a symbol's name": (
        """
        [sizes]
        h = 4
        [params]
        W = { kind = "matrix", shape = ["h", "n_in"] }
        V = "matrix"
        [equations]
        h = "tanh(W@x)"
        a = "V@h"
        """,
        "h = 4",
        "h",
        "also a name of the cell",
    ),
    "a table with a wrong key": (
        """
        [params]
        W = { kind = "matrix", size = "n_out" }
        [equations]
        a = "W@x"
        """,
        "W = {",
        "W",
        "unknown key 'size' for a matrix",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_widths_that_do_not_fit_are_refused_naming_line_and_symbol(case):
    body, marker, symbol, message = BAD[case]
    text = _spec(body)
    line = next(i for i, t in enumerate(text.split("\n"), 1) if t.strip().startswith(marker))
    with pytest.raises(SpecError) as info:
        parse.loads(text, "bad.toml")
    assert (info.value.line, info.value.symbol) == (line, symbol), str(info.value)
    assert message in info.value.message
    assert str(info.value).startswith(f"bad.toml:{line}: '{symbol}' ")


def test_named_sizes_in_a_recurrent_cell_are_refused():
    head = HEAD.replace("feedforward", "recurrent") + 'state = { s = "a" }\n'
    with pytest.raises(SpecError, match="named sizes are for feedforward cells"):
        parse.loads(
            _spec(
                """
                [sizes]
                hidden = 4
                [params]
                W = "matrix"
                [equations]
                a = "W@x + s"
                """,
                head,
            )
        )


# --- the generated modules' API -------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_param_shapes_and_init_params_take_the_size_as_a_keyword(backend):
    pytest.importorskip({"torch": "torch", "jax": "jax"}.get(backend, "numpy"))
    raw = importlib.import_module(f"generated.mlp_block_{backend}")
    assert inspect.signature(raw.param_shapes).parameters["hidden"].default == 64
    assert inspect.signature(raw.param_shapes).parameters["hidden"].kind == (
        inspect.Parameter.KEYWORD_ONLY
    )
    assert inspect.signature(raw.init_params).parameters["hidden"].default == 64
    assert raw.param_shapes(3, 2) == {"W": (64, 3), "b": (64,), "V": (2, 64), "c": (2,)}
    mod = _module("mlp_block", backend)
    params = mod.init_params(3, 2, hidden=7, seed=1)
    assert {k: tuple(v.shape) for k, v in params.items()} == {
        "W": (7, 3),
        "b": (7,),
        "V": (2, 7),
        "c": (2,),
    }


def test_init_scales_each_matrix_by_its_own_fan_in():
    mod = importlib.import_module("generated.mlp_block_numpy")
    params = mod.init_params(4, 3, hidden=2000, seed=0)
    # W ~ N(0, 1/n_in), V ~ N(0, 1/hidden)
    assert abs(np.std(params["W"]) * np.sqrt(4) - 1) < 0.05
    assert abs(np.std(params["V"]) * np.sqrt(2000) - 1) < 0.05


def test_wrong_shapes_name_the_parameter():
    mod = importlib.import_module("generated.mlp_block_numpy")
    params = mod.init_params(3, 2, hidden=5)
    params["b"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"params\['b'\]: expected shape \(5,\)"):
        mod.forward(params, np.zeros((2, 3)))


# --- against an unrolled SymPy model and finite differences ---------------------------------


@functools.cache
def _unrolled(n_in: int, hidden: int, n_out: int, batch: int = 2):
    """The block written out entry by entry in SymPy, L = sum(wa * a), and its gradients
    by SymPy's own ``diff`` (nothing of our derivation), as NumPy functions."""
    W = sp.Matrix(hidden, n_in, lambda i, j: sp.Symbol(f"W{i}_{j}"))
    b = sp.Matrix(hidden, 1, lambda i, _: sp.Symbol(f"b{i}"))
    V = sp.Matrix(n_out, hidden, lambda i, j: sp.Symbol(f"V{i}_{j}"))
    c = sp.Matrix(n_out, 1, lambda i, _: sp.Symbol(f"c{i}"))
    X = sp.Matrix(batch, n_in, lambda i, j: sp.Symbol(f"x{i}_{j}"))
    WA = sp.Matrix(batch, n_out, lambda i, j: sp.Symbol(f"w{i}_{j}"))
    rows = []
    for r in range(batch):
        h = (W * X[r, :].T + b).applyfunc(sp.tanh)
        rows.append((V * h + c).T)
    A = sp.Matrix.vstack(*rows)
    L = sum(A[i, j] * WA[i, j] for i in range(batch) for j in range(n_out))
    leaves = {"W": W, "b": b, "V": V, "c": c, "x": X}
    args = [*W, *b, *V, *c, *X, *WA]
    value = sp.lambdify(args, A, "numpy")
    grads = {
        k: sp.lambdify(args, m.applyfunc(lambda s: sp.diff(L, s)), "numpy")
        for k, m in leaves.items()
    }
    return value, grads


def _flat(params, x, wa):
    return [
        *params["W"].ravel(),
        *params["b"],
        *params["V"].ravel(),
        *params["c"],
        *x.ravel(),
        *wa.ravel(),
    ]


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_block_agrees_with_the_unrolled_model(backend, sizes):
    pytest.importorskip({"torch": "torch", "jax": "jax"}.get(backend, "numpy"))
    n_in, hidden, n_out = sizes
    mod = _module("mlp_block", backend)
    rng = np.random.default_rng(sum(sizes))
    params = mod.init_params(n_in, n_out, hidden=hidden, seed=3)
    params = {k: np.asarray(v, dtype=np.float64) + 0.1 for k, v in params.items()}
    x = rng.standard_normal((2, n_in))
    wa = rng.standard_normal((2, n_out))
    value, grads = _unrolled(n_in, hidden, n_out)
    flat = _flat(params, x, wa)
    a, cache = mod.forward(params, x)
    np.testing.assert_allclose(np.asarray(a), np.asarray(value(*flat)), rtol=1e-12, atol=1e-12)
    got, dx = mod.backward(params, cache, wa)
    want = {k: np.asarray(f(*flat), dtype=np.float64) for k, f in grads.items()}
    for name in ("W", "b", "V", "c"):
        np.testing.assert_allclose(
            np.asarray(got[name]).reshape(want[name].shape), want[name], rtol=1e-11, atol=1e-12
        )
    np.testing.assert_allclose(np.asarray(dx), want["x"], rtol=1e-11, atol=1e-12)


def _directional_check(mod, params, x, rng, eps=1e-6):
    """<grad, d> == (L(p + eps d) - L(p - eps d)) / (2 eps) along a random direction of
    every parameter and of the input, L = <wa, a>."""
    a, cache = mod.forward(params, x)
    wa = rng.standard_normal(np.shape(a))
    grads, dx = mod.backward(params, cache, wa)
    dirs = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    dxd = rng.standard_normal(x.shape)

    def loss(t):
        moved = {k: v + t * dirs[k] for k, v in params.items()}
        return float(np.sum(wa * np.asarray(mod.forward(moved, x + t * dxd)[0])))

    numeric = (loss(eps) - loss(-eps)) / (2 * eps)
    analytic = sum(float(np.sum(np.asarray(grads[k]) * dirs[k])) for k in params)
    analytic += float(np.sum(np.asarray(dx) * dxd))
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(numeric))


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_block_gradients_are_finite_differences(backend, sizes):
    pytest.importorskip({"torch": "torch", "jax": "jax"}.get(backend, "numpy"))
    n_in, hidden, n_out = sizes
    mod = _module("mlp_block", backend)
    rng = np.random.default_rng(7)
    params = {
        k: np.asarray(v, dtype=np.float64)
        for k, v in mod.init_params(n_in, n_out, hidden=hidden).items()
    }
    for _ in range(3):
        _directional_check(mod, params, rng.standard_normal((3, n_in)), rng)


TWO_SIZES = _spec("""
    [sizes]
    hidden = 16
    inner = 8
    [params]
    c = "vector"
    V = "matrix"
    W = { kind = "matrix", shape = ["hidden", "n_in"] }
    U = { kind = "matrix", shape = ["inner", "hidden"] }
    b = { kind = "vector", size = "hidden" }
    g = { kind = "vector", size = "inner" }
    Wi = { kind = "matrix", shape = ["inner", "n_in"] }
    [equations]
    h = "tanh(W@x + b) - mean(W@x)"
    u = "sigmoid(U@h + g) * (Wi@x) + sum(U@h)"
    a = "V@(u*u) + c"
    """)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_named_sizes_with_reductions_over_each(backend):
    pytest.importorskip({"torch": "torch", "jax": "jax"}.get(backend, "numpy"))
    mod = _staged(TWO_SIZES, backend)
    adapt = backends.get(backend).adapt
    mod = adapt(mod) if adapt is not None else mod
    rng = np.random.default_rng(11)
    params = {
        k: np.asarray(v, dtype=np.float64) * 0.5
        for k, v in mod.init_params(3, 2, hidden=5, inner=4, seed=2).items()
    }
    assert params["U"].shape == (4, 5) and params["V"].shape == (2, 4)
    _directional_check(mod, params, rng.standard_normal((2, 3)), rng)


INNER = _spec("""
    [params]
    W = "matrix"
    b = "vector"
    V = "matrix"
    c = "vector"
    [equations]
    h = "tanh(W@x + b)"
    a = "V@h + c"
    """)


def test_numba_compiles_a_product_of_an_intermediate():
    numba_mod = _staged(INNER, "numba")
    numpy_mod = _staged(INNER, "numpy")
    assert "_forward_0" in inspect.getsource(numba_mod)  # a compiled segment
    rng = np.random.default_rng(5)
    params = numba_mod.init_params(3, 4, seed=1)
    x = rng.standard_normal((6, 3))
    a, cache = numba_mod.forward(params, x)
    np.testing.assert_allclose(a, numpy_mod.forward(params, x)[0], rtol=1e-12)
    _directional_check(numba_mod, params, x, rng)
