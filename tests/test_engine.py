"""The engine on cells beyond the built-in ones: every construct a spec may use either
generates code whose gradients match finite differences, or fails with a clear error.

Oracle: central finite differences along random directions of the generated forward
pass (independent of the derivation).
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from once import once

from symbolic.backends import UnsupportedSpec
from symbolic.generate import generate

CELLS = {
    # the README's walk-through: the GRN's candidate given a reset gate
    "grn_reset": """
        name = "grn_reset"
        kind = "recurrent"
        input = "x"
        output = "a"
        state = { h = "a" }
        [params]
        WXu = "matrix"
        WXc = "matrix"
        WTu = "vector"
        WTc = "vector"
        Bu  = "vector"
        Bc  = "vector"
        WXr = "matrix"
        WTr = "vector"
        Br  = "vector"
        [equations]
        Zr = "WTr*h + WXr@x + Br"
        r  = "sigmoid(Zr)"
        Zu = "WTu*h + WXu@x + Bu"
        Zc = "WTc*(r*h) + WXc@x + Bc"
        G  = "sigmoid(Zu)"
        ac = "tanh(Zc)"
        a  = "G*ac + (1 - G)*h"
    """,
    # a matrix applied to an intermediate inside the step, the same matrix twice,
    # and a state read after the matrix products (weight sharing)
    "shared": """
        name = "shared"
        kind = "recurrent"
        input = "x"
        output = "a"
        state = { h = "a" }
        [params]
        W = "matrix"
        U = "matrix"
        [equations]
        z = "W@x + U@h"
        b = "tanh(z)"
        a = "U@b + 0.5*h"
    """,
    # constants, nested primitives, division and powers
    "nested": """
        name = "nested"
        kind = "feedforward"
        input = "x"
        output = "a"
        [params]
        W = "matrix"
        [equations]
        k = "2"
        a = "k*exp(W@x/2) + log(1 + softplus(W@x))**2 / (1 + relu(W@x))"
    """,
    # the output is not the state's next value; the state feeds the output too
    "split": """
        name = "split"
        kind = "recurrent"
        input = "x"
        output = "o"
        state = { h = "hn" }
        [params]
        W = "matrix"
        w = "vector"
        [equations]
        hn = "tanh(W@x + w*h)"
        o = "hn*hn + h"
    """,
}


def _write(tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(CELLS[name]))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Generate every cell above into an importable temporary package, once for all the
    test workers (the Numba cache beside it is shared too)."""
    root = Path(once(tmp_path_factory, "engine", _generated))
    sys.path.insert(0, str(root))
    yield "edge_cells"
    sys.path.remove(str(root))
    for key in [k for k in sys.modules if k.startswith("edge_cells")]:
        del sys.modules[key]


def _generated(root: Path) -> str:
    specs = [_write(root, name) for name in CELLS]
    generate(specs, ["numpy", "numba"], out=root / "edge_cells")
    return str(root)


def _fd_worst(module, dtype=np.float64, seed=0) -> float:
    """Worst relative error of every gradient against central differences."""
    rng = np.random.default_rng(seed)
    T, B, n_in, n_out = 4, 3, 3, 5
    recurrent = module.KIND == "recurrent"
    params = {
        k: (v + rng.uniform(-0.5, 0.5, v.shape)).astype(dtype)
        for k, v in module.init_params(n_in, n_out, seed=seed, dtype=dtype).items()
    }
    x = rng.standard_normal((T, B, n_in) if recurrent else (B, n_in)).astype(dtype)
    states = {s: 0.5 * rng.standard_normal((B, n_out)) for s in getattr(module, "STATES", ())}
    weights = rng.standard_normal((T, B, n_out) if recurrent else (B, n_out))
    state_weights = {s: rng.standard_normal((B, n_out)) for s in states}

    def cost(p, x, s0):
        if recurrent:
            a, cache = module.forward(p, x, s0)
            return np.sum(weights * a) + sum(
                np.sum(state_weights[s] * cache["state"][s]) for s in s0
            )
        return np.sum(weights * module.forward(p, x)[0])

    if recurrent:
        _, cache = module.forward(params, x, states)
        grads, dx, dstate = module.backward(params, cache, weights, state_weights)
    else:
        _, cache = module.forward(params, x)
        grads, dx = module.backward(params, cache, weights)
        dstate = {}
    eps, worst = 1e-6, 0.0

    def record(fd, analytic):
        nonlocal worst
        worst = max(worst, abs(fd - analytic) / max(abs(fd), 1e-8))

    for name, value in params.items():
        v = rng.standard_normal(value.shape)
        plus, minus = dict(params), dict(params)
        plus[name], minus[name] = value + eps * v, value - eps * v
        record(
            (cost(plus, x, states) - cost(minus, x, states)) / (2 * eps), np.sum(grads[name] * v)
        )
    v = rng.standard_normal(x.shape)
    record(
        (cost(params, x + eps * v, states) - cost(params, x - eps * v, states)) / (2 * eps),
        np.sum(dx * v),
    )
    for s in states:
        v = rng.standard_normal(states[s].shape)
        plus = {**states, s: states[s] + eps * v}
        minus = {**states, s: states[s] - eps * v}
        record((cost(params, x, plus) - cost(params, x, minus)) / (2 * eps), np.sum(dstate[s] * v))
    return worst


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", ["shared", "split", "grn_reset"])
def test_recurrent_edge_cells_match_finite_differences(built, name, backend):
    module = importlib.import_module(f"{built}.{name}_{backend}")
    assert _fd_worst(module) < 1e-6


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_nested_primitives_match_finite_differences(built, backend):
    module = importlib.import_module(f"{built}.nested_{backend}")
    assert _fd_worst(module) < 1e-6


