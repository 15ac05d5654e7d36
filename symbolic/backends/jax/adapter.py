"""A generated JAX module seen with the NumPy contract: what validation runs.

:func:`adapt` turns JAX's x64 mode on (validation works in float64) and returns a view
of the module whose functions take NumPy arrays and return fresh, writable NumPy arrays
(a cost's C as a float). Besides ``forward``/``backward`` the view has the pair
``forward_vjp``/``backward_vjp``: the gradients through ``jax.vjp`` of the module's
``apply``, so the ``jax.custom_vjp`` path is validated as well.

JAX is imported when a view is made, never when the backend is registered.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

#: The module's names the view passes on as they are.
CONSTANTS = ("NAME", "KIND", "PARAMS", "STATES", "SPEC_SHA256", "RECURRENCE", "param_shapes")


def adapt(module: ModuleType) -> ModuleType:
    """The NumPy view of a generated JAX module (JAX's x64 mode on in this process)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    view = ModuleType(f"{module.__name__}_numpy_view", f"{module.__name__} with NumPy arrays")
    for name in CONSTANTS:
        if hasattr(module, name):
            setattr(view, name, getattr(module, name))
    if module.KIND == "cost":
        view.loss = lambda a, y, **inputs: _loss(module, a, y, **inputs)
        return view
    recurrent = module.KIND == "recurrent"
    view.init_params = lambda *args, **kw: _numpy(module.init_params(*args, **kw))
    view.forward = _forward(module.forward, recurrent)
    view.backward = _backward(module, recurrent)
    view.forward_vjp = _forward_vjp(module, recurrent)
    view.backward_vjp = _backward_vjp(recurrent)
    return view


def _ordered(grads: dict, names) -> dict:
    """The gradients in the order of PARAMS (JAX returns a dict's keys sorted)."""
    return {name: grads[name] for name in names}


def _numpy(value):
    """Every JAX array inside nested dicts and tuples as a fresh, writable NumPy array."""
    if isinstance(value, dict):
        return {k: _numpy(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_numpy(v) for v in value)
    if value is None:
        return None
    return np.array(value, copy=True)


def _loss(module, a, y, **inputs):
    C, da = module.loss(a, y, **inputs)
    return float(C), _numpy(da)


def _forward(function, recurrent: bool):
    """A forward (or ``apply``-based) function returning NumPy arrays; the cache stays
    the module's (JAX arrays, passed back to it as they are)."""

    def forward(params, x, state0=None):
        if recurrent:
            a, cache = function(params, x, state0)
        else:
            a, cache = function(params, x)
        return _numpy(a), cache

    return forward


def _backward(module, recurrent: bool):
    def backward(params, cache, da, dstate=None, *, need_dx=True):
        if recurrent:
            return _numpy(module.backward(params, cache, da, dstate, need_dx=need_dx))
        return _numpy(module.backward(params, cache, da, need_dx=need_dx))

    return backward


def _forward_vjp(module, recurrent: bool):
    """``forward`` through ``jax.vjp`` of ``apply``: the cache holds the pullback (and,
    for a recurrence, the final states, as ``cache["state"]``)."""
    import jax

    def forward(params, x, state0=None):
        if not recurrent:
            a, pullback = jax.vjp(module.apply, params, x)
            return _numpy(a), {"pullback": pullback}
        if state0 is None:  # zeros, as the module's own default
            shape = (np.shape(x)[1], np.shape(params[module.PARAMS[0]])[0])
            state0 = {s: np.zeros(shape, np.asarray(x).dtype) for s in module.STATES}
        (a, state), pullback = jax.vjp(module.apply, params, x, state0)
        return _numpy(a), {"pullback": pullback, "state": _numpy(state)}

    return forward


def _backward_vjp(recurrent: bool):
    """``backward`` from the pullback ``forward_vjp`` kept: the gradients JAX computes
    through the module's ``jax.custom_vjp``."""

    def backward(params, cache, da, dstate=None, *, need_dx=True):
        import jax.numpy as jnp

        if not recurrent:
            grads, dx = cache["pullback"](jnp.asarray(da))
            return _numpy(_ordered(grads, params)), (_numpy(dx) if need_dx else None)
        if dstate is None:
            dstate = {s: np.zeros_like(v) for s, v in cache["state"].items()}
        cotangent = (jnp.asarray(da), {s: jnp.asarray(v) for s, v in dstate.items()})
        grads, dx, dstate0 = cache["pullback"](cotangent)
        return _numpy(_ordered(grads, params)), (_numpy(dx) if need_dx else None), _numpy(dstate0)

    return backward
