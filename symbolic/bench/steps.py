"""The training steps the benchmark builds itself, in whichever process times them.

A row's key names its backend: a generated backend ("numpy", "numba", with a thread
policy in brackets, "numba[blas1]", applied by ``symbolic.bench.runner``), the
hand-written NumPy ("reference"), a bound ("gemm") or a framework
(``symbolic.bench.competitors``). ``build_backend`` turns a key into a ``Prepared`` step
for one problem:

- the generated modules chained into one training step (the NumPy one is every other
  row's oracle);
- the hand-written NumPy of ``symbolic.bench.reference``;
- a bound: for the MLPs the step's matrix products alone, for the GRN its products and
  one pass of its two transcendentals.

Which generated backends exist is the registry's (``symbolic.backends.names()``), checked
where the command line is read (``symbolic.bench.candidates``); this module is imported by
the child processes, which load nothing of the compiler, as a user's script does not.
"""

from __future__ import annotations

import importlib
import math
import statistics
import time
from typing import Any

import numpy as np

from symbolic.bench import derived, reference
from symbolic.bench.competitors import COMPETITORS, prepare
from symbolic.bench.prepared import Prepared, Unavailable
from symbolic.bench.workloads import Problem

#: The generated backend whose step is the oracle (and whose cost module stands in for
#: a backend that has none).
NUMPY = "numpy"
REFERENCE = "reference"
GEMM = "gemm"
#: A generated backend named like a competitor (the torch and jax backends, beside
#: PyTorch's and JAX's own autodiff) has its rows keyed ``generated-<name>``.
GENERATED_PREFIX = "generated-"


def generated_key(backend: str) -> str:
    """The row key of generated ``backend``: its name, or ``generated-<name>`` where a
    competitor has that name."""
    return GENERATED_PREFIX + backend if backend in COMPETITORS else backend


def generated_backend(base: str) -> str:
    """The generated backend of row key ``base`` (a policy suffix already split off)."""
    return base.removeprefix(GENERATED_PREFIX)


def split_backend(name: str) -> tuple[str, str | None]:
    """ "numba[blas1]" -> ("numba", "blas1"); "torch" -> ("torch", None)."""
    if name.endswith("]") and "[" in name:
        base, policy = name[:-1].split("[", 1)
        return base, policy
    return name, None


def build_backend(key: str, problem: Problem) -> Prepared:
    """Backend ``key`` (a policy suffix aside) prepared for ``problem``."""
    base, _ = split_backend(key)
    if base == REFERENCE:
        return reference_step(problem)
    if base == GEMM:
        return bound(problem)
    if base in COMPETITORS:
        return prepare(base, problem)
    return generated(problem, generated_backend(base))


def import_generated(spec: str, backend: str) -> Any:
    """The generated module of ``spec`` for ``backend``.

    Raises:
        Unavailable: It does not exist yet, or its backend is not installed.
    """
    module = f"generated.{spec}_{backend}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise Unavailable(f"generated/{spec}_{backend}.py does not exist yet") from exc
        if exc.name in ("numba", "torch", "jax") or "numba" in str(exc):
            raise Unavailable(f"{exc.name} is not installed") from exc
        raise
    except ImportError as exc:
        raise Unavailable(f"{module} does not import: {exc}") from exc


def generated(problem: Problem, backend: str) -> Prepared:
    """The generated modules of ``backend`` chained into one training step."""
    spec = "dense_sigmoid" if problem.kind == "mlp" else "grn"
    cell = import_generated(spec, backend)
    note = ""
    try:
        cost = import_generated("squared_error", backend)
    except Unavailable:
        cost = import_generated("squared_error", NUMPY)
        note = "cost from squared_error_numpy"
    if backend in derived.FRAMEWORK_BACKENDS:
        return derived.prepare(backend, problem, cell, cost)
    if problem.kind == "mlp":
        return _generated_mlp(problem, cell, cost, note)
    params, x, y = problem.params, problem.x, problem.y

    def step():
        a, cache = cell.forward(params, x)
        value, da = cost.loss(a, y)
        grads, _, _ = cell.backward(params, cache, da, need_dx=False)
        return value, grads

    return Prepared(step, lambda result: (float(result[0]), dict(result[1])), note=note)


def _generated_mlp(problem: Problem, cell: Any, cost: Any, note: str) -> Prepared:
    """The generated dense layer applied layer by layer, then the cost, then back."""
    layers, x, y = problem.layers(), problem.x, problem.y

    def step():
        a, caches = x, []
        for params in layers:
            a, cache = cell.forward(params, a)
            caches.append(cache)
        value, da = cost.loss(a, y)
        grads = {}
        for index in range(len(layers), 0, -1):
            layer_grads, da = cell.backward(
                layers[index - 1], caches[index - 1], da, need_dx=index > 1
            )
            grads[index] = layer_grads
        return value, grads

    def to_numpy(result):  # outside the timed step: the keys the others use
        value, grads = result
        return float(value), _flat_layer_grads(sorted(grads.items()))

    return Prepared(step, to_numpy, note=note)


def _flat_layer_grads(layers: Any) -> dict[str, np.ndarray]:
    """``[(1, {"W", "B"}), ...]`` -> ``{"layer1.W": ..., "layer1.B": ...}``."""
    flat = {}
    for index, layer in layers:
        flat[f"layer{index}.W"] = layer["W"]
        flat[f"layer{index}.B"] = layer["B"]
    return flat


