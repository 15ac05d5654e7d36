"""The torch backend (generated/<spec>_torch.py): every shipped spec's module against the
NumPy module (a second implementation: 1e-12 in float64), ``torch.autograd.gradcheck``
through the custom op (finite differences: an oracle independent of the derivation),
``torch.library.opcheck``, ``torch.compile(fullgraph=True)`` against eager, the ``Cell``
modules and the costs, and the module's errors."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(p.stem for p in (ROOT / "symbolic" / "specs").glob("*.toml"))
N_IN, N_OUT, T, B = 3, 4, 5, 2


def modules(spec: str):
    return (
        importlib.import_module(f"generated.{spec}_torch"),
        importlib.import_module(f"generated.{spec}_numpy"),
    )


CELLS = [s for s in SPECS if modules(s)[0].KIND != "cost"]
COSTS = [s for s in SPECS if modules(s)[0].KIND == "cost"]


def problem(module, seed=0, dtype=torch.float64):
    """Parameters, input and (for a recurrent cell) first states, as tensors."""
    gen = torch.Generator().manual_seed(seed)
    n_in = N_OUT if getattr(module, "INPUT_ELEMENTWISE", False) else N_IN
    params = module.init_params(n_in, N_OUT, seed=seed, dtype=dtype)
    recurrent = module.KIND == "recurrent"
    x = torch.randn((T, B, n_in) if recurrent else (B, n_in), generator=gen, dtype=dtype)
    state0 = (
        {s: torch.randn((B, N_OUT), generator=gen, dtype=dtype) for s in module.STATES}
        if recurrent
        else None
    )
    return params, x, state0


def leaves(params, x, state0):
    """The inputs of ``apply`` as one flat list of tensors that require gradients."""
    flat = [v.detach().clone().requires_grad_() for v in params.values()]
    flat.append(x.detach().clone().requires_grad_())
    if state0 is not None:
        flat += [v.detach().clone().requires_grad_() for v in state0.values()]
    return flat


def flat_apply(module):
    """``apply`` as a function of flat tensors returning a tuple of tensors."""
    n = len(module.PARAMS)

    def run(*args):
        params = dict(zip(module.PARAMS, args[:n], strict=True))
        if module.KIND != "recurrent":
            return (module.apply(params, args[n]),)
        state0 = dict(zip(module.STATES, args[n + 1 :], strict=True))
        a, state = module.apply(params, args[n], state0)
        return (a, *(state[s] for s in module.STATES))

    return run


def _rel(got, want) -> float:
    got, want = np.asarray(got), np.asarray(want)
    return float(
        np.max(np.abs(got - want), initial=0.0) / max(np.max(np.abs(want), initial=0), 1e-300)
    )


@pytest.mark.parametrize("spec", CELLS)
def test_outputs_and_gradients_equal_the_numpy_module(spec):
    mine, reference = modules(spec)
    params, x, state0 = problem(mine)
    np_params = {k: v.numpy() for k, v in params.items()}
    recurrent = mine.KIND == "recurrent"
    rng = np.random.default_rng(1)
    if recurrent:
        np_state0 = {k: v.numpy() for k, v in state0.items()}
        a, cache = mine.forward(params, x, state0)
        want_a, want_cache = reference.forward(np_params, x.numpy(), np_state0)
        da = rng.standard_normal(want_a.shape)
        dstate = {s: rng.standard_normal((B, N_OUT)) for s in mine.STATES}
        grads, dx, dstate0 = mine.backward(
            params, cache, torch.from_numpy(da), {k: torch.from_numpy(v) for k, v in dstate.items()}
        )
        want_grads, want_dx, want_dstate0 = reference.backward(np_params, want_cache, da, dstate)
        for s in mine.STATES:
            assert _rel(cache["state"][s], want_cache["state"][s]) < 1e-12, s
            assert _rel(dstate0[s], want_dstate0[s]) < 1e-12, s
    else:
        a, cache = mine.forward(params, x)
        want_a, want_cache = reference.forward(np_params, x.numpy())
        da = rng.standard_normal(want_a.shape)
        grads, dx = mine.backward(params, cache, torch.from_numpy(da))
        want_grads, want_dx = reference.backward(np_params, want_cache, da)
    assert _rel(a, want_a) < 1e-12
    assert list(grads) == list(mine.PARAMS)
    for k in mine.PARAMS:
        assert _rel(grads[k], want_grads[k]) < 1e-12, k
    assert _rel(dx, want_dx) < 1e-12


@pytest.mark.parametrize("spec", CELLS)
def test_gradcheck_through_the_custom_op(spec):
    module = modules(spec)[0]
    args = leaves(*problem(module, seed=2))
    assert torch.autograd.gradcheck(flat_apply(module), args, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("spec", CELLS)
def test_opcheck(spec):
    module = modules(spec)[0]
    params, x, state0 = problem(module, seed=3)
    args = [x, *(state0.values() if state0 else ()), *params.values()]
    args = [a.requires_grad_() for a in args]
    torch.library.opcheck(module._forward_op, args)


@pytest.mark.parametrize("spec", CELLS)
def test_compiled_step_matches_eager(spec):
    """A training step under torch.compile(fullgraph=True): the custom ops stay whole."""
    module = modules(spec)[0]
    args = leaves(*problem(module, seed=4))
    run = flat_apply(module)

    def step(*flat):
        return sum((out * out).sum() for out in run(*flat))

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(*args), args)
    want = torch.autograd.grad(step(*args), args)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("spec", ["grn", "lstm", "dense_tanh"])
def test_compiled_with_inductor(spec):
    """The default backend (inductor) compiles around the ops as well."""
    module = modules(spec)[0]
    args = leaves(*problem(module, seed=5))
    run = flat_apply(module)

    def step(*flat):
        return sum((out * out).sum() for out in run(*flat))

    torch._dynamo.reset()
    got = torch.autograd.grad(torch.compile(step, fullgraph=True)(*args), args)
    want = torch.autograd.grad(step(*args), args)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("spec", CELLS)
def test_float32_runs_in_float32(spec):
    module = modules(spec)[0]
    params, x, state0 = problem(module)
    recurrent = state0 is not None

    def run(dtype):
        args = [{k: v.to(dtype) for k, v in params.items()}, x.to(dtype)]
        if recurrent:
            args.append({k: v.to(dtype) for k, v in state0.items()})
        out = module.apply(*args)
        return out[0] if recurrent else out

    a = run(torch.float32)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a.double(), run(torch.float64), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", ["grn", "lstm", "dense_sigmoid"])
def test_cell_module_trains(spec):
    """The nn.Module: parameters registered by name, initialised as init_params, and a
    few SGD steps through loss.backward() lower the loss."""
    module = modules(spec)[0]
    cell = module.Cell(N_IN, N_OUT, seed=7, dtype=torch.float64)
    assert [n for n, _ in cell.named_parameters()] == list(module.PARAMS)
    for name, value in module.init_params(N_IN, N_OUT, seed=7).items():
        assert torch.equal(getattr(cell, name).detach(), value)
    recurrent = module.KIND == "recurrent"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((T, B, N_IN) if recurrent else (B, N_IN), generator=gen, dtype=torch.float64)
    y = torch.rand((T, B, N_OUT) if recurrent else (B, N_OUT), generator=gen, dtype=torch.float64)
    cost = importlib.import_module("generated.squared_error_torch").cost
    optimizer = torch.optim.SGD(cell.parameters(), lr=0.1)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        out = cell(x)
        a = out[0] if recurrent else out
        loss = cost(a, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("spec", COSTS)
def test_cost_equals_the_numpy_module_and_its_autograd(spec):
    mine, reference = modules(spec)
    gen = torch.Generator().manual_seed(0)
    for shape in ((B, N_OUT), (T, B, N_OUT)):
        a = torch.rand(shape, generator=gen, dtype=torch.float64) * 0.8 + 0.1
        y = torch.rand(shape, generator=gen, dtype=torch.float64)
        C, da = mine.loss(a, y)
        want_C, want_da = reference.loss(a.numpy(), y.numpy())
        assert C.dim() == 0
        assert _rel(C, want_C) < 1e-12
        assert _rel(da, want_da) < 1e-12
        leaf = a.clone().requires_grad_()
        mine.cost(leaf, y).backward()
        torch.testing.assert_close(leaf.grad, da, rtol=0, atol=0)
        assert torch.autograd.gradcheck(
            lambda t, y=y: mine.cost(t, y), [a.clone().requires_grad_()]
        )
    with pytest.raises(RuntimeError, match="gradient by the target"):
        mine.cost(a, y.clone().requires_grad_()).backward()


def test_wrong_arguments_are_named():
    module = modules("grn")[0]
    params, x, state0 = problem(module)
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, n_in\)"):
        module.apply(params, x[0])
    with pytest.raises(ValueError, match="x: expected a torch.Tensor"):
        module.apply(params, x.numpy())
    with pytest.raises(ValueError, match=r"params\['WXu'\]: expected dtype torch.float64"):
        module.apply({**params, "WXu": params["WXu"].float()}, x)
    with pytest.raises(ValueError, match="params: expected keys"):
        module.apply({k: v for k, v in params.items() if k != "Bu"}, x)
    with pytest.raises(ValueError, match=r"state0\['h'\]: expected shape"):
        module.apply(params, x, {"h": state0["h"][:1]})


def test_a_module_imported_twice_registers_its_own_ops(tmp_path):
    """Two copies of one spec's module (validation loads them under private names) in one
    process: each has its own ops, and both run."""
    source = (ROOT / "generated" / "grn_torch.py").read_text()
    first = importlib.import_module("generated.grn_torch")
    spec = importlib.util.spec_from_file_location("grn_torch_copy", tmp_path / "copy.py")
    (tmp_path / "copy.py").write_text(source)
    second = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(second)
    assert second._forward_op._qualname != first._forward_op._qualname
    params, x, state0 = problem(first)
    torch.testing.assert_close(
        second.apply(params, x, state0)[0], first.apply(params, x, state0)[0]
    )


def test_the_import_error_names_the_extra():
    """Without PyTorch, importing a torch module says which extra installs it."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import generated.grn_torch\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert "pip install 'derivgen[torch]'" in out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("spec", ["grn", "lstm", "dense_tanh"])
def test_on_cuda_equals_the_cpu(spec):
    module = modules(spec)[0]
    params, x, state0 = problem(module)
    cpu = flat_apply(module)(*leaves(params, x, state0))
    moved = [t.cuda() for t in leaves(params, x, state0)]
    gpu = flat_apply(module)(*[t.detach().requires_grad_() for t in moved])
    for g, c in zip(gpu, cpu, strict=True):
        torch.testing.assert_close(g.cpu(), c, rtol=1e-12, atol=1e-12)


def test_max_share_keeps_a_nan_row_nan():
    """max's adjoint on a row holding a NaN is NaN (said outright, not left to a 0/0 a
    compiler may rewrite: tests/regressions/max_of_a_row_holding_nan.toml)."""
    from symbolic.backends.torch import primitives as torch_primitives

    share = torch_primitives.namespace()["_max_share"]
    z = torch.tensor([[1.0, np.nan, 3.0], [1.0, 3.0, 3.0], [-np.inf, 2.0, np.inf]])
    got = share(z).numpy()
    want = [[np.nan] * 3, [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]
    assert np.array_equal(got, want, equal_nan=True)
