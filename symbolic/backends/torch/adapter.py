"""The NumPy view of a torch module, through which validation runs it.

:func:`numpy_view` wraps a generated torch module in a module with the NumPy contract
(float64 arrays in, arrays out): ``forward``/``backward`` call the module's plain passes,
and the pair ``forward_autograd``/``backward_autograd`` differentiates ``apply`` with
``torch.autograd``, so that validation checks the custom op's registered backward against
the interpreter and finite differences as well. Arrays are returned as views of the
tensors (``Tensor.numpy``), and the cache's tensors are in the cache as arrays, so a
returned value that shares memory with what backward reads is found, as it is for the
NumPy modules.
"""

from __future__ import annotations

import types

import numpy as np


def _tensor(value, grad: bool = False):
    import torch

    out = torch.from_numpy(np.array(value, copy=True))
    return out.requires_grad_(True) if grad else out


def _arrays(value):
    """Tensors (in dicts, tuples and lists) as arrays that share their memory."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, dict):
        return {k: _arrays(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return {f"_{i}": _arrays(v) for i, v in enumerate(value)}
    return value


def _plain(module):
    """``forward``/``backward`` through the module's plain functions."""
    recurrent = module.KIND == "recurrent"

    def forward(params, x, state0=None):
        params = {k: _tensor(v) for k, v in params.items()}
        if recurrent:
            state0 = None if state0 is None else {k: _tensor(v) for k, v in state0.items()}
            a, cache = module.forward(params, _tensor(x), state0)
        else:
            a, cache = module.forward(params, _tensor(x))
        return a.numpy(), {"_torch": cache, **_arrays(cache)}

    def backward(params, cache, da, dstate=None, *, need_dx=True):
        params = {k: _tensor(v) for k, v in params.items()}
        if recurrent:
            dstate = None if dstate is None else {k: _tensor(v) for k, v in dstate.items()}
            grads, dx, dstate0 = module.backward(
                params, cache["_torch"], _tensor(da), dstate, need_dx=need_dx
            )
            return _arrays(grads), None if dx is None else dx.numpy(), _arrays(dstate0)
        grads, dx = module.backward(params, cache["_torch"], _tensor(da), need_dx=need_dx)
        return _arrays(grads), None if dx is None else dx.numpy()

    return forward, backward


def _autograd(module):
    """``forward``/``backward`` through ``apply`` and ``torch.autograd.grad``: the
    gradients the custom op's registered backward gives."""
    import torch

    recurrent = module.KIND == "recurrent"

    def forward(params, x, state0=None):
        leaves = {k: _tensor(v, grad=True) for k, v in params.items()}
        xt = _tensor(x, grad=True)
        if recurrent:
            names = module.STATES
            if state0 is None:
                state0 = {s: np.zeros((x.shape[1], module_out(leaves))) for s in names}
            s0 = {k: _tensor(v, grad=True) for k, v in state0.items()}
            a, final = module.apply(leaves, xt, s0)
            inputs = [*leaves.values(), xt, *(s0[s] for s in names)]
            graph = ([a, *(final[s] for s in names)], inputs)
            state = {s: final[s].detach().numpy().copy() for s in names}
            return a.detach().numpy().copy(), {"_graph": graph, "state": state}
        a = module.apply(leaves, xt)
        return a.detach().numpy().copy(), {"_graph": ([a], [*leaves.values(), xt])}

    def module_out(leaves):
        return leaves[module.PARAMS[0]].shape[0]

    def backward(params, cache, da, dstate=None, *, need_dx=True):
        outputs, inputs = cache["_graph"]
        seeds = [_tensor(da)]
        if recurrent:
            dstate = dstate or {s: np.zeros(outputs[1].shape) for s in module.STATES}
            seeds += [_tensor(dstate[s]) for s in module.STATES]
        got = torch.autograd.grad(outputs, inputs, seeds, retain_graph=True, allow_unused=True)
        got = [torch.zeros_like(i) if g is None else g for g, i in zip(got, inputs, strict=True)]
        n = len(module.PARAMS)
        grads = {k: got[i].numpy() for i, k in enumerate(module.PARAMS)}
        dx = got[n].numpy() if need_dx else None
        if recurrent:
            return grads, dx, {s: got[n + 1 + i].numpy() for i, s in enumerate(module.STATES)}
        return grads, dx

    return forward, backward


def _cost_loss(module):
    """``loss`` through the plain function, checked against ``cost``'s autograd."""
    import torch

    def loss(a, y, **inputs):
        at, yt = _tensor(a), _tensor(y)
        named = {k: _tensor(v) for k, v in inputs.items()}
        C, da = module.loss(at, yt, **named)
        leaf = _tensor(a, grad=True)
        module.cost(leaf, yt, **named).backward()
        if not torch.equal(leaf.grad.nan_to_num(7.0), da.nan_to_num(7.0)):
            raise AssertionError("cost(): its autograd gradient differs from loss()'s")
        return float(C), da.numpy()

    return loss


def _init_params(module):
    """The module's ``init_params``, float64, as NumPy arrays."""

    def init_params(n_in, n_out, **options):
        import torch

        drawn = module.init_params(n_in, n_out, dtype=torch.float64, **options)
        return {name: value.numpy() for name, value in drawn.items()}

    return init_params


def numpy_view(module) -> types.ModuleType:
    """``module`` (a generated torch module) with the NumPy contract."""
    view = types.ModuleType(f"{module.__name__}__numpy_view")
    for name in ("NAME", "KIND", "PARAMS", "STATES", "SPEC_SHA256", "RECURRENCE"):
        if hasattr(module, name):
            setattr(view, name, getattr(module, name))
    if module.KIND == "cost":
        view.loss = _cost_loss(module)
        return view
    view.init_params = _init_params(module)
    view.forward, view.backward = _plain(module)
    view.forward_autograd, view.backward_autograd = _autograd(module)
    return view