def reference_step(problem: Problem) -> Prepared:
    """The hand-written NumPy step (``symbolic.bench.reference``)."""
    x, y = problem.x, problem.y
    note = "symbolic/bench/reference.py"
    if problem.kind == "mlp":
        layers = problem.layers()

        def step():
            return reference.mlp_step(layers, x, y)

        def to_numpy(result):
            value, grads = result
            return float(value), _flat_layer_grads(enumerate(grads, 1))

        return Prepared(step, to_numpy, note=note)

    params = problem.params
    return Prepared(
        lambda: reference.grn_step(params, x, y),
        lambda result: (float(result[0]), dict(result[1])),
        note=note,
    )


def bound(problem: Problem) -> Prepared:
    """The step's bound: ``gemms`` for an MLP, ``grn_bound`` for the GRN."""
    return gemms(problem) if problem.kind == "mlp" else grn_bound(problem)


def gemms(problem: Problem) -> Prepared:
    """The MLP step's matrix products alone, with the same shapes and memory layouts as
    the generated code (``x @ W.T``, ``dz.T @ x``, ``dz @ W`` but for the first layer),
    into preallocated outputs: what the step would cost if everything else were free."""
    rng = np.random.default_rng(7)
    layers = problem.layers()
    batch = problem.x.shape[0]
    inputs = [problem.x] + [
        rng.standard_normal((batch, p["W"].shape[0])).astype(problem.dtype) for p in layers
    ]
    deltas = [np.empty_like(a) for a in inputs[1:]]
    for d in deltas:
        d[...] = rng.standard_normal(d.shape)
    outs = [np.empty_like(a) for a in inputs[1:]]
    dws = [np.empty_like(p["W"]) for p in layers]
    dxs = [np.empty_like(a) for a in inputs[:-1]]

    def step():
        for index, p in enumerate(layers):
            np.matmul(inputs[index], p["W"].T, out=outs[index])
        for index in range(len(layers) - 1, -1, -1):
            np.matmul(deltas[index].T, inputs[index], out=dws[index])
            if index > 0:
                np.matmul(deltas[index], layers[index]["W"], out=dxs[index])
        return None

    return Prepared(step, lambda result: (math.nan, {}), note="")


def grn_bound(problem: Problem) -> Prepared:
    """A lower bound of the GRN step: its matrix products (the input projections of every
    step at once, and their weight gradients: ``(T*B, D) @ (D, 2H)`` and its transpose
    product), plus one pass of the two transcendentals over every lane and step (the
    gates' exp and the candidate's tanh), into preallocated outputs."""
    d = problem.workload.dims
    rng = np.random.default_rng(7)
    rows, n_in, n_out = d["T"] * d["B"], d["D"], d["H"]
    x2 = problem.x.reshape(rows, n_in)
    weights = rng.standard_normal((2 * n_out, n_in)).astype(problem.dtype)
    delta = rng.standard_normal((rows, 2 * n_out)).astype(problem.dtype)
    projected = np.empty((rows, 2 * n_out), problem.dtype)
    dw = np.empty((n_in, 2 * n_out), problem.dtype)
    lanes = rng.standard_normal((rows, n_out)).astype(problem.dtype)
    out = np.empty_like(lanes)

    def products():
        np.matmul(x2, weights.T, out=projected)
        np.matmul(x2.T, delta, out=dw)

    def transcendentals():
        np.exp(lanes, out=out)
        np.tanh(lanes, out=out)

    def step():
        products()
        transcendentals()
        return None

    # The two parts of the bound, each timed on its own here (not in the round-robin):
    # the products alone are the lower bound, the transcendentals what one pass adds.
    note = (
        f"of which the matrix products alone {_median_ms(products):.3g} ms and the pass of "
        f"exp and tanh {_median_ms(transcendentals):.3g} ms (each timed on its own, the "
        f"median of {_PART_CALLS} calls, when the row was prepared)"
    )
    return Prepared(step, lambda result: (math.nan, {}), note=note)


_PART_CALLS = 9


def _median_ms(call) -> float:
    """The median time of ``call`` in ms, over ``_PART_CALLS`` calls after one untimed."""
    call()
    times = []
    for _ in range(_PART_CALLS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def chosen_policy(key: str, problem: Problem) -> str | None:
    """The thread policy a generated module chooses for ``problem`` (per layer of an MLP,
    when they differ), or None for a row that has none (all but the Numba modules)."""
    base, _ = split_backend(key)
    if base in (REFERENCE, GEMM, *COMPETITORS):
        return None
    spec = "grn" if problem.kind == "grn" else "dense_sigmoid"
    threads = getattr(import_generated(spec, generated_backend(base)), "_threads", None)
    if threads is None:
        return None
    if problem.kind == "grn":
        return getattr(threads(problem.params, problem.x), "policy", "none")
    found, a = [], problem.x
    for params in problem.layers():
        found.append(getattr(threads(params, a), "policy", "none"))
        a = np.empty((a.shape[0], params["W"].shape[0]), a.dtype)
    return ", ".join(dict.fromkeys(found))
