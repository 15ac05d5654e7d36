"""The Numba backend's compiled cost loop (templates/numba/cost_loop.py.j2).

A cost's Numba module computes C and its gradient in one compiled loop over the rows
(passes over a row's units first where it reduces them: a softmax's max and sums); a
cost that calls a function LLVM cannot vectorize (erf), or whose gradient needs
``max_share`` (a cost's own max), keeps NumPy's whole-array code. Each loop module is checked against two
oracles that share none of its code: the NumPy module of the same spec (whole-array
ufuncs) and the reference interpreter (``evaluate.cost``), with finite differences along
random directions for the gradient; over float32 and float64, 2-D and 3-D predictions,
views that are not contiguous, a target of another dtype, named inputs given or left out,
an empty batch and NaN.
"""

from __future__ import annotations

import numpy as np
import pytest

from symbolic import evaluate, parse, validate
from symbolic.generate import builtin_specs, render_model
from symbolic.render import layout

SPECS = {path.stem: path for path in builtin_specs()}

#: Costs over the constructs a loop may hold: arithmetic, powers (integer, rational,
#: negative), every vectorizing primitive, maximum/minimum, pi, row and unit inputs, a
#: cost of the prediction alone; a row's reductions (sum, mean, max inside a log-sum-exp),
#: nested two deep, with inputs inside them.
LOOP_COSTS = {
    "log_ratio": 'per_unit = "log(1 + (a - y)**2) - y*log(2 + a)"',
    "logistic": 'per_unit = "y*softplus(-a) + (1 - y)*softplus(a) + softplus(a - y)**2"',
    "huber_like": 'per_unit = "sqrt(1 + (a - y)**2) - 1"',
    "abs_err": 'per_unit = "abs(a - y)**(3/2)"',
    "gated": 'per_unit = "sigmoid(a)*(a - y)**2 + tanh(a - y)**2"',
    "exp_margin": 'per_unit = "exp(-(a*y)) + relu(a - y) + maximum(a, y)**2 - minimum(a, 0)"',
    "stepped": 'per_unit = "step(a - y)*(a - y)**2 + sign(y)*a"',
    "reciprocal": 'per_unit = "(a - y)**2/(1 + a**2) + pi*a/4"',
    "prediction_only": 'per_unit = "a**4/4"',
    "row_and_unit": 'per_unit = "m*w*(a - y)**2"\n[inputs]\nm = "row"\nw = "unit"',
    "unit_weighted": 'per_unit = "w*abs(a - y) + w**2*a"\n[inputs]\nw = "unit"',
    "softmax": 'per_unit = "y*(log(sum(exp(a - max(a)))) + max(a) - a)"',
    "nested_means": 'per_unit = "(a - mean(a))**2/(1 + mean((a - mean(a))**2)) + sum(y)*a/4"',
    # reductions of the rows themselves: the target's, a unit input's, a row input's
    "bare_rows": (
        'per_unit = "(a - max(y))**2*mean(w) + sum(a)*w + mean(m)*a"'
        '\n[inputs]\nm = "row"\nw = "unit"'
    ),
    # a later pass reads back exp(a), the argument an earlier one summed
    "nested_reuse": 'per_unit = "y*log(sum(log(exp(a) + sum(exp(a)))))"',
    "weighted_softmax": (
        'per_unit = "m*w*y*(log(sum(w*exp(a - max(a)))) + max(a) - a) + mean(m*a*y)"'
        '\n[inputs]\nm = "row"\nw = "unit"'
    ),
}


def _spec(name: str, body: str) -> str:
    head, _, inputs = body.partition("\n[inputs]")
    text = f'name = "{name}"\nkind = "cost"\nprediction = "a"\ntarget = "y"\n{head}\n'
    return text + (f"[inputs]{inputs}\n" if inputs else "")


