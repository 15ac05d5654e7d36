"""Gradients of every generated module, against oracles independent of our derivation.

1. Finite differences along random directions, for every parameter, the input and every
   initial state (and the ``dstate`` path), with a loss made of the generated
   ``squared_error`` module plus random upstream weights: relative error < 1e-6 in
   float64. float32 runs end to end too: outputs and gradients stay float32, and their
   directional derivatives agree with float64 finite differences to 1e-3.
2. Backpropagation through time against an unrolled symbolic model, for T = 1, 2, 3:
   the cell is unrolled in SymPy straight from its spec's equation text (with the
   primitives' textbook definitions, not derivgen's derivative table) and ``sympy.diff``
   of the loss is evaluated at the same random point (1e-10).
3. Wrong shapes and dtypes raise ValueError naming the argument.
4. The sigmoid is stable: no overflow at |z| = 1000 under ``np.errstate(all="raise")``.
"""

from __future__ import annotations

import functools
import importlib
import re
import tomllib

import numpy as np
import pytest
import sympy as sp

from symbolic import parse
from symbolic.backends import array_backends
from symbolic.generate import builtin_specs
from symbolic.model import COST, RECURRENT

#: The NumPy-array backends (the torch modules are tested in tests/backends/).
BACKENDS = array_backends()
SPECS = {path.stem: path for path in builtin_specs()}
MODELS = {name: parse.load(path) for name, path in SPECS.items()}
COST_NAME = "squared_error"


def _params(kinds) -> list:
    out = []
    for name, model in MODELS.items():
        if model.kind not in kinds:
            continue
        for backend in BACKENDS:
            out.append(pytest.param((name, backend), id=f"{name}-{backend}"))
    return out


CELLS = _params({"feedforward", RECURRENT})
RECURRENT_CELLS = _params({RECURRENT})
COSTS = _params({COST})


def module(name: str, backend: str):
    return importlib.import_module(f"generated.{name}_{backend}")


def cost_module(backend: str):
    return module(COST_NAME, backend)


# Small sizes: numba compile time counts, and the symbolic oracle grows with them.
T, B, N_IN, N_OUT = 3, 2, 3, 4


def n_in(name: str) -> int:
    """The input's size for a spec: an elementwise input has the output's."""
    return N_OUT if MODELS[name].input_elementwise else N_IN


class Problem:
    """One random point for a cell: params, input, initial states, target and the
    random upstream weights of the loss."""

    def __init__(self, name: str, seed: int = 0, dtype=np.float64):
        self.model = MODELS[name]
        self.recurrent = self.model.kind == RECURRENT
        rng = np.random.default_rng(seed)
        mod = module(name, "numpy")
        shapes = mod.param_shapes(n_in(name), N_OUT)
        # scale 0.8: inside the nonlinearities' curved region, not saturated
        self.params = {k: 0.8 * rng.standard_normal(s) for k, s in shapes.items()}
        lead = (T, B) if self.recurrent else (B,)
        self.x = rng.standard_normal((*lead, n_in(name)))
        self.state0 = {s: 0.5 * rng.standard_normal((B, N_OUT)) for s in self.model.states}
        self.y = rng.uniform(-1, 1, (*lead, N_OUT))
        self.upstream = rng.standard_normal((*lead, N_OUT))
        self.dstate = {s: rng.standard_normal((B, N_OUT)) for s in self.model.states}
        if dtype != np.float64:
            self.cast(dtype)

    def cast(self, dtype):
        self.params = {k: v.astype(dtype) for k, v in self.params.items()}
        self.x = self.x.astype(dtype)
        self.state0 = {k: v.astype(dtype) for k, v in self.state0.items()}
        self.upstream = self.upstream.astype(dtype)
        self.dstate = {k: v.astype(dtype) for k, v in self.dstate.items()}


def final_states(model, a, cache) -> dict[str, np.ndarray]:
    """The states after the last step: the output's last step when a state carries the
    output (the GRN's h), else what the cache records."""
    return {
        s: a[-1] if target == model.output else cache["state"][s]
        for s, target in model.states.items()
    }


