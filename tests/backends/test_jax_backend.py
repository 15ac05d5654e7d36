"""The JAX backend: its modules against the NumPy ones, its custom_vjp against JAX's own
autodiff, under jit, in float32, and without JAX installed.

For every shipped spec (cells and costs), in float64: the outputs and every gradient
equal the NumPy module's to 1e-12; ``jax.grad`` through ``apply`` (the derived backward,
attached with ``jax.custom_vjp``) equals ``jax.grad`` through the plain forward program
(``_forward``: JAX differentiates it itself, an oracle independent of the derivation).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

from symbolic import parse  # noqa: E402
from symbolic.backends.jax import primitives as jax_primitives  # noqa: E402
from symbolic.backends.jax.printer import code  # noqa: E402
from symbolic.generate import builtin_specs  # noqa: E402
from symbolic.primitives import PRIMITIVES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODELS = {path.stem: parse.load(path) for path in builtin_specs()}
CELLS = sorted(n for n, m in MODELS.items() if m.kind != "cost")
RECURRENT = sorted(n for n, m in MODELS.items() if m.kind == "recurrent")
COSTS = sorted(n for n, m in MODELS.items() if m.kind == "cost")
T, B, N_IN, N_OUT = 5, 3, 4, 6
RTOL = 1e-12


@pytest.fixture(autouse=True, scope="module")
def x64():
    """float64 in JAX for this module's tests (as validation runs them); put back after."""
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def module(name: str, backend: str):
    return importlib.import_module(f"generated.{name}_{backend}")


def close(got, want, what: str, rtol: float = RTOL) -> None:
    """Equal to ``rtol`` relative to the largest magnitude of ``want`` (at least 1)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    error = float(np.max(np.abs(got - want), initial=0.0)) / scale
    assert error <= rtol, f"{what}: off by {error:.3g} (relative), tolerance {rtol:.0e}"


def problem(name: str, seed: int = 0, dtype=np.float64):
    """NumPy parameters, input, first states and the output's and states' weights."""
    model = MODELS[name]
    rng = np.random.default_rng(seed)
    n_in = N_OUT if model.input_elementwise else N_IN
    params = module(name, "numpy").init_params(n_in, N_OUT, seed=seed, dtype=dtype)
    lead = (T, B) if model.kind == "recurrent" else (B,)
    x = rng.standard_normal((*lead, n_in)).astype(dtype)
    state0 = {s: 0.5 * rng.standard_normal((B, N_OUT)).astype(dtype) for s in model.states}
    da = rng.standard_normal((*lead, N_OUT)).astype(dtype)
    dstate = {s: rng.standard_normal((B, N_OUT)).astype(dtype) for s in model.states}
    return params, x, state0, da, dstate


def run(mod, name, params, x, state0, da, dstate):
    """``(a, grads, dx, dstate0, final states)`` of a module's forward and backward."""
    if MODELS[name].kind == "recurrent":
        a, cache = mod.forward(params, x, state0)
        grads, dx, dstate0 = mod.backward(params, cache, da, dstate)
        return a, grads, dx, dstate0, cache["state"]
    a, cache = mod.forward(params, x)
    grads, dx = mod.backward(params, cache, da)
    return a, grads, dx, {}, {}


# --- against the NumPy modules -------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
def test_cell_equals_the_numpy_module(name):
    args = problem(name)
    want = run(module(name, "numpy"), name, *args)
    got = run(module(name, "jax"), name, *args)
    close(got[0], want[0], "the output")
    assert list(got[1]) == list(want[1]) == list(MODELS[name].params)
    for key in want[1]:
        close(got[1][key], want[1][key], f"the gradient of {key}")
    close(got[2], want[2], "dx")
    for s in MODELS[name].states:
        close(got[3][s], want[3][s], f"dstate0[{s!r}]")
        close(got[4][s], want[4][s], f"the final state {s!r}")


@pytest.mark.parametrize("name", COSTS)
@pytest.mark.parametrize("shape", [(B, N_OUT), (T, B, N_OUT)])
def test_cost_equals_the_numpy_module(name, shape):
    rng = np.random.default_rng(1)
    a, y = rng.uniform(0.05, 0.95, shape), rng.uniform(0, 1, shape)
    C, da = module(name, "numpy").loss(a, y)
    C_jax, da_jax = module(name, "jax").loss(a, y)
    close(C_jax, C, "the cost")
    close(da_jax, da, "the gradient")
    assert da_jax.dtype == jnp.float64