def _modules(name: str):
    """(the cost, its Numba module, its NumPy module), loaded as a user would import them."""
    model = parse.loads(_spec(name, LOOP_COSTS[name]), f"{name}.toml")
    loaded = []
    for backend in ("numba", "numpy"):
        module = render_model(model, backend)
        loaded.append(validate.load(validate.stage(module.text, module.filename)))
    return model, *loaded


def _template(model, backend="numba") -> str:
    from symbolic.generate import compile_model

    return layout(compile_model(model), backend)[0]


def test_elementwise_costs_take_the_loop_and_the_others_numpy_code():
    assert _template(parse.load(SPECS["squared_error"])) == "cost_loop.py.j2"
    assert _template(parse.load(SPECS["masked_squared_error"])) == "cost_loop.py.j2"
    assert _template(parse.load(SPECS["cross_entropy"])) == "cost_loop.py.j2"  # log
    assert _template(parse.load(SPECS["bce_logits"])) == "cost_loop.py.j2"  # softplus
    # erf: a scalar C call in a loop (NumPy's ufuncs are SIMD code)
    erf = _spec("erf_cost", 'per_unit = "erf(a - y)**2"')
    assert _template(parse.loads(erf, "erf_cost.toml")) == "cost.py.j2"
    # a row's reductions: passes over the row first
    assert _template(parse.load(SPECS["softmax_cross_entropy"])) == "cost_loop.py.j2"
    assert _template(parse.load(SPECS["weighted_softmax_cross_entropy"])) == "cost_loop.py.j2"
    # a cost's own max: its adjoint shares the gradient among tied maxima (max_share)
    top = _spec("top_cost", 'per_unit = "max(a - y) + (a - y)**2"')
    assert _template(parse.loads(top, "top_cost.toml")) == "cost.py.j2"
    for name, body in LOOP_COSTS.items():
        model = parse.loads(_spec(name, body), f"{name}.toml")
        assert _template(model) == "cost_loop.py.j2", name
        assert _template(model, "numpy") == "cost.py.j2"
    from generated import softmax_cross_entropy_numba, squared_error_numba

    assert hasattr(squared_error_numba, "_loss_loop")
    assert hasattr(softmax_cross_entropy_numba, "_loss_loop")


def _inputs(model, shape, rng, dtype):
    return {
        name: rng.uniform(0.5, 1.5, shape[:-1] if kind == "row" else shape[-1:]).astype(dtype)
        for name, kind in model.inputs.items()
    }


@pytest.mark.parametrize("name", sorted(LOOP_COSTS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 7), (2, 3, 4, 5)])
def test_the_loop_agrees_with_numpy_the_interpreter_and_finite_differences(name, dtype, shape):
    model, loop, whole = _modules(name)
    rng = np.random.default_rng([len(shape), shape[-1]])
    a = rng.uniform(-1.5, 1.5, shape).astype(dtype)
    y = rng.uniform(-1.0, 1.0, shape).astype(dtype)
    inputs = _inputs(model, shape, rng, dtype)
    kept = (a.copy(), y.copy(), {k: v.copy() for k, v in inputs.items()})
    C, da = loop.loss(a, y, **inputs)
    C_np, da_np = whole.loss(a, y, **inputs)
    assert isinstance(C, float)
    assert da.dtype == dtype and da.shape == shape
    assert not np.shares_memory(da, a) and not np.shares_memory(da, y)
    np.testing.assert_array_equal(a, kept[0])
    np.testing.assert_array_equal(y, kept[1])
    for k, v in kept[2].items():
        np.testing.assert_array_equal(inputs[k], v)
    exact = evaluate.cost(
        model,
        a.astype(np.float64),
        y.astype(np.float64),
        {k: v.astype(np.float64) for k, v in inputs.items()},
    )
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    # the loop sums in float64 whatever the dtype: nearer the exact sum than NumPy's float32
    assert C == pytest.approx(exact, rel=rtol)
    assert C_np == pytest.approx(exact, rel=1e-12 if dtype == np.float64 else 1e-4)
    scale = float(np.abs(da_np).max()) + 1e-30
    tol = 1e-13 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(da, da_np, rtol=tol, atol=tol * scale)
    if dtype == np.float32:
        return
    for _ in range(3):
        d = rng.standard_normal(shape)
        h = 1e-6
        fd = (
            evaluate.cost(model, a + h * d, y, inputs) - evaluate.cost(model, a - h * d, y, inputs)
        ) / (2 * h)
        assert float(np.sum(da * d)) == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", ["row_and_unit", "gated"])