def loss(mod, cost, prob: Problem, params, x, state0):
    """L = squared error + <upstream, a> + <dstate, final states>."""
    if prob.recurrent:
        a, cache = mod.forward(params, x, state0)
    else:
        a, cache = mod.forward(params, x)
    C, _ = cost.loss(a, prob.y)
    value = C + float(np.sum(prob.upstream * a, dtype=np.float64))
    if prob.recurrent:
        for s, v in final_states(prob.model, a, cache).items():
            value += float(np.sum(prob.dstate[s] * v, dtype=np.float64))
    return value


def analytic(mod, cost, prob: Problem):
    """(a, grads, dx, dstate0) from the module's own backward."""
    if prob.recurrent:
        a, cache = mod.forward(prob.params, prob.x, prob.state0)
    else:
        a, cache = mod.forward(prob.params, prob.x)
    _, dC = cost.loss(a, prob.y.astype(a.dtype))
    da = dC + prob.upstream
    if prob.recurrent:
        grads, dx, dstate0 = mod.backward(prob.params, cache, da, prob.dstate)
    else:
        grads, dx = mod.backward(prob.params, cache, da)
        dstate0 = {}
    return a, grads, dx, dstate0


def arguments(prob: Problem, grads, dx, dstate0):
    """(label, value, gradient, setter) for every parameter, the input, every state."""
    out = []
    for k in prob.params:
        out.append(
            (
                f"params[{k!r}]",
                prob.params[k],
                grads[k],
                lambda p, v, k=k: ({**p[0], k: v}, p[1], p[2]),
            )
        )
    out.append(("x", prob.x, dx, lambda p, v: (p[0], v, p[2])))
    for s in prob.state0:
        out.append(
            (
                f"state0[{s!r}]",
                prob.state0[s],
                dstate0[s],
                lambda p, v, s=s: (p[0], p[1], {**p[2], s: v}),
            )
        )
    return out


def directional_fd(f, point, direction, eps=1e-6) -> float:
    return (f(point + eps * direction) - f(point - eps * direction)) / (2 * eps)


def rel_err(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-8)


# ---------------------------------------------------------------------------------------
# 1. Finite differences
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CELLS)
def test_finite_differences_float64(case):
    name, backend = case
    mod, cost = module(name, backend), cost_module(backend)
    prob = Problem(name, seed=1)
    _, grads, dx, dstate0 = analytic(mod, cost, prob)
    rng = np.random.default_rng(2)
    base = (prob.params, prob.x, prob.state0)
    for label, value, grad, setter in arguments(prob, grads, dx, dstate0):
        assert grad.shape == value.shape, f"{label}: gradient shape {grad.shape}"
        for _ in range(2):
            d = rng.standard_normal(value.shape)

            def f(v, setter=setter):
                return loss(mod, cost, prob, *setter(base, v))

            fd = directional_fd(f, value, d)
            an = float(np.sum(grad * d))
            assert rel_err(fd, an) < 1e-6, f"{name}_{backend} {label}: FD {fd!r} vs analytic {an!r}"


def params_reaching_states(model) -> set[str]:
    """The parameters the states' next values depend on (through equations and
    products): the only ones a gradient by the final states reaches."""
    products = {p.name: p for p in model.projections}
    needed = set(model.states.values())
    reach: set[str] = set()
    for eq in reversed(model.equations):
        if eq.name not in needed:
            continue
        for sym in eq.expr.free_symbols:
            name = sym.name
            if name in products:
                reach.add(products[name].matrix)
                needed.add(products[name].arg)
            elif name in model.params:
                reach.add(name)
            else:
                needed.add(name)
    return reach