# --- custom_vjp against JAX's own autodiff -------------------------------------------------


def _scalar(a, state, da, dstate):
    """The scalar whose gradient is compared: <da, a> + sum_s <dstate_s, state_s>."""
    total = jnp.sum(da * a)
    for s, v in state.items():
        total = total + jnp.sum(dstate[s] * v)
    return total


def _plain(mod, recurrent):
    """``apply`` without custom_vjp: the forward program JAX differentiates itself."""
    if recurrent:
        return lambda params, x, state0: (lambda out: (out[0], out[1]["state"]))(
            mod._forward(params, x, state0)
        )
    return lambda params, x: mod._forward(params, x)[0]


@pytest.mark.parametrize("name", CELLS)
def test_grad_through_apply_is_jax_autodiff_of_the_plain_forward(name):
    mod = module(name, "jax")
    params, x, state0, da, dstate = problem(name, seed=2)
    recurrent = MODELS[name].kind == "recurrent"

    def loss(apply):
        if recurrent:
            return lambda p, x, s: _scalar(*apply(p, x, s), da, dstate)
        return lambda p, x: _scalar(apply(p, x), {}, da, dstate)

    args = (params, x, state0) if recurrent else (params, x)
    argnums = tuple(range(len(args)))
    derived = jax.grad(loss(mod.apply), argnums=argnums)(*args)
    oracle = jax.grad(loss(_plain(mod, recurrent)), argnums=argnums)(*args)
    for key in params:
        close(derived[0][key], oracle[0][key], f"the gradient of {key}")
    close(derived[1], oracle[1], "dx")
    for s in MODELS[name].states:
        close(derived[2][s], oracle[2][s], f"dstate0[{s!r}]")


@pytest.mark.parametrize("name", CELLS)
def test_apply_gives_the_gradients_of_backward(name):
    """jax.vjp of apply is backward itself (the custom_vjp is the derived program)."""
    mod = module(name, "jax")
    params, x, state0, da, dstate = problem(name, seed=3)
    a, grads, dx, dstate0, final = run(mod, name, params, x, state0, da, dstate)
    if MODELS[name].kind == "recurrent":
        (a2, final2), pullback = jax.vjp(mod.apply, params, x, state0)
        grads2, dx2, dstate02 = pullback((jnp.asarray(da), dstate))
        for s in MODELS[name].states:
            assert np.array_equal(final2[s], final[s])
            close(dstate02[s], dstate0[s], f"dstate0[{s!r}]", 1e-15)
    else:
        a2, pullback = jax.vjp(mod.apply, params, x)
        grads2, dx2 = pullback(jnp.asarray(da))
    assert np.array_equal(a2, a)
    for key in params:
        close(grads2[key], grads[key], f"the gradient of {key}", 1e-15)
    close(dx2, dx, "dx", 1e-15)


@pytest.mark.parametrize("name", COSTS)
def test_grad_of_cost_is_the_derived_gradient_and_jax_autodiff(name):
    mod = module(name, "jax")
    rng = np.random.default_rng(4)
    a, y = rng.uniform(0.05, 0.95, (T, B, N_OUT)), rng.uniform(0, 1, (T, B, N_OUT))
    derived = jax.grad(mod.cost)(a, y)
    # a cost's named inputs, left out of cost and loss: ones
    ones = [
        jnp.ones(a.shape[:-1] if kind == "row" else a.shape[-1:])
        for kind in getattr(mod, "INPUTS", {}).values()
    ]
    oracle = jax.grad(lambda a: mod._loss(a, jnp.asarray(y), *ones)[0])(jnp.asarray(a))
    close(derived, mod.loss(a, y)[1], "the gradient against loss", 1e-15)
    close(derived, oracle, "the gradient against JAX's autodiff")
    assert np.all(jax.grad(mod.cost, argnums=1)(a, y) == 0)  # the target is a constant


# --- jit, float32, need_dx ------------------------------------------------------------------

TRAINED = ["dense_tanh", "grn", "lstm", "mingru"]


