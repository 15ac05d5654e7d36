"""Costs with named inputs (``[inputs]``: a mask of padded steps, class or unit weights).

The shipped costs ``masked_squared_error`` (``m*(a - y)**2``, m one value per row) and
``weighted_softmax_cross_entropy`` (``m*w*y*...``, w one weight per class), in every
backend, against oracles that do not use their derivation:

- a masked step contributes nothing: its gradient is zero and C equals the cost of the
  kept steps alone, computed by the generated ``squared_error`` module (the same batch
  size dividing);
- weights scale each unit: the weighted softmax cross-entropy equals the unweighted
  module's with the target scaled by the weights (``w*y``), value and gradient;
- finite differences of the reference evaluator along random directions;
- ``loss(a, y)`` is the cost with every input ones; wrong shapes raise ValueError naming
  the argument and the shape; the gradient's dtype follows the prediction's;
- the spec language: ``[inputs]`` read and checked, bad inputs refused with the line.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from symbolic import evaluate, parse
from symbolic.generate import builtin_specs
from symbolic.validate import _adapted

BACKENDS = ("numpy", "numba", "torch", "jax")
SPECS = {path.stem: path for path in builtin_specs()}
MASKED, WEIGHTED = "masked_squared_error", "weighted_softmax_cross_entropy"


def view(name: str, backend: str):
    """The generated module of ``name`` for ``backend``, as NumPy arrays in and out."""
    return _adapted(backend, importlib.import_module(f"generated.{name}_{backend}"))


def raw(name: str, backend: str):
    return importlib.import_module(f"generated.{name}_{backend}")


def _padded(rng, steps: int, batch: int) -> np.ndarray:
    """A mask of variable-length sequences: sample b has its first ``length_b`` steps."""
    lengths = rng.integers(1, steps + 1, batch)
    lengths[0] = steps  # one full sequence, one of a single step
    lengths[-1] = 1
    return (np.arange(steps)[:, None] < lengths[None, :]).astype(np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_steps_contribute_nothing(backend):
    rng = np.random.default_rng(1)
    T, B, n = 5, 4, 3
    a, y = rng.standard_normal((T, B, n)), rng.standard_normal((T, B, n))
    mask = _padded(rng, T, B)
    C, da = view(MASKED, backend).loss(a, y, m=mask)
    kept = mask.astype(bool)
    assert np.all(da[~kept] == 0)
    # the kept steps alone, as rows of the plain squared error (which divides by their
    # count): rescaled to divide by the batch size
    count = int(kept.sum())
    C_kept, da_kept = view("squared_error", backend).loss(a[kept], y[kept])
    np.testing.assert_allclose(C, C_kept * count / B, rtol=1e-12)
    np.testing.assert_allclose(da[kept], da_kept * count / B, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_weights_scale_each_unit(backend):
    rng = np.random.default_rng(2)
    B, n = 6, 4
    a = rng.standard_normal((B, n))
    y = np.eye(n)[rng.integers(0, n, B)]
    w = rng.uniform(0.2, 3.0, n)
    C, da = view(WEIGHTED, backend).loss(a, y, w=w)
    C_ref, da_ref = view("softmax_cross_entropy", backend).loss(a, y * w)
    np.testing.assert_allclose(C, C_ref, rtol=1e-12)
    np.testing.assert_allclose(da, da_ref, rtol=1e-10, atol=1e-15)
    # a one-hot row of class c weighs its cross-entropy by w_c
    rows = [
        view("softmax_cross_entropy", backend).loss(a[i : i + 1], y[i : i + 1])[0] for i in range(B)
    ]
    np.testing.assert_allclose(C, np.dot(rows, w[y.argmax(1)]) / B, rtol=1e-12)


def _inputs(model, shape, rng):
    return {
        name: rng.uniform(0.0, 2.0, shape[:-1] if kind == "row" else shape[-1:])
        for name, kind in model.inputs.items()
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [MASKED, WEIGHTED])
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 5)])
def test_gradient_against_finite_differences(name, backend, shape):
    model = parse.load(SPECS[name])
    rng = np.random.default_rng(len(shape))
    a, y = rng.standard_normal(shape), rng.uniform(0, 1, shape)
    inputs = _inputs(model, shape, rng)
    C, da = view(name, backend).loss(a, y, **inputs)
    assert C == pytest.approx(evaluate.cost(model, a, y, inputs), rel=1e-12)
    for _ in range(3):
        d = rng.standard_normal(shape)
        h = 1e-5
        fd = (
            evaluate.cost(model, a + h * d, y, inputs) - evaluate.cost(model, a - h * d, y, inputs)
        ) / (2 * h)
        assert float(np.sum(da * d)) == pytest.approx(fd, rel=1e-7, abs=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [MASKED, WEIGHTED])
def test_missing_inputs_are_ones(name, backend):
    model = parse.load(SPECS[name])
    rng = np.random.default_rng(3)
    a, y = rng.standard_normal((3, 2, 4)), rng.uniform(0, 1, (3, 2, 4))
    ones = {k: np.ones_like(v) for k, v in _inputs(model, a.shape, rng).items()}
    C0, da0 = view(name, backend).loss(a, y)
    C1, da1 = view(name, backend).loss(a, y, **ones)
    assert C0 == C1
    np.testing.assert_array_equal(da0, da1)


@pytest.mark.parametrize("backend", ["numpy", "numba", "jax"])
def test_dtype_follows_the_prediction(backend):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (2, 3))]
    C, da = raw(WEIGHTED, backend).loss(a, y, m=np.ones((2, 3), bool), w=np.arange(4.0))
    assert np.asarray(da).dtype == np.float32


def test_torch_dtype_device_and_autograd():
    import torch

    module = raw(WEIGHTED, "torch")
    a = torch.randn(3, 4, dtype=torch.float32, requires_grad=True)
    y = torch.eye(4)[torch.tensor([0, 1, 2])]
    m = torch.tensor([1, 0, 1], dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    C, da = module.loss(a, y, m=m, w=w)
    assert da.dtype == torch.float32
    module.cost(a, y, m=m, w=w).backward()
    assert torch.equal(a.grad, da)
    assert torch.all(a.grad[1] == 0)
    with pytest.raises(RuntimeError, match="named input"):
        module.cost(a, y, m=m.clone().requires_grad_(True), w=w).backward()


def test_jax_cost_gradient_is_the_derived_one():
    import jax

    module = raw(MASKED, "jax")
    rng = np.random.default_rng(5)
    a, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    m = np.array([1.0, 0.0, 1.0, 0.5])
    _, da = module.loss(a, y, m=m)
    grad = jax.grad(lambda p: module.cost(p, y, m=m))(a)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(da), rtol=1e-6)
    assert np.all(np.asarray(grad)[1] == 0)


def _tensor(backend, value):
    if backend == "torch":
        import torch

        return torch.as_tensor(value)
    return value


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("argument", "bad", "expected"),
    [("m", (3, 2, 1), r"m: expected shape \(3, 2\)"), ("w", (3,), r"w: expected shape \(4,\)")],
)
def test_wrong_input_shapes_are_refused(backend, argument, bad, expected):
    a, y = np.zeros((3, 2, 4)), np.zeros((3, 2, 4))
    module = raw(WEIGHTED, backend)
    with pytest.raises(ValueError, match=expected):
        module.loss(
            _tensor(backend, a), _tensor(backend, y), **{argument: _tensor(backend, np.ones(bad))}
        )


# --- the spec language -------------------------------------------------------------------

BASE = 'name = "c"\nkind = "cost"\nprediction = "a"\ntarget = "y"\n'


def test_inputs_are_read_in_order():
    cost = parse.loads(BASE + 'per_unit = "w*m*(a - y)**2"\n[inputs]\nw = "unit"\nm = "row"\n')
    assert cost.inputs == {"w": "unit", "m": "row"}
    assert "input w: unit" in str(cost)


@pytest.mark.parametrize(
    ("inputs", "per_unit", "symbol", "words"),
    [
        ('m = "step"', "m*(a - y)**2", "m", "unknown input kind"),
        ('m = "row"', "(a - y)**2", "m", "never used"),
        ('y = "row"', "(a - y)**2", "y", "prediction or the target"),
        ('exp = "row"', "(a - y)**2", "exp", "primitive"),
        ('_m = "row"', "(a - y)**2", "_m", "may not start with '_'"),
    ],
)
def test_bad_inputs_are_refused(inputs, per_unit, symbol, words):
    text = BASE + f'per_unit = "{per_unit}"\n[inputs]\n{inputs}\n'
    with pytest.raises(parse.SpecError) as info:
        parse.loads(text, "bad.toml")
    assert info.value.line == 7 and info.value.symbol == symbol
    assert words in info.value.message


def test_an_input_may_not_take_a_positional_name():
    text = 'name = "c"\nkind = "cost"\nprediction = "z"\ntarget = "t"\n'
    text += 'per_unit = "a*(z - t)**2"\n[inputs]\na = "row"\n'
    with pytest.raises(parse.SpecError, match="positional argument of loss"):
        parse.loads(text)


def test_undeclared_name_in_per_unit_is_refused():
    with pytest.raises(parse.SpecError, match="unknown name 'm'"):
        parse.loads(BASE + 'per_unit = "m*(a - y)**2"\n')


def test_a_cost_claim_is_by_the_prediction():
    text = BASE + 'per_unit = "m*(a - y)**2"\n[inputs]\nm = "row"\n[claims]\ndC_dm = "(a - y)**2"\n'
    with pytest.raises(parse.SpecError, match="a cost's claim is dC_da") as info:
        parse.loads(text)
    assert info.value.line == 9