@pytest.mark.parametrize("case", RECURRENT_CELLS)
def test_dstate_none_is_zero_dstate_and_dstate_matters(case):
    name, backend = case
    mod = module(name, backend)
    prob = Problem(name, seed=3)
    a, cache = mod.forward(prob.params, prob.x, prob.state0)
    da = np.ones_like(a)
    zeros = {s: np.zeros((B, N_OUT)) for s in prob.state0}
    g0, dx0, ds0 = mod.backward(prob.params, cache, da, None)
    g1, dx1, ds1 = mod.backward(prob.params, cache, da, zeros)
    g2, dx2, ds2 = mod.backward(prob.params, cache, da, prob.dstate)
    reach = params_reaching_states(prob.model)
    for k in g0:
        np.testing.assert_array_equal(g0[k], g1[k])
        if k in reach:
            assert not np.allclose(g0[k], g2[k]), f"a nonzero dstate did not reach {k}"
        else:  # (SRU's reset gate r shapes the output only)
            np.testing.assert_allclose(g0[k], g2[k], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(dx0, dx1)
    for s in ds0:
        np.testing.assert_array_equal(ds0[s], ds1[s])


@pytest.mark.parametrize("case", CELLS)
def test_float32_end_to_end(case):
    """float32 in, float32 out; gradients within 1e-3 of float64 finite differences
    (float32 has ~7 digits; BPTT and batch sums lose a few)."""
    name, backend = case
    mod, cost = module(name, backend), cost_module(backend)
    prob32 = Problem(name, seed=4, dtype=np.float32)
    a, grads, dx, dstate0 = analytic(mod, cost, prob32)
    assert a.dtype == np.float32
    assert {k: g.dtype for k, g in grads.items()} == {
        k: np.dtype(np.float32) for k in prob32.params
    }
    assert dx.dtype == np.float32
    assert all(v.dtype == np.float32 for v in dstate0.values())
    C, dC = cost.loss(a, prob32.y.astype(np.float32))
    assert isinstance(C, float) and dC.dtype == np.float32

    # the float64 problem at exactly the same (float32-representable) point
    prob64 = Problem(name, seed=4)
    prob64.params = {k: v.astype(np.float64) for k, v in prob32.params.items()}
    prob64.x = prob32.x.astype(np.float64)
    prob64.state0 = {k: v.astype(np.float64) for k, v in prob32.state0.items()}
    prob64.upstream = prob32.upstream.astype(np.float64)
    prob64.dstate = {k: v.astype(np.float64) for k, v in prob32.dstate.items()}
    base = (prob64.params, prob64.x, prob64.state0)
    rng = np.random.default_rng(5)
    for label, value, grad, setter in arguments(prob64, grads, dx, dstate0):
        d = rng.standard_normal(value.shape)
        fd = directional_fd(
            lambda v, setter=setter: loss(mod, cost, prob64, *setter(base, v)), value, d
        )
        an = float(np.sum(grad.astype(np.float64) * d))
        assert rel_err(fd, an) < 1e-3, f"{name}_{backend} float32 {label}: FD {fd!r} vs {an!r}"


def per_unit_reference(name: str):
    """The spec's per-unit cost as a NumPy function of (prediction, target), from its
    text (SymPy parses it here: a test oracle, independent of the generated code)."""
    data = tomllib.loads(SPECS[name].read_text())
    a, y = sp.Symbol(data["prediction"]), sp.Symbol(data["target"])
    textbook = {
        "log": sp.log,
        "exp": sp.exp,
        "sigmoid": lambda z: 1 / (1 + sp.exp(-z)),
        "softplus": lambda z: sp.log(1 + sp.exp(z)),
        # over the units (the last axis), broadcast back: NumPy's own reductions
        **{name: sp.Function(f"units_{name}") for name in ("sum", "mean", "max")},
    }
    over_units = {
        f"units_{name}": lambda e, f=f: np.broadcast_to(f(e, axis=-1, keepdims=True), e.shape)
        for name, f in (("sum", np.sum), ("mean", np.mean), ("max", np.max))
    }
    expr = sp.sympify(data["per_unit"], locals={a.name: a, y.name: y, **textbook})
    # a cost's named inputs are ones when loss is called without them (as here)
    expr = expr.subs({sp.Symbol(name): 1 for name in data.get("inputs", {})})
    return sp.lambdify((a, y), expr, [over_units, "numpy"])


@pytest.mark.parametrize("case", COSTS)
def test_cost_value_and_gradient_by_finite_differences(case):
    name, backend = case
    cost = module(name, backend)
    per_unit = per_unit_reference(name)
    rng = np.random.default_rng(6)
    for shape in [(B, N_OUT), (T, B, N_OUT)]:
        # predictions inside (0, 1) so that every built-in cost is defined
        a, y = rng.uniform(0.1, 0.9, shape), rng.uniform(0, 1, shape)
        C, da = cost.loss(a, y)
        assert isinstance(C, float)
        assert C == pytest.approx(np.sum(per_unit(a, y)) / B, rel=1e-13)
        assert da.shape == a.shape and da.dtype == np.float64
        for _ in range(2):
            d = rng.standard_normal(shape)
            fd = directional_fd(lambda v, y=y: cost.loss(v, y)[0], a, d)
            assert rel_err(fd, float(np.sum(da * d))) < 1e-6, f"{name}_{backend} {shape}"
        C32, da32 = cost.loss(a.astype(np.float32), y.astype(np.float32))
        assert da32.dtype == np.float32 and isinstance(C32, float)
        assert C32 == pytest.approx(C, rel=1e-5)
        np.testing.assert_allclose(da32, da, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------
# 2. BPTT against an unrolled symbolic model
# ---------------------------------------------------------------------------------------

#: The primitives' textbook definitions (deliberately not derivgen's table).
ELEMENTARY = {
    "sigmoid": lambda z: 1 / (1 + sp.exp(-z)),
    "tanh": sp.tanh,
    "exp": sp.exp,
    "log": sp.log,
    "softplus": lambda z: sp.log(1 + sp.exp(z)),
    "relu": lambda z: sp.Max(z, 0),
}
_PRODUCT = re.compile(r"\b([A-Za-z_]\w*)\s*@\s*([A-Za-z_]\w*)\b")
_NAME = re.compile(r"[A-Za-z_]\w*")


class Unrolled:
    """A cell unrolled over T steps in scalar SymPy, built from its spec's text.

    Every entry of every parameter, input and initial state is a real symbol; ``W@v``
    becomes sum_j W[i, j]*v[j] per neuron. Recurrent states take the previous step's
    value of their equation. Only the syntax the built-in specs use is supported
    (``name@name``); anything else fails loudly.
    """

    def __init__(self, name: str, steps: int, batch: int, n_in: int, n_out: int):
        data = tomllib.loads(SPECS[name].read_text())
        self.input, self.output = data["input"], data["output"]
        if isinstance(self.input, dict):  # input = { x = "elementwise" }
            (self.input,) = self.input
        self.states = dict(data.get("state", {}))
        self.params = dict(data["params"])
        products: dict[str, tuple[str, str]] = {}
        equations = []
        for target, text in data["equations"].items():
            if "@" in _PRODUCT.sub("", text):
                raise NotImplementedError(f"{name}: unroller supports name@name only: {text}")

            def placeholder(m, products=products):
                key = f"_mv_{m.group(1)}_{m.group(2)}"
                products[key] = (m.group(1), m.group(2))
                return key

            text = _PRODUCT.sub(placeholder, text)
            local = {n: sp.Symbol(n, real=True) for n in _NAME.findall(text) if n not in ELEMENTARY}
            local.update(ELEMENTARY)
            expr = sp.sympify(text, locals=local)
            assert not expr.atoms(sp.core.function.AppliedUndef), f"unknown function in {text}"
            equations.append((target, expr))

        def grid(label, shape):
            arr = np.empty(shape, dtype=object)
            for idx in np.ndindex(shape):
                arr[idx] = sp.Symbol(f"{label}{list(idx)}", real=True)
            return arr

        self.symbols: dict[str, np.ndarray] = {}
        for p, kind in self.params.items():
            if kind == "vector":
                self.symbols[p] = grid(p, (n_out,))
        for matrix, arg in products.values():
            self.symbols[matrix] = grid(matrix, (n_out, n_in if arg == self.input else n_out))
        self.symbols["x"] = x = grid("x", (steps, batch, n_in))
        for s in self.states:
            self.symbols[f"state0:{s}"] = grid(f"{s}0", (batch, n_out))
        current = {s: self.symbols[f"state0:{s}"] for s in self.states}
        self.a = np.empty((steps, batch, n_out), dtype=object)
        for t in range(steps):
            nxt = {s: np.empty((batch, n_out), dtype=object) for s in self.states}
            for b in range(batch):
                values: dict[str, list] = {}
                for target, expr in equations:
                    column = []
                    for i in range(n_out):
                        sub = {}
                        for sym in expr.free_symbols:
                            n = sym.name
                            if n in products:
                                matrix, arg = products[n]
                                vec = (
                                    x[t, b]
                                    if arg == self.input
                                    else (current[arg][b] if arg in current else values[arg])
                                )
                                sub[sym] = sp.Add(
                                    *(self.symbols[matrix][i, j] * vec[j] for j in range(len(vec)))
                                )
                            elif n in self.params:
                                sub[sym] = self.symbols[n][i]
                            elif n == self.input:  # an elementwise input: its lane
                                sub[sym] = x[t, b][i]
                            elif n in current:
                                sub[sym] = current[n][b, i]
                            else:
                                sub[sym] = values[n][i]
                        column.append(expr.xreplace(sub))
                    values[target] = column
                self.a[t, b] = values[self.output]
                for s, target in self.states.items():
                    nxt[s][b] = values[target]
            current = nxt
        self.final = current

    def loss(self, upstream, dstate) -> sp.Expr:
        terms = [
            sp.Float(float(w)) * a for w, a in zip(upstream.ravel(), self.a.ravel(), strict=True)
        ]
        for s, final in self.final.items():
            terms += [
                sp.Float(float(w)) * v
                for w, v in zip(dstate[s].ravel(), final.ravel(), strict=True)
            ]
        return sp.Add(*terms)


UNROLL_SIZES = {"batch": 1, "n_in": 3, "n_out": 2}  # n_in != n_out: catches transposes


@functools.cache
def unrolled_reference(name: str, steps: int):
    """The point, the upstream weights and sympy.diff of the unrolled loss there."""
    sizes = dict(UNROLL_SIZES)
    if MODELS[name].input_elementwise:
        sizes["n_in"] = sizes["n_out"]
    cell = Unrolled(name, steps, **sizes)
    rng = np.random.default_rng(100 + steps)
    point = {key: 0.8 * rng.standard_normal(arr.shape) for key, arr in cell.symbols.items()}
    upstream = rng.standard_normal(cell.a.shape)
    dstate = {s: rng.standard_normal(f.shape) for s, f in cell.final.items()}
    L = cell.loss(upstream, dstate)
    subs = {
        sym: sp.Float(float(point[key][idx]))
        for key, arr in cell.symbols.items()
        for idx, sym in np.ndenumerate(arr)
    }
    grads = {}
    for key, arr in cell.symbols.items():
        grads[key] = np.array(
            [float(sp.diff(L, sym).xreplace(subs)) for sym in arr.ravel()]
        ).reshape(arr.shape)
    return point, upstream, dstate, grads


#: The recurrent cells checked against plain ``sympy.diff`` of their unrolled model: those
#: whose state enters no matrix product (the tree of the unrolled model stays small; the
#: matrix-coupled LSTM and GRU grow like (4 n)**T and are covered by finite differences).
UNROLLED = [c for c in RECURRENT_CELLS if c.values[0][0] in ("grn", "indrnn", "mingru", "sru")]


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("case", UNROLLED)
def test_bptt_matches_sympy_diff_of_the_unrolled_model(case, steps):
    name, backend = case
    model = MODELS[name]
    mod = module(name, backend)
    point, upstream, dstate, want = unrolled_reference(name, steps)
    params = {k: point[k] for k in mod.PARAMS}
    state0 = {s: point[f"state0:{s}"] for s in model.states}
    a, cache = mod.forward(params, point["x"], state0)
    grads, dx, dstate0 = mod.backward(params, cache, upstream, dstate)
    got = dict(grads, x=dx, **{f"state0:{s}": v for s, v in dstate0.items()})
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(
            got[key], want[key], rtol=1e-10, atol=1e-12, err_msg=f"{name}_{backend} d{key}"
        )


FEEDFORWARD_UNROLLED = [
    c for c in CELLS if c.values[0][0] in ("highway", "dense_tanh", "dense_sigmoid")
]


@pytest.mark.parametrize("case", FEEDFORWARD_UNROLLED)
def test_feedforward_matches_sympy_diff_of_the_unrolled_model(case):
    # One step of the unrolled model is the layer (highway: its input used elementwise too).
    name, backend = case
    mod = module(name, backend)
    point, upstream, _, want = unrolled_reference(name, 1)
    params = {k: point[k] for k in mod.PARAMS}
    a, cache = mod.forward(params, point["x"][0])
    grads, dx = mod.backward(params, cache, upstream[0])
    got = dict(grads, x=dx[None])
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(
            got[key], want[key], rtol=1e-10, atol=1e-12, err_msg=f"{name}_{backend} d{key}"
        )


# ---------------------------------------------------------------------------------------
# 3. Shape and dtype errors name the argument
# ---------------------------------------------------------------------------------------


def _first(kind: str, mod) -> str:
    shapes = mod.param_shapes(N_IN, N_OUT)
    return next(k for k in mod.PARAMS if (len(shapes[k]) == 2) == (kind == "matrix"))


@pytest.mark.parametrize("case", CELLS)
def test_wrong_shapes_and_dtypes_raise_value_error_naming_the_argument(case):
    name, backend = case
    mod = module(name, backend)
    prob = Problem(name, seed=7)
    rec = prob.recurrent

    def fwd(params=None, x=None, state0=None):
        params = prob.params if params is None else params
        x = prob.x if x is None else x
        if rec:
            return mod.forward(params, x, prob.state0 if state0 is None else state0)
        return mod.forward(params, x)

    def raises(pattern, fn):
        with pytest.raises(ValueError, match=pattern) as info:
            fn()
        assert "expected" in str(info.value)

    matrix, vector = _first("matrix", mod), _first("vector", mod)
    raises(r"^x\b", lambda: fwd(x=prob.x[..., None]))
    raises(r"^x\b", lambda: fwd(x=prob.x.astype(np.int64)))
    raises(r"^x\b", lambda: fwd(x=prob.x.astype(np.float16)))
    raises(r"^params\b", lambda: fwd(params={k: v for k, v in prob.params.items() if k != vector}))
    raises(r"^params\b", lambda: fwd(params={**prob.params, "bogus": prob.params[vector]}))
    raises(
        re.escape(f"params[{matrix!r}]"),
        lambda: fwd(params={**prob.params, matrix: prob.params[matrix][:, :-1]}),
    )
    raises(
        re.escape(f"params[{vector!r}]"),
        lambda: fwd(params={**prob.params, vector: prob.params[vector][:-1]}),
    )
    raises(
        re.escape(f"params[{vector!r}]"),
        lambda: fwd(params={**prob.params, vector: prob.params[vector].astype(np.float32)}),
    )
    a, cache = fwd()
    if rec:
        state = list(prob.state0)[-1]
        bad = {**prob.state0, state: prob.state0[state][:, :-1]}
        raises(re.escape(f"state0[{state!r}]"), lambda: fwd(state0=bad))
        f32 = {**prob.state0, state: prob.state0[state].astype(np.float32)}
        raises(re.escape(f"state0[{state!r}]"), lambda: fwd(state0=f32))
        raises(r"^state0\b", lambda: fwd(state0={**prob.state0, "nope": prob.state0[state]}))
        raises(r"^da\b", lambda: mod.backward(prob.params, cache, a[:, :, :-1]))
        raises(r"^da\b", lambda: mod.backward(prob.params, cache, a[:-1]))
        raises(re.escape(f"dstate[{state!r}]"), lambda: mod.backward(prob.params, cache, a, bad))
        raises(re.escape(f"dstate[{state!r}]"), lambda: mod.backward(prob.params, cache, a, f32))
    else:
        raises(r"^da\b", lambda: mod.backward(prob.params, cache, a[:, :-1]))
        raises(r"^da\b", lambda: mod.backward(prob.params, cache, a[:-1]))
        raises(r"^da\b", lambda: mod.backward(prob.params, cache, a.astype(np.int64)))
    with pytest.raises(ValueError, match="dtype"):
        mod.init_params(N_IN, N_OUT, dtype=np.int32)


@pytest.mark.parametrize("case", CELLS)
def test_float64_da_into_a_float32_cell_raises_or_keeps_float32(case):
    name, backend = case
    mod = module(name, backend)
    prob = Problem(name, seed=8, dtype=np.float32)
    if prob.recurrent:
        a, cache = mod.forward(prob.params, prob.x, prob.state0)
    else:
        a, cache = mod.forward(prob.params, prob.x)
    da = np.ones(a.shape, np.float64)
    try:
        out = mod.backward(prob.params, cache, da)
    except ValueError as exc:
        assert str(exc).startswith("da")
        return
    grads, dx = out[0], out[1]
    arrays = list(grads.values()) + [dx] + (list(out[2].values()) if prob.recurrent else [])
    assert all(arr.dtype == np.float32 for arr in arrays), [arr.dtype for arr in arrays]


@pytest.mark.parametrize("case", COSTS)
def test_cost_shape_and_dtype_errors(case):
    cost = module(*case)
    with pytest.raises(ValueError, match=r"^y\b.*expected"):
        cost.loss(np.zeros((B, N_OUT)), np.zeros((B, N_OUT + 1)))
    with pytest.raises(ValueError, match=r"^a\b.*expected"):
        cost.loss(np.zeros((B, N_OUT), np.int64), np.zeros((B, N_OUT)))
    with pytest.raises(ValueError, match=r"^a\b.*expected"):
        cost.loss(np.zeros(N_OUT), np.zeros(N_OUT))


# ---------------------------------------------------------------------------------------
# 4. A stable sigmoid
# ---------------------------------------------------------------------------------------


def _saturating(name: str, dtype):
    """Params and input driving every pre-activation to +-1000."""
    mod = module(name, "numpy")
    shapes = mod.param_shapes(n_in(name), N_OUT)
    signs = np.where(np.arange(N_OUT) % 2 == 0, 1.0, -1.0)
    params = {}
    for k, shape in shapes.items():
        params[k] = np.zeros(shape, dtype) if len(shape) == 2 else (1000.0 * signs).astype(dtype)
    model = MODELS[name]
    x = np.full((T, B, n_in(name)) if model.kind == RECURRENT else (B, n_in(name)), 1.0, dtype)
    return params, x


SIGMOID_CELLS = [c for c in CELLS if "sigmoid(" in SPECS[c.values[0][0]].read_text()]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SIGMOID_CELLS)
def test_no_overflow_at_z_1000(case, dtype):
    name, backend = case
    mod = module(name, backend)
    params, x = _saturating(name, dtype)
    # no overflow, no invalid operation (underflow to 0 is the right answer in a tail)
    with np.errstate(all="raise", under="ignore"):
        if MODELS[name].kind == RECURRENT:
            a, cache = mod.forward(params, x)
            grads, dx, dstate0 = mod.backward(params, cache, np.ones_like(a), None)
            extra = list(dstate0.values())
        else:
            a, cache = mod.forward(params, x)
            grads, dx = mod.backward(params, cache, np.ones_like(a))
            extra = []
    for arr in [a, dx, *grads.values(), *extra]:
        assert arr.dtype == dtype
        assert np.all(np.isfinite(arr))
    if name == "dense_sigmoid":
        np.testing.assert_array_equal(
            a, np.broadcast_to((np.arange(N_OUT) % 2 == 0).astype(dtype), a.shape)
        )


# ---------------------------------------------------------------------------------------
# 5. Beyond the built-in specs: a valid spec whose derivative needs a SymPy constant
# ---------------------------------------------------------------------------------------

POWER_SPEC = """
name = "power"
kind = "feedforward"
input = "x"
output = "a"

[params]
W = "matrix"

[equations]
a = "2**(W@x)"
"""


def test_a_power_of_a_constant_generates_a_working_backward(tmp_path, monkeypatch):
    from symbolic.generate import generate

    spec = tmp_path / "power.toml"
    spec.write_text(POWER_SPEC)
    generate([spec], ["numpy"], tmp_path / "out")
    monkeypatch.syspath_prepend(str(tmp_path / "out"))
    mod = importlib.import_module("power_numpy")
    rng = np.random.default_rng(9)
    params = {"W": 0.5 * rng.standard_normal((N_OUT, N_IN))}
    x = rng.standard_normal((B, N_IN))
    a, cache = mod.forward(params, x)
    grads, dx = mod.backward(params, cache, np.ones_like(a))
    d = rng.standard_normal(params["W"].shape)
    fd = directional_fd(lambda w: float(np.sum(mod.forward({"W": w}, x)[0])), params["W"], d)
    assert rel_err(fd, float(np.sum(grads["W"] * d))) < 1e-6


# ---------------------------------------------------------------------------------------
# 5. need_dx=False, and the NumPy backward's blocks of steps
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CELLS)
def test_need_dx_false_skips_only_dx(case):
    """``backward(..., need_dx=False)`` returns dx = None and the very same gradients."""
    name, backend = case
    mod, cost = module(name, backend), cost_module(backend)
    prob = Problem(name, seed=3)
    if prob.recurrent:
        a, cache = mod.forward(prob.params, prob.x, prob.state0)
        da = cost.loss(a, prob.y)[1] + prob.upstream
        full = mod.backward(prob.params, cache, da, prob.dstate)
        lean = mod.backward(prob.params, cache, da, prob.dstate, need_dx=False)
        assert lean[1] is None and full[1] is not None
        for s in prob.state0:
            np.testing.assert_array_equal(lean[2][s], full[2][s])
    else:
        a, cache = mod.forward(prob.params, prob.x)
        da = cost.loss(a, prob.y)[1] + prob.upstream
        full = mod.backward(prob.params, cache, da)
        lean = mod.backward(prob.params, cache, da, need_dx=False)
        assert lean[1] is None and full[1] is not None
    assert list(lean[0]) == list(mod.PARAMS) == list(full[0])
    for k in mod.PARAMS:
        np.testing.assert_array_equal(lean[0][k], full[0][k])