def _step_function(name: str):
    """One SGD step of a cell under a squared error, through apply and cost."""
    mod, cost = module(name, "jax"), module("squared_error", "jax")
    recurrent = MODELS[name].kind == "recurrent"

    def objective(params, x, y):
        a = mod.apply(params, x)[0] if recurrent else mod.apply(params, x)
        return cost.cost(a, y)

    def step(params, x, y):
        value, grads = jax.value_and_grad(objective)(params, x, y)
        return value, {k: params[k] - 0.1 * grads[k] for k in params}

    return step


@pytest.mark.parametrize("name", TRAINED)
def test_jit_of_a_training_step_matches_eager(name):
    params, x, _, da, _ = problem(name, seed=5)
    step = _step_function(name)
    eager_value, eager = step(params, x, da)
    jitted_value, jitted = jax.jit(step)(params, x, da)
    close(jitted_value, eager_value, "the loss")
    for key in params:
        close(jitted[key], eager[key], f"the updated {key}")
    # a second step from the first one's result still runs, and the loss falls
    again, _ = jax.jit(step)(jitted, x, da)
    assert float(again) < float(jitted_value)


@pytest.mark.parametrize("name", CELLS)
def test_float32_runs_and_stays_float32(name):
    mod = module(name, "jax")
    params, x, state0, da, dstate = problem(name, seed=6, dtype=np.float32)
    a, grads, dx, dstate0, final = run(mod, name, params, x, state0, da, dstate)
    want = run(module(name, "numpy"), name, params, x, state0, da, dstate)
    for got, ref in [(a, want[0]), (dx, want[2]), *((grads[k], want[1][k]) for k in grads)]:
        assert got.dtype == jnp.float32
        close(got, ref, "a float32 result", 1e-4)
    for s in MODELS[name].states:
        assert dstate0[s].dtype == final[s].dtype == jnp.float32
    for value in mod.init_params(N_IN, N_OUT, dtype=np.float32).values():
        assert value.dtype == jnp.float32


@pytest.mark.parametrize("name", ["dense_tanh", "grn"])
def test_need_dx_false_skips_only_dx(name):
    mod = module(name, "jax")
    params, x, state0, da, dstate = problem(name, seed=7)
    recurrent = MODELS[name].kind == "recurrent"
    a, cache = mod.forward(params, x, state0) if recurrent else mod.forward(params, x)
    full = mod.backward(params, cache, da, need_dx=True)
    skipped = mod.backward(params, cache, da, need_dx=False)
    assert skipped[1] is None and full[1] is not None
    for key in params:
        assert np.array_equal(skipped[0][key], full[0][key])


# --- the module's contract -------------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
def test_names_and_init_params(name):
    mod, ref = module(name, "jax"), module(name, "numpy")
    for attr in ("NAME", "KIND", "PARAMS", "SPEC_SHA256"):
        assert getattr(mod, attr) == getattr(ref, attr)
    assert getattr(mod, "STATES", None) == getattr(ref, "STATES", None)
    assert mod.param_shapes(N_IN, N_OUT) == ref.param_shapes(N_IN, N_OUT)
    params = mod.init_params(N_IN, N_OUT, seed=1)  # x64 on: float64 by default
    again = mod.init_params(N_IN, N_OUT, seed=1)
    other = mod.init_params(N_IN, N_OUT, seed=2)
    for key, shape in ref.param_shapes(N_IN, N_OUT).items():
        assert params[key].shape == shape and params[key].dtype == jnp.float64
        assert np.array_equal(params[key], again[key])
        if key not in MODELS[name].init or MODELS[name].init[key].name != "constant":
            assert not np.array_equal(params[key], other[key])
    with pytest.raises(ValueError, match="dtype"):
        mod.init_params(N_IN, N_OUT, dtype=np.int32)


def test_init_params_draws_the_numpy_modules_distributions():
    mod = module("grn", "jax")
    params = mod.init_params(400, 500, seed=0)
    assert abs(float(jnp.std(params["WXu"])) - 1 / np.sqrt(400)) < 1e-3
    assert float(jnp.min(params["Bc"])) >= -0.1 and float(jnp.max(params["Bc"])) <= 0.1
    assert abs(float(jnp.mean(params["Bc"]))) < 0.01
    # grn.toml's [init]: Bu = -log U(1, T-1), T = 10 without steps=.
    assert float(jnp.max(params["Bu"])) <= 0 and float(jnp.min(params["Bu"])) >= -np.log(9)