def test_numba_and_numpy_agree_on_a_shared_matrix(built):
    fast = importlib.import_module(f"{built}.shared_numba")
    ref = importlib.import_module(f"{built}.shared_numpy")
    rng = np.random.default_rng(1)
    params = ref.init_params(3, 4, seed=2)
    x = rng.standard_normal((5, 2, 3))
    a1, c1 = ref.forward(params, x)
    a2, c2 = fast.forward(params, x)
    g1, dx1, _ = ref.backward(params, c1, a1)
    g2, dx2, _ = fast.backward(params, c2, a2)
    np.testing.assert_allclose(a2, a1, rtol=1e-12, atol=1e-14)
    for key in g1:
        np.testing.assert_allclose(g2[key], g1[key], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx2, dx1, rtol=1e-12, atol=1e-14)
    # rows with NaN and inf: non-finite in the same places, equal elsewhere
    x[0, 0, 0], x[1, 1, 1] = np.nan, np.inf
    with np.errstate(all="ignore"):
        a1, c1 = ref.forward(params, x)
        a2, c2 = fast.forward(params, x)
        g1, dx1, _ = ref.backward(params, c1, np.ones_like(a1))
        g2, dx2, _ = fast.backward(params, c2, np.ones_like(a2))
    for got, want in [(a2, a1), (dx2, dx1), *((g2[k], g1[k]) for k in g1)]:
        mask = np.isfinite(want)
        assert np.array_equal(np.isfinite(got), mask)
        np.testing.assert_allclose(got[mask], want[mask], rtol=1e-12, atol=1e-14)
    assert np.isnan(a1[0, 0]).all()


def test_unsupported_layout_is_a_clear_error_and_writes_nothing(tmp_path):
    # a parameter named as an attribute of torch.nn.Module: the torch backend cannot
    # register it, so generating for NumPy and torch together writes nothing at all
    spec = tmp_path / "deep.toml"
    spec.write_text(
        textwrap.dedent(
            """
            name = "deep"
            kind = "feedforward"
            input = "x"
            output = "a"
            [params]
            W = "matrix"
            training = "matrix"
            [equations]
            a = "tanh(training@tanh(W@x))"
            """
        )
    )
    out = tmp_path / "out"
    with pytest.raises(UnsupportedSpec, match="torch.nn.Module has an attribute of that name"):
        generate([spec], ["numpy", "torch"], out=out)
    assert not out.exists() or not any(out.iterdir())
    # the NumPy and Numba backends handle it (Numba: a product of an intermediate)
    generate([spec], ["numpy", "numba"], out=out)
    assert (out / "deep_numpy.py").exists() and (out / "deep_numba.py").exists()


def test_numba_modules_name_the_extra_when_numba_is_missing():
    """Without numba, a numba module says which extra to install; numpy modules work."""
    import subprocess

    code = textwrap.dedent(
        """
        import sys
        sys.modules["numba"] = None  # as if numba were not installed
        import generated.grn_numpy
        try:
            import generated.grn_numba
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'derivgen[numba]'" in out.stdout
    assert "generated.grn_numpy" in out.stdout