DIAGONAL_NUMPY = [
    name
    for name, model in MODELS.items()
    if model.kind == RECURRENT and module(name, "numpy").RECURRENCE in ("diagonal", "affine")
]


@pytest.mark.parametrize("name", DIAGONAL_NUMPY)
def test_numpy_backward_over_several_blocks_of_steps(name):
    """The NumPy backward of a diagonal recurrence runs over blocks of steps (16 KiB per
    step here: blocks of 8, so T = 21 is 8 + 8 + 5): it agrees with the Numba module (a
    separate layout: one compiled loop per lane) and with finite differences."""
    pytest.importorskip("numba")
    npy, nba = module(name, "numpy"), module(name, "numba")
    steps, batch, n_in, n_out = 21, 16, 3, 128
    if MODELS[name].input_elementwise:
        n_in = n_out
    rng = np.random.default_rng(4)
    params = {k: 0.8 * rng.standard_normal(s) for k, s in npy.param_shapes(n_in, n_out).items()}
    # (an elementwise input has 128 units: scaled so that its products stay as large as
    # 3 inputs' would, out of saturation, where finite differences are accurate)
    x = rng.standard_normal((steps, batch, n_in)) * np.sqrt(3 / n_in)
    state0 = {s: 0.5 * rng.standard_normal((batch, n_out)) for s in npy.STATES}
    da = rng.standard_normal((steps, batch, n_out))
    dstate = {s: rng.standard_normal((batch, n_out)) for s in npy.STATES}
    results = []
    for mod in (npy, nba):
        a, cache = mod.forward(params, x, state0)
        results.append((a, *mod.backward(params, cache, da, dstate)))
    (a1, g1, dx1, d1), (a2, g2, dx2, d2) = results
    np.testing.assert_allclose(a1, a2, rtol=1e-12, atol=1e-13)
    for k in npy.PARAMS:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-11, atol=1e-11)
    for s in npy.STATES:
        np.testing.assert_allclose(d1[s], d2[s], rtol=1e-11, atol=1e-11)
    # rows with NaN and inf: non-finite in the same places (over several blocks), equal
    # elsewhere
    bad = x.copy()
    bad[3, 0, 0], bad[11, 1, 1], bad[17, 2, 2] = np.nan, np.inf, -np.inf
    runs = []
    with np.errstate(all="ignore"):
        for mod in (npy, nba):
            a, cache = mod.forward(params, bad, state0)
            g, dx, d = mod.backward(params, cache, da, dstate)
            runs.append([a, dx, *g.values(), *d.values()])
    for want, got in zip(*runs, strict=True):
        mask = np.isfinite(want)
        assert np.array_equal(np.isfinite(got), mask)
        np.testing.assert_allclose(got[mask], want[mask], rtol=1e-11, atol=1e-11)
    assert not np.isfinite(runs[0][0][3, 0]).any()

    def objective(p):
        a, cache = npy.forward(p, x, state0)
        final = {
            s: a[-1] if t == MODELS[name].output else cache["state"][s]
            for s, t in MODELS[name].states.items()
        }
        return float(np.sum(da * a)) + sum(float(np.sum(dstate[s] * final[s])) for s in final)

    for k in npy.PARAMS:
        d = rng.standard_normal(params[k].shape)
        fd = directional_fd(lambda v, k=k: objective({**params, k: v}), params[k], d)
        assert rel_err(fd, float(np.sum(g1[k] * d))) < 1e-6, k
