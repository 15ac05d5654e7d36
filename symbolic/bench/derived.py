"""The training steps of the generated framework modules: the derived backward inside
PyTorch and JAX, timed against those frameworks' own autodiff of the same model.

- ``generated/<spec>_torch.py``: ``apply`` and ``cost`` (custom ops), gradients by
  ``torch.autograd.grad`` through the registered derived backward, eager, as a user's
  training loop runs them;
- ``generated/<spec>_jax.py``: ``apply`` and ``cost`` (``jax.custom_vjp``), the step
  ``jax.jit(jax.value_and_grad(...))``, compiled once (the first call).

Each is prepared for one ``Problem`` like a competitor: tensors made once, outside the
timing. Frameworks are imported when a step is built, never at import.
"""

from __future__ import annotations

from typing import Any

from symbolic.bench.competitors import first_call
from symbolic.bench.prepared import Prepared, Unavailable
from symbolic.bench.workloads import Problem

#: The generated backends prepared here (their modules take a framework's tensors).
FRAMEWORK_BACKENDS = ("torch", "jax")


def prepare(backend: str, problem: Problem, cell: Any, cost: Any) -> Prepared:
    """The step of ``backend``'s generated ``cell`` and ``cost`` modules on ``problem``."""
    if backend == "torch":
        return _torch(problem, cell, cost)
    return _jax(problem, cell, cost)


def _layer_names(problem: Problem) -> list[str]:
    """The flat gradient names of an MLP's layers, as the other rows name them."""
    return [f"layer{i}.{p}" for i in range(1, problem.n_layers + 1) for p in ("W", "B")]


def _torch(problem: Problem, cell: Any, cost: Any) -> Prepared:
    try:
        import torch
    except ImportError as exc:
        raise Unavailable("PyTorch not installed (pip install 'derivgen[torch]')") from exc
    x, y = torch.from_numpy(problem.x), torch.from_numpy(problem.y)
    if problem.kind == "mlp":
        layers = [
            {k: torch.tensor(v, requires_grad=True) for k, v in p.items()} for p in problem.layers()
        ]
        leaves = [layer[p] for layer in layers for p in ("W", "B")]
        names = _layer_names(problem)

        def forward():
            a = x
            for params in layers:
                a = cell.apply(params, a)
            return a

    else:
        params = {k: torch.tensor(v, requires_grad=True) for k, v in problem.params.items()}
        leaves, names = list(params.values()), list(params)

        def forward():
            return cell.apply(params, x)[0]

    def step():
        value = cost.cost(forward(), y)
        return value, torch.autograd.grad(value, leaves)

    def to_numpy(result):
        value, grads = result
        return float(value), {n: g.numpy().copy() for n, g in zip(names, grads, strict=True)}

    note = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    return Prepared(step, to_numpy, note=note)


def _jax(problem: Problem, cell: Any, cost: Any) -> Prepared:
    try:
        import jax
    except ImportError as exc:
        raise Unavailable("JAX not installed (pip install 'derivgen[jax]')") from exc
    jax.config.update("jax_enable_x64", True)  # float64 problems; float32 stays float32
    jnp = jax.numpy
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    if problem.kind == "mlp":
        params = [{k: jnp.asarray(v) for k, v in p.items()} for p in problem.layers()]

        def value(params, x, y):
            a = x
            for layer in params:
                a = cell.apply(layer, a)
            return cost.cost(a, y)

        def flat(grads):
            return dict(
                zip(_layer_names(problem), [g[p] for g in grads for p in ("W", "B")], strict=True)
            )

    else:
        params = {k: jnp.asarray(v) for k, v in problem.params.items()}

        def value(params, x, y):
            return cost.cost(cell.apply(params, x)[0], y)

        def flat(grads):
            return dict(grads)

    compiled = jax.jit(jax.value_and_grad(value))

    def step():
        return jax.block_until_ready(compiled(params, x, y))

    def to_numpy(result):
        import numpy as np

        loss, grads = result
        return float(loss), {k: np.asarray(v).copy() for k, v in flat(grads).items()}

    return first_call(Prepared(step, to_numpy, note=f"jax {jax.__version__}, jit"))