@pytest.mark.parametrize("name", ["dense_tanh", "lstm"])
def test_wrong_shapes_and_dtypes_raise_value_error_naming_the_argument(name):
    mod = module(name, "jax")
    params, x, state0, da, _ = problem(name)
    recurrent = MODELS[name].kind == "recurrent"

    def forward(p, x, s=None):
        return mod.forward(p, x, s) if recurrent else mod.forward(p, x)

    with pytest.raises(ValueError, match="^x: expected shape"):
        forward(params, x[..., :-1].reshape(-1))
    with pytest.raises(ValueError, match="^x: expected dtype"):
        forward(params, x.astype(np.int32))
    first = next(iter(params))
    with pytest.raises(ValueError, match=r"^params\['"):
        forward({**params, first: params[first].astype(np.float32)}, x)
    last = list(params)[-1]
    with pytest.raises(ValueError, match=rf"^params: expected keys .*missing \['{last}'\]"):
        forward({k: v for k, v in params.items() if k != last}, x)
    _, cache = forward(params, x, state0)
    with pytest.raises(ValueError, match="^da: expected shape"):
        mod.backward(params, cache, da[..., :-1])
    with pytest.raises(ValueError, match="^da: expected dtype"):
        mod.backward(params, cache, da.astype(np.float32))
    if recurrent:
        with pytest.raises(ValueError, match=r"^state0\['h'\]: expected shape"):
            forward(params, x, {**state0, "h": state0["h"][:-1]})
        with pytest.raises(ValueError, match="^state0: expected None or a dict"):
            forward(params, x, {"h": state0["h"]})


def test_cost_shape_and_dtype_errors():
    mod = module("squared_error", "jax")
    with pytest.raises(ValueError, match="^y: expected shape"):
        mod.loss(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="^a: expected dtype"):
        mod.loss(np.zeros((2, 3), np.int32), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="^a: expected shape"):
        mod.cost(np.zeros(3), np.zeros(3))


def test_a_module_imports_no_numpy():
    """The computation is pure jax.numpy: the module's text imports JAX only."""
    for path in (ROOT / "generated").glob("*_jax.py"):
        text = path.read_text()
        imports = [
            ln.strip() for ln in text.splitlines() if ln.strip().startswith(("import ", "from "))
        ]
        assert imports and all(" jax" in ln for ln in imports), (path.name, imports)
        assert "np." not in text.replace("_jnp.", ""), path.name


def test_recurrences_run_in_scans_not_python_loops():
    for name in RECURRENT:
        text = (ROOT / "generated" / f"{name}_jax.py").read_text()
        assert text.count("_lax.scan(") == 2, name
        assert "for _t in" not in text and "range(_T" not in text, name


