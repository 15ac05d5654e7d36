"""Reductions over a layer's units (sum, mean, max) and maximum/minimum, end to end.

Oracles independent of the derivation:

1. an unrolled SymPy model: every unit of every step written out, ``sum(e)`` as the
   explicit sum over the units, ``max(e)`` as ``sympy.Max`` of them, ``maximum`` as
   ``sympy.Max``, the primitives by their textbook definitions; the loss differentiated
   by SymPy node by node (:func:`reverse_gradient`) at a random point and compared with
   every backend's ``backward``, at several unit counts;
2. the rules themselves (:func:`symbolic.reductions.adjoint`) against the transposed
   Jacobian of the explicit reduction, exactly, at several unit counts;
3. at ties, torch's own autograd of ``amax`` and ``maximum`` (a second implementation);
4. softmax cross-entropy against its closed form (softmax minus the target), also at
   logits that would overflow ``exp``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import textwrap

import numpy as np
import pytest
import sympy as sp

from symbolic import backends, evaluate, parse, primitives, reductions
from symbolic.derive import derive, derive_cost
from symbolic.generate import builtin_specs, specs_dir
from symbolic.generate import render_model as render
from symbolic.model import RECURRENT
from symbolic.parse import SpecError
from symbolic.validate import stage

SPECS = {path.stem: path for path in builtin_specs()}

#: Cells of the tests only: every function of the table, in a layer and in a recurrence
#: whose reductions read the state.
TEST_SPECS = {
    "reducing_layer": """
        name = "reducing_layer"
        kind = "feedforward"
        input = "x"
        output = "a"

        [params]
        W = "matrix"
        B = "vector"
        V = "vector"

        [equations]
        z = "W@x + B"
        m = "z - max(z)"
        a = "exp(m)/sum(exp(m)) + 0.5*maximum(z, V) - minimum(z, 0.3)*mean(z)"
        """,
    "reducing_recurrence": """
        name = "reducing_recurrence"
        kind = "recurrent"
        input = "x"
        output = "a"
        state = { h = "a" }

        [params]
        W = "matrix"
        U = "vector"
        B = "vector"

        [equations]
        z = "W@x + U*h + B"
        s = "tanh(z - max(z))"
        a = "0.5*h + s*sigmoid(mean(h*z)) + 0.1*minimum(h, s) + 0.1*sum(s)"
        """,
    # reductions of a parameter only: the step is still coupled (their adjoints reduce)
    "parameter_reductions": """
        name = "parameter_reductions"
        kind = "recurrent"
        input = "x"
        output = "a"
        state = { h = "a" }

        [params]
        W = "matrix"
        v = "vector"

        [equations]
        a = "tanh(W@x + 0.5*h*sum(v) + max(v))"
        """,
}

#: The primitives' textbook definitions (deliberately not derivgen's table).
TEXTBOOK = {
    "sigmoid": lambda z: 1 / (1 + sp.exp(-z)),
    "tanh": sp.tanh,
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
}


def _model(name: str):
    if name in TEST_SPECS:
        return parse.loads(textwrap.dedent(TEST_SPECS[name]), f"{name}.toml")
    return parse.load(SPECS[name])


@functools.cache
def _module(name: str, backend: str):
    """The module of ``name`` for ``backend``, through a NumPy view for a framework's."""
    if name in TEST_SPECS:
        model = _model(name)
        path = stage(render(model, backend).text, f"{name}_{backend}.py")
        spec = importlib.util.spec_from_file_location(f"_reducing_{name}_{backend}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(f"generated.{name}_{backend}")
    adapt = backends.get(backend).adapt
    return adapt(mod) if adapt is not None else mod


# --- 1. the unrolled model ---------------------------------------------------------------


class Unrolled:
    """A cell over T steps, every unit written out in real symbols (only the parsed
    equations and projections are read)."""

    def __init__(self, cell, steps: int, n_in: int, n_out: int):
        self.cell, self.n = cell, n_out
        self.symbols: dict[str, np.ndarray] = {}
        for name, kind in cell.params.items():
            shape = (n_out,) if kind == "vector" else self._matrix_shape(name, n_in)
            self.symbols[name] = _grid(name, shape)
        self.symbols["x"] = xs = _grid("x", (steps, n_in))
        for state in cell.states:
            self.symbols[f"state0:{state}"] = _grid(f"{state}0", (n_out,))
        states = {s: list(self.symbols[f"state0:{s}"]) for s in cell.states}
        self.outputs = []
        for t in range(steps):
            env = self._step(list(xs[t]), states)
            self.outputs.append(env[cell.output])
            states = {s: env[target] for s, target in cell.states.items()}
        self.final = states

    def _matrix_shape(self, name: str, n_in: int) -> tuple[int, int]:
        rows, cols = self.cell.matrix_shape(name)
        return (self.n, n_in if cols == "in" else self.n)

    def _step(self, x: list, states: dict) -> dict:
        cell = self.cell
        env: dict[str, list] = {cell.input: x, **states}
        for name, kind in cell.params.items():
            if kind == "vector":
                env[name] = list(self.symbols[name])
        pending = list(cell.projections)
        for eq in cell.equations:
            for proj in [p for p in pending if p.arg in env]:
                matrix = self.symbols[proj.matrix]
                vector = env[proj.arg]
                env[proj.name] = [
                    sp.Add(*(matrix[i, j] * vector[j] for j in range(len(vector))))
                    for i in range(self.n)
                ]
                pending.remove(proj)
            env[eq.name] = [self.lane(eq.expr, env, i) for i in range(self.n)]
        return env

    def lane(self, expr: sp.Expr, env: dict, i: int) -> sp.Expr:
        """Unit ``i`` of ``expr``: a reduction as the explicit sum (max) over the units."""
        name = reductions.name_of(expr)
        if name in (reductions.SUM, reductions.MEAN, reductions.MAX):
            units = [self.lane(expr.args[0], env, j) for j in range(self.n)]
            if name == reductions.MAX:
                return sp.Max(*units)
            return sp.Add(*units) / (self.n if name == reductions.MEAN else 1)
        if name in (reductions.MAXIMUM, reductions.MINIMUM):
            args = [self.lane(a, env, i) for a in expr.args]
            return sp.Max(*args) if name == reductions.MAXIMUM else sp.Min(*args)
        if isinstance(expr, sp.Symbol):
            return env[expr.name][i]
        if primitives.is_primitive_call(expr):
            return TEXTBOOK[type(expr).__name__](self.lane(expr.args[0], env, i))
        if not expr.args:
            return expr
        return expr.func(*(self.lane(a, env, i) for a in expr.args))


def _grid(label: str, shape) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    for index in np.ndindex(shape):
        out[index] = sp.Symbol(f"{label}{list(index)}", real=True)
    return out


@functools.cache
def unrolled_gradients(name: str, steps: int, n_out: int):
    """A random point, upstream weights, and the gradient of the unrolled loss there."""
    cell = _model(name)
    model = Unrolled(cell, steps, n_in=3, n_out=n_out)
    rng = np.random.default_rng(1000 * steps + n_out)
    point = {k: 0.8 * rng.standard_normal(v.shape) for k, v in model.symbols.items()}
    upstream = rng.standard_normal((steps, n_out))
    dstate = {s: rng.standard_normal(n_out) for s in cell.states}
    terms = [
        sp.Float(float(upstream[t, i])) * model.outputs[t][i]
        for t in range(steps)
        for i in range(n_out)
    ]
    for s, final in model.final.items():
        terms += [sp.Float(float(dstate[s][i])) * final[i] for i in range(n_out)]
    values = {
        sym: float(point[k][idx])
        for k, arr in model.symbols.items()
        for idx, sym in np.ndenumerate(arr)
    }
    adjoints = reverse_gradient(sp.Add(*terms), values)
    grads = {
        k: np.array([adjoints.get(sym, 0.0) for sym in arr.ravel()]).reshape(arr.shape)
        for k, arr in model.symbols.items()
    }
    return point, upstream, dstate, grads


def reverse_gradient(loss: sp.Expr, values: dict[sp.Symbol, float]) -> dict[sp.Expr, float]:
    """d loss / d leaf for every leaf: ``sympy.diff`` of each node of the unrolled tree by
    each of its arguments (SymPy's calculus: ``Max`` by ``Heaviside``), evaluated at the
    point and chained in reverse over the tree's distinct nodes, so that a shared subtree
    is differentiated once (plain ``sympy.diff`` of the whole loss grows like its tree)."""
    order: list[sp.Expr] = []
    seen: set[sp.Expr] = set()
    stack: list[tuple[sp.Expr, bool]] = [(loss, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        stack.extend((arg, False) for arg in node.args if arg not in seen)
    value: dict[sp.Expr, float] = {}
    for node in order:
        if node in values:
            value[node] = values[node]
        elif not node.args:
            value[node] = float(node)
        else:
            value[node] = _local(node.func, len(node.args))[0](*(value[a] for a in node.args))
    adjoint: dict[sp.Expr, float] = {loss: 1.0}
    for node in reversed(order):
        if not node.args or node not in adjoint:
            continue
        args = [value[a] for a in node.args]
        partials = _local(node.func, len(args))[1]
        for arg, partial in zip(node.args, partials, strict=True):
            if partial is not None:
                adjoint[arg] = adjoint.get(arg, 0.0) + adjoint[node] * partial(*args)
    return {leaf: adjoint.get(leaf, 0.0) for leaf in values}


#: How the compiled partials read SymPy's step function (never at 0 here: no ties).
_MATH = [{"Heaviside": lambda x, *at: 1.0 if x > 0 else 0.0}, "math"]


@functools.cache
def _local(func, nargs: int):
    """A node kind's value and its partials by each argument, compiled from SymPy's
    ``diff`` (a power's exponent is a number here: no partial)."""
    u = sp.symbols(f"u0:{nargs}", real=True)
    local = func(*u)
    partials = [
        None if func is sp.Pow and k == 1 else sp.lambdify(u, sp.diff(local, u[k]), _MATH)
        for k in range(nargs)
    ]
    return sp.lambdify(u, local, _MATH), partials


UNROLLED = [
    ("reducing_layer", 1, (1, 2, 3, 5)),
    ("layer_norm", 1, (1, 2, 4)),
    ("rmsnorm", 1, (1, 3)),
    ("reducing_recurrence", 2, (1, 2, 3)),
    ("parameter_reductions", 2, (1, 3)),
    ("gru_layer_norm", 2, (1, 2)),
]
CASES = [
    pytest.param(name, steps, n_out, backend, id=f"{name}-n{n_out}-{backend}")
    for name, steps, sizes in UNROLLED
    for n_out in sizes
    for backend in backends.BUILTIN
]


@pytest.mark.parametrize(("name", "steps", "n_out", "backend"), CASES)
def test_backward_matches_sympy_diff_of_the_unrolled_model(name, steps, n_out, backend):
    cell = _model(name)
    if backends.get(backend).missing():
        pytest.skip(f"{backend} is not installed")
    mod = _module(name, backend)
    point, upstream, dstate, want = unrolled_gradients(name, steps, n_out)
    params = {k: point[k] for k in cell.params}
    if cell.kind == RECURRENT:
        x = point["x"][:, None, :]
        state0 = {s: point[f"state0:{s}"][None, :] for s in cell.states}
        a, cache = mod.forward(params, x, state0)
        ds = {s: v[None, :] for s, v in dstate.items()}
        grads, dx, dstate0 = mod.backward(params, cache, upstream[:, None, :], ds)
        got = dict(grads, x=dx[:, 0, :]) | {f"state0:{s}": v[0] for s, v in dstate0.items()}
    else:
        a, cache = mod.forward(params, point["x"])
        grads, dx = mod.backward(params, cache, upstream)
        got = dict(grads, x=dx)
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(
            got[key], want[key], rtol=1e-9, atol=1e-11, err_msg=f"{name}_{backend} d{key}"
        )


def test_reference_evaluator_agrees_with_the_unrolled_forward():
    cell = _model("reducing_layer")
    model = Unrolled(cell, 1, n_in=3, n_out=4)
    rng = np.random.default_rng(3)
    point = {k: rng.standard_normal(v.shape) for k, v in model.symbols.items()}
    values = {
        sym: sp.Float(float(point[k][idx]))
        for k, arr in model.symbols.items()
        for idx, sym in np.ndenumerate(arr)
    }
    want = [float(e.xreplace(values)) for e in model.outputs[0]]
    got, _ = evaluate.forward(cell, {k: point[k] for k in cell.params}, point["x"])
    np.testing.assert_allclose(got[0], want, rtol=1e-12)


# --- 2. the rules, exactly ---------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("spec_name", ["sum", "mean", "max"])
def test_adjoint_is_the_transposed_jacobian_times_the_seed(spec_name, n):
    e = [sp.Rational(k * k - 3 * k, 7) + sp.Rational(k, 11) for k in range(n)]  # no ties
    e_symbols = sp.symbols(f"e0:{n}", real=True)
    explicit = {
        "sum": sp.Add(*e_symbols),
        "mean": sp.Add(*e_symbols) / n,
        "max": sp.Max(*e_symbols),
    }[spec_name]
    seed = [sp.Rational(2 * k + 1, 5) for k in range(n)]
    at = dict(zip(e_symbols, e, strict=True))
    # de_j = sum_i seed_i dR_i/de_j: R_i is the same value for every unit i
    want = [sum(seed) * sp.diff(explicit, s).xreplace(at) for s in e_symbols]
    func = reductions.FUNCTIONS[reductions.SPEC_REDUCTIONS[spec_name]].func
    es, ds = sp.Symbol("e"), sp.Symbol("dR")
    rule = reductions.adjoint(func(es), ds)
    got = evaluate.expression(rule, {"e": np.array(e, float), "dR": np.array(seed, float)})
    np.testing.assert_allclose(np.broadcast_to(got, (n,)), [float(w) for w in want], rtol=1e-14)


def test_maximum_and_minimum_share_the_gradient_at_a_tie():
    a, b = sp.symbols("a b")

    def at(expr, va, vb):
        return primitives.to_elementary(expr.xreplace({a: va, b: vb}))

    for func in (reductions.maximum, reductions.minimum):
        da = sp.diff(func(a, b), a)
        db = sp.diff(func(a, b), b)
        assert at(da, 1, 1) == sp.S.Half == at(db, 1, 1)
        assert at(da, 2, 1) == (1 if func is reductions.maximum else 0)
        assert at(da, 2, 1) + at(db, 2, 1) == 1
    assert reductions.maximum(a, a) == a and reductions.minimum(2, 3) == 2


# --- 3. ties, against torch's autograd ---------------------------------------------------


def test_max_share_at_ties_is_torch_amax_autograd():
    torch = pytest.importorskip("torch")
    from symbolic.backends.jax import primitives as jax_primitives
    from symbolic.backends.numpy import primitives as numpy_primitives
    from symbolic.backends.torch import primitives as torch_primitives

    z = np.array([[1.0, 3.0, 3.0, 0.5], [2.0, 2.0, 2.0, 2.0], [-1.0, 0.0, 4.0, 4.0]])
    t = torch.tensor(z, requires_grad=True)
    torch.amax(t, dim=-1).sum().backward()
    want = t.grad.numpy()
    np.testing.assert_allclose(numpy_primitives.namespace()["_np_max_share"](z), want)
    np.testing.assert_allclose(
        torch_primitives.namespace()["_max_share"](torch.tensor(z)).numpy(), want
    )
    np.testing.assert_allclose(reductions.FUNCTIONS["max_share"].reference(z), want)
    if importlib.util.find_spec("jax") is not None:
        np.testing.assert_allclose(np.asarray(jax_primitives.namespace()["_max_share"](z)), want)
    # a NaN row: NaN, as max itself
    assert np.isnan(numpy_primitives.namespace()["_np_max_share"](np.array([1.0, np.nan]))).all()


def test_maximum_at_a_tie_is_torch_maximum_autograd():
    torch = pytest.importorskip("torch")
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = torch.tensor([1.0, 1.0, 5.0], requires_grad=True)
    torch.maximum(a, b).sum().backward()
    x, y = sp.symbols("x y")
    rule = [sp.diff(reductions.maximum(x, y), v) for v in (x, y)]
    for k in range(3):
        at = {x: float(a[k].detach()), y: float(b[k].detach())}
        assert float(rule[0].xreplace(at)) == float(a.grad[k])
        assert float(rule[1].xreplace(at)) == float(b.grad[k])


@pytest.mark.parametrize("name", [reductions.SUM, reductions.MEAN])
def test_factors_the_same_at_every_unit_move_out_of_sum_and_mean(name):
    func = reductions.FUNCTIONS[name].func
    e, y = sp.symbols("e y", real=True)
    total = reductions.unit_sum(sp.exp(e))
    rng = np.random.default_rng(11)
    env = {"e": rng.standard_normal(7), "y": rng.uniform(0.5, 2.0, 7)}
    for k in (
        sp.Integer(3),
        1 / total,
        -2 * reductions.unit_max(e),
        sp.exp(reductions.unit_mean(e)),
    ):
        built = func(k * y * sp.exp(e))
        assert built == k * func(y * sp.exp(e))  # k outside; y, which varies, inside
        held = func(k * y * sp.exp(e), evaluate=False)  # the sum as written
        np.testing.assert_allclose(
            np.broadcast_to(evaluate.expression(built, env), (7,)),
            np.broadcast_to(evaluate.expression(held, env), (7,)),
            rtol=1e-14,
        )
    # nothing to move: every factor varies, or none does; max keeps its sign-bound argument
    assert func(y * e).args == (y * e,)
    assert reductions.unit_max(2 * e).args == (2 * e,)


def test_the_softmax_cross_entropy_gradient_keeps_no_max_share():
    # d/da of log(sum(exp(a - m))) + m: the max-shift's terms cancel once sum(y/S) = sum(y)/S
    cost = parse.load(specs_dir() / "softmax_cross_entropy.toml")
    gradient = derive_cost(cost).gradient
    assert reductions.used(gradient) == {reductions.SUM, reductions.MAX}
    rng = np.random.default_rng(2)
    for scale in (1.0, 800.0):  # 800: exp(a) alone would overflow
        a, y = scale * rng.standard_normal(6), rng.uniform(0.0, 1.0, 6)
        softmax = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
        got = evaluate.expression(gradient, {"a": a, "y": y})
        np.testing.assert_allclose(got, softmax * y.sum() - y, rtol=1e-13, atol=1e-15)


# --- 4. softmax cross-entropy --------------------------------------------------------------


@pytest.mark.parametrize("backend", backends.array_backends())
@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_softmax_cross_entropy_is_its_closed_form(backend, scale):
    cost = importlib.import_module(f"generated.softmax_cross_entropy_{backend}")
    rng = np.random.default_rng(5)
    a = scale * rng.standard_normal((4, 6))
    y = np.eye(6)[rng.integers(0, 6, 4)]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        C, da = cost.loss(a, y)
    shifted = a - a.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    softmax = np.exp(log_softmax)
    assert C == pytest.approx(-np.sum(y * log_softmax) / 4, rel=1e-12)
    np.testing.assert_allclose(da, (softmax - y) / 4, atol=1e-15)


@pytest.mark.parametrize("backend", backends.array_backends())
def test_multiclass_hinge_is_its_closed_form(backend):
    cost = importlib.import_module(f"generated.multiclass_hinge_{backend}")
    rng = np.random.default_rng(8)
    a = rng.standard_normal((3, 7, 5))  # scores: no ties
    classes = rng.integers(0, 5, (3, 7))
    y = np.eye(5)[classes]
    C, da = cost.loss(a, y)
    true = np.take_along_axis(a, classes[..., None], -1)[..., 0]
    others = np.where(y == 1, -np.inf, a)
    margin = 1 + others.max(axis=-1) - true
    assert C == pytest.approx(np.maximum(margin, 0).sum() / 7, rel=1e-12)
    want = np.zeros_like(a)
    for index in np.ndindex(classes.shape):
        if margin[index] > 0:  # the runner-up's score up, the class's down
            want[index][np.argmax(others[index])] += 1 / 7
            want[index][classes[index]] -= 1 / 7
    np.testing.assert_allclose(da, want, atol=1e-15)


# --- parsing ---------------------------------------------------------------------------


def _cell(equation: str, extra: str = "") -> str:
    return textwrap.dedent(
        f"""
        name = "c"
        kind = "feedforward"
        input = "x"
        output = "a"
        {extra}
        [params]
        W = "matrix"
        B = "vector"

        [equations]
        a = "{equation}"
        """
    )


def test_every_function_parses_to_its_table_entry():
    cell = parse.loads(_cell("sum(W@x) + mean(B) + max(W@x) + maximum(B, 1) + minimum(W@x, B)"))
    assert reductions.used(cell.equations[-1].expr) == {
        "unit_sum",
        "unit_mean",
        "unit_max",
        "maximum",
        "minimum",
    }


@pytest.mark.parametrize(
    ("equation", "message"),
    [
        ("max(W@x, B)", "'max' takes exactly one positional argument (the elementwise maximum"),
        ("maximum(W@x)", "'maximum' takes two positional arguments"),
        ("sum(W@x, axis=0)", "'sum' takes exactly one positional argument"),
        ("sum(2) + W@x + B", "the sum of a constant over the layer's units"),
        ("sum(x) + W@x + B", "may only enter through a matrix product"),
        ("softmax(W@x) + B", "over the layer's units: sum, mean, max"),
    ],
)
def test_bad_uses_are_refused_naming_the_line_and_symbol(equation, message):
    with pytest.raises(SpecError) as info:
        parse.loads(_cell(equation), "spec.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("spec.toml:12:")


def test_a_name_may_not_shadow_a_function():
    text = _cell("W@x + B + mean").replace('B = "vector"', 'B = "vector"\nmean = "vector"')
    with pytest.raises(SpecError, match="shadows the function 'mean'"):
        parse.loads(text)


def test_claims_may_not_reduce():
    text = _cell("tanh(W@x + B)", "") + '\n[claims]\ndC_dB = "sum(dC_da)"\n'
    with pytest.raises(SpecError, match="not supported in claims"):
        parse.loads(text)


def test_reductions_are_lifted_and_derived_without_per_neuron_partials():
    cell = parse.loads(_cell("tanh(W@x) - max(tanh(W@x)) + B"))
    derivation = derive(cell)
    reducing = [
        s for _, s in derivation.forward if reductions.is_reduction(getattr(s, "expr", None))
    ]
    assert len(reducing) == 1 and isinstance(reducing[0].expr.args[0], sp.Symbol)
    text = str(derivation)
    assert "max_share(" in text and "unit_sum(" in text


# --- the tables ------------------------------------------------------------------------


def test_every_backend_has_code_for_every_function():
    for backend in backends.BUILTIN:
        table = importlib.import_module(f"symbolic.backends.{backend}.primitives").REDUCTIONS
        for name, entry in reductions.FUNCTIONS.items():
            assert name in table, f"the {backend} backend has no code for {name}"
            call = table[name].call
            assert "{0}" in call and ("{1}" in call) == (entry.func.nargs == {2})
            if table[name].helper:  # the helper defines what the code calls
                assert f"def {call.split('(')[0]}(" in table[name].helper
        assert entry.note is not None
    # NumPy's whole-array forms write into a buffer (what the plan and Numba's layout use)
    numpy_table = importlib.import_module("symbolic.backends.numpy.primitives").REDUCTIONS
    for name in ("unit_sum", "unit_mean", "unit_max", "max_share"):
        assert "{i}" in numpy_table[name].out and "{o}" in numpy_table[name].out


def test_the_sum_of_a_constant_equation_is_refused():
    text = _cell("sum(e) + W@x + B").replace("[equations]", '[equations]\ne = "0.5 + 2"')
    with pytest.raises(SpecError, match="sum of a constant over the layer's units") as info:
        parse.loads(text, "spec.toml")
    assert str(info.value).startswith("spec.toml:13: 'a'")
    # its mean and its maximum are the constant itself
    cell = parse.loads(
        _cell("mean(e) + max(e) + W@x + B").replace("[equations]", '[equations]\ne = "0.5 + 2"')
    )
    assert cell.equations[-1].expr.free_symbols == {
        sp.Symbol("W_x"),
        sp.Symbol("B"),
        sp.Symbol("e"),
    }


def test_a_cost_summing_a_constant_adjoint_counts_the_units():
    from symbolic.derive import derive_cost

    text = 'name = "c"\nkind = "cost"\nprediction = "a"\ntarget = "y"\n'
    cost = parse.loads(text + 'per_unit = "max(a + a) + y*mean(a)"\n')
    gradient = derive_cost(cost).gradient
    assert reductions.COUNT in reductions.used(gradient)
    rng = np.random.default_rng(2)
    a, y = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    got = np.broadcast_to(evaluate.expression(gradient, {"a": a, "y": y}), a.shape) / 3
    for _ in range(3):
        d = rng.standard_normal(a.shape)
        eps = 1e-6
        fd = (evaluate.cost(cost, a + eps * d, y) - evaluate.cost(cost, a - eps * d, y)) / (2 * eps)
        assert np.sum(got * d) == pytest.approx(fd, rel=1e-6)