def test_views_other_dtypes_and_missing_inputs(name):
    model, loop, whole = _modules(name)
    rng = np.random.default_rng(7)
    base = rng.uniform(-1, 1, (5, 4, 12))
    a = base[:, :, ::2]  # not contiguous
    assert not a.flags.c_contiguous
    y = (rng.uniform(-1, 1, a.shape) > 0).astype(np.int64)  # an integer target
    inputs = _inputs(model, a.shape, rng, np.float32)  # inputs of another dtype
    C, da = loop.loss(a, y, **inputs)
    C_np, da_np = whole.loss(a, y, **inputs)
    assert C == pytest.approx(C_np, rel=1e-12)
    np.testing.assert_allclose(da, da_np, rtol=1e-12, atol=1e-15)
    assert da.flags.c_contiguous and da.dtype == np.float64
    # loss(a, y) is the cost with every input ones
    ones = {k: np.ones_like(v) for k, v in inputs.items()}
    C0, da0 = loop.loss(a, y)
    C1, da1 = loop.loss(a, y, **ones)
    assert C0 == C1
    np.testing.assert_array_equal(da0, da1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_batches_units_and_nan(dtype):
    _, loop, whole = _modules("row_and_unit")
    for shape in [(3, 0, 4), (0, 4), (3, 2, 0)]:
        a = np.zeros(shape, dtype)
        C, da = loop.loss(a, a)
        C_np, da_np = whole.loss(a, a)
        assert da.shape == shape and da.dtype == dtype
        # an empty batch has no mean: NaN; no units: 0
        assert (np.isnan(C) and np.isnan(C_np)) or C == C_np == 0.0, (shape, C, C_np)
    a = np.ones((2, 3), dtype)
    a[1, 2] = np.nan
    C, da = loop.loss(a, np.zeros_like(a))
    assert np.isnan(C)
    assert np.isnan(da[1, 2]) and np.isfinite(np.delete(da.ravel(), 5)).all()


@pytest.mark.parametrize("name", ["softmax", "nested_means", "weighted_softmax"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_reducing_loop_on_empty_rows_nan_and_inf_does_what_numpy_does(name, dtype):
    model, loop, whole = _modules(name)
    rng = np.random.default_rng(9)
    for shape in [(3, 0, 4), (0, 4), (3, 2, 0), (4, 1)]:
        a = rng.uniform(-1, 1, shape).astype(dtype)
        inputs = _inputs(model, shape, rng, dtype)
        with np.errstate(all="ignore"):
            C, da = loop.loss(a, a, **inputs)
            C_np, da_np = whole.loss(a, a, **inputs)
        assert da.shape == shape and da.dtype == dtype
        assert C == pytest.approx(C_np, rel=1e-5, nan_ok=True), (shape, C, C_np)
        np.testing.assert_allclose(da, da_np, rtol=1e-5, atol=1e-6)
    a = rng.uniform(-1, 1, (3, 5)).astype(dtype)
    y = rng.uniform(0, 1, (3, 5)).astype(dtype)
    a[1, 2] = np.nan  # a NaN spreads over its row (its max, its sums), not further
    a[2, 0] = np.inf
    inputs = _inputs(model, a.shape, rng, dtype)
    with np.errstate(all="ignore"):
        C, da = loop.loss(a, y, **inputs)
        C_np, da_np = whole.loss(a, y, **inputs)
    assert np.isnan(C) and np.isnan(C_np)
    np.testing.assert_array_equal(np.isnan(da), np.isnan(da_np))
    np.testing.assert_allclose(da[0], da_np[0], rtol=1e-5)
    assert np.isfinite(da[0]).all()
    if hasattr(loop, "_row_max"):  # NumPy's max: NaN wherever one value is NaN
        row = np.array([1.0, np.nan, 0.5, 2.0], dtype)
        assert np.isnan(loop._row_max(row, 4)) and loop._row_max(row, 1) == 1.0
        assert loop._row_max(row[:0], 0) == -np.inf


@pytest.mark.parametrize(
    "argument, bad, words",
    [
        ("a", np.zeros(3), "expected shape (..., B, n)"),
        ("a", np.zeros((2, 3), np.int64), "expected dtype float32 or float64"),
        ("y", np.zeros((2, 4)), "y: expected shape (2, 3)"),
        ("m", np.zeros(3), "m: expected shape (2,)"),
        ("w", np.zeros(2), "w: expected shape (3,)"),
    ],
)
def test_wrong_arguments_are_refused_as_numpy_refuses_them(argument, bad, words):
    _, loop, whole = _modules("row_and_unit")
    args = {"a": np.zeros((2, 3)), "y": np.zeros((2, 3))} | {argument: bad}
    for module in (loop, whole):
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            module.loss(**args)


#: Random costs drawn for the loop (derandomized: the same ones every run).
FUZZ_COSTS = 60


def _random_costs(count: int) -> list:
    from spec_strategies import costs, examples

    return examples(costs(), count)


def test_random_costs_in_the_loop_are_validated_and_agree_with_numpy():
    """The fuzzer's costs (every primitive, powers, quotients, reductions, row and unit
    inputs): each one the loop takes is validated as ``derivgen generate`` validates a
    module (the interpreter, finite differences), and agrees with its NumPy module in
    both dtypes; each one it leaves to NumPy code needs max_share or a scalar C call."""
    from symbolic import reductions
    from symbolic.backends.numba.primitives import FORMS
    from symbolic.generate import compile_model
    from symbolic.primitives import used

    looped = 0
    for example in _random_costs(FUZZ_COSTS):
        model = parse.loads(example.text, "fz_cost.toml")
        derived = compile_model(model).derivation
        template = _template(model)
        exprs = (derived.per_unit, derived.gradient)
        scalar = any(not FORMS[n].vectorizes for e in exprs for n in used(e) if n in FORMS)
        shares = any(reductions.MAX_SHARE in reductions.used(e) for e in exprs)
        assert template == ("cost.py.j2" if scalar or shares else "cost_loop.py.j2"), example.text
        if template != "cost_loop.py.j2":
            continue
        loop, whole = (
            validate.load(validate.stage(m.text, m.filename))
            for m in (render_model(model, "numba"), render_model(model, "numpy"))
        )
        try:
            validate.check_cost(model, loop, "numba")
        except validate.CannotValidate:
            continue  # NaN, inf or huge wherever tried (the fuzzer counts these apart)
        looped += 1
        rng = np.random.default_rng(looped)
        for dtype in (np.float64, np.float32):
            shape = (3, 4, 5)
            a = rng.uniform(-1, 1, shape).astype(dtype)
            y = rng.uniform(0, 1, shape).astype(dtype)
            inputs = _inputs(model, shape, rng, dtype)
            with np.errstate(all="ignore"):
                C, da = loop.loss(a, y, **inputs)
                C_np, da_np = whole.loss(a, y, **inputs)
            tol = 1e-12 if dtype == np.float64 else 1e-4
            assert C == pytest.approx(C_np, rel=tol, abs=tol), example.text
            scale = float(np.nanmax(np.abs(da_np))) if np.isfinite(da_np).any() else 1.0
            np.testing.assert_allclose(da, da_np, rtol=tol, atol=tol * scale, err_msg=example.text)
    assert looped >= 10, f"only {looped} of {FUZZ_COSTS} random costs took the loop"