def test_without_jax_the_import_error_names_the_extra():
    """Simulated in a fresh interpreter: a ``None`` entry in sys.modules makes ``import
    jax`` fail as if it were not installed."""
    script = (
        "import sys; sys.modules['jax'] = None\n"
        "try:\n"
        "    import generated.grn_jax\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "pip install 'derivgen[jax]'" in result.stdout, result.stdout + result.stderr


# --- the primitives ----------------------------------------------------------------------------


def _primitive(name: str):
    namespace = jax_primitives.namespace()
    text = code(PRIMITIVES[name].func(sp.Symbol("z")))
    return lambda z: eval(text, namespace, {"z": z})  # noqa: S307 - our own printed code


def test_every_primitive_has_jax_code():
    assert set(jax_primitives.FORMS) == set(PRIMITIVES)


def test_softplus_is_accurate_to_the_last_bits_everywhere():
    z = np.array([-745.0, -700.0, -40.0, -30.0, -1.0, -1e-9, 0.0, 1e-9, 1.0, 30.0, 40.0, 700.0])
    got = np.asarray(_primitive("softplus")(jnp.asarray(z)))
    want = np.logaddexp(0, z)
    normal = want > np.finfo(np.float64).tiny  # XLA flushes subnormal results to zero
    assert np.all(np.abs(got - want)[normal] <= 2 * np.spacing(want[normal]))


def test_step_and_relu_keep_nan_and_relu_prime_at_zero_is_zero():
    step, relu = _primitive("step"), _primitive("relu")
    z = jnp.asarray([-1.0, 0.0, 2.0, np.nan, -np.inf, np.inf])
    assert np.array_equal(step(z), [0.0, 0.0, 1.0, np.nan, 0.0, 1.0], equal_nan=True)
    assert np.array_equal(relu(z), [0.0, 0.0, 2.0, np.nan, 0.0, np.inf], equal_nan=True)
    assert float(jax.grad(relu)(0.0)) == 0.0
    assert float(jax.grad(relu)(1.5)) == 1.0
    assert step(jnp.float32(1)).dtype == jnp.float32


#: Where each primitive's JAX code must match its NumPy reference.
POINTS = {
    "sigmoid": [-700, -40, -5, -1, -1e-9, 0, 1e-9, 0.3, 1, 5, 40, 1000],
    "tanh": [-1000, -20, -1, -0.6, -0.1, -1e-9, 0, 1e-9, 0.1, 0.6, 1, 20, 1000],
    "exp": [-700, -30, -1, -1e-9, 0, 1e-9, 0.5, 1, 30, 700],
    "log": [1e-300, 1e-9, 0.5, 1, 2, 1e300],
    "softplus": [-700, -40, -1, 0, 1e-9, 1, 40, 1000],
    "relu": [-1000, -1, -1e-9, 0, 1e-9, 1, 1000],
    "step": [-1000, -1, -1e-300, 0, 1e-300, 1, 1000],
    "sign": [-1000, -1, -1e-300, 0, 1e-300, 1, 1000],
    "abs": [-1000, -1, -1e-300, 0, 1e-300, 1, 1000],
    "sqrt": [0, 1e-300, 1e-9, 0.5, 1, 2, 1e300],
    "erf": [-30, -6, -1, -1e-9, 0, 1e-300, 1e-9, 0.3, 1, 6, 30],
}


def test_sign_and_abs_keep_nan_and_abs_prime_at_zero_is_zero():
    sign, absolute = _primitive("sign"), _primitive("abs")
    z = jnp.asarray([-2.0, 0.0, 3.0, np.nan, -np.inf, np.inf])
    assert np.array_equal(sign(z), [-1.0, 0.0, 1.0, np.nan, -1.0, 1.0], equal_nan=True)
    assert np.array_equal(absolute(z), [2.0, 0.0, 3.0, np.nan, np.inf, np.inf], equal_nan=True)
    # the primitives table's derivatives: abs'(0) = 0 (jnp.abs gives 1), sign' = 0
    assert float(jax.grad(absolute)(0.0)) == 0.0
    assert float(jax.grad(absolute)(-1.5)) == -1.0
    assert float(jax.grad(sign)(0.7)) == 0.0


@pytest.mark.parametrize("name", sorted(POINTS))
def test_each_primitive_computes_its_reference(name):
    assert set(POINTS) == set(PRIMITIVES)
    function = _primitive(name)
    for point in POINTS[name]:
        got = float(function(jnp.float64(point)))
        want = float(PRIMITIVES[name].reference(np.float64(point)))
        assert got == pytest.approx(want, rel=1e-13, abs=1e-300), f"{name}({point})"


def test_printing_renames_symbols_also_inside_calls_and_powers():
    x, y, h = sp.symbols("x y h")
    names = {"x": "G_seq", "h": "h_seq", "y": "W"}
    assert code(x * y + h, names) == "h_seq + G_seq*W"
    assert code(PRIMITIVES["tanh"].func(x) ** 2 + sp.sqrt(h), names) == (
        "_jnp.sqrt(h_seq) + _jnp.tanh(G_seq)**2"
    )


def test_max_share_keeps_a_nan_row_nan_under_jit():
    """max's adjoint on a row holding a NaN is NaN, eager and under jit (where XLA once
    turned the share's 0/0 into 0: tests/regressions/max_of_a_row_holding_nan.toml)."""
    share = jax_primitives.namespace()["_max_share"]
    z = jnp.asarray([[1.0, np.nan, 3.0], [1.0, 3.0, 3.0], [-np.inf, 2.0, np.inf]])
    want = [[np.nan] * 3, [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]
    for run in (share, jax.jit(share)):
        assert np.array_equal(np.asarray(run(z)), want, equal_nan=True)
