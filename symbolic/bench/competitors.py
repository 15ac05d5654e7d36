"""The benchmark's competitors in other frameworks: PyTorch eager, torch.compile, JAX jit.

Each implements the same model and cost as the generated modules (the sigmoid MLP and the
gated recurrent neuron of "Neural Networks Derivatives", W. Moraes, 2020, with the
squared-error cost averaged over the batch) the way a competent user of that framework
would: matrix products over the whole batch, the GRN's input projections hoisted out of
the time loop as one GEMM, gradients by the framework's own reverse mode
(``torch.autograd.grad``, ``jax.value_and_grad``), JAX's time loop as ``lax.scan``.

Frameworks are imported lazily: a missing one raises ``Unavailable`` with a note, and
nothing here is imported by the tests. Compiling (torch.compile, XLA) can fail or take
very long (torch.compile unrolls the GRN's Python loop over every time step), so
``probe_compile`` first compiles in a child process under a time budget; the benchmark
compiles in its own process only when the probe finished in time.

A competitor is prepared for one ``Problem`` (see ``symbolic.bench.workloads``): it
converts the parameters and data once, outside the timing, and returns a ``Prepared``
(``symbolic.bench.prepared``) whose ``step`` does one forward + backward and waits for
the result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from symbolic.bench.prepared import Prepared, Unavailable
from symbolic.bench.workloads import Problem, Workload, make_problem

# The benchmark's backend names for what this module provides.
TORCH_EAGER = "torch"
TORCH_COMPILE = "torch.compile"
JAX_JIT = "jax"
COMPETITORS = (TORCH_EAGER, TORCH_COMPILE, JAX_JIT)
COMPILED = (TORCH_COMPILE, JAX_JIT)
LABELS = {TORCH_EAGER: "PyTorch eager", TORCH_COMPILE: "torch.compile", JAX_JIT: "JAX jit"}


def versions() -> dict[str, str]:
    """Versions of the competitor frameworks that are installed, without importing them."""
    from importlib import metadata

    found = {}
    for dist in ("torch", "jax", "jaxlib"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def prepare(name: str, problem: Problem) -> Prepared:
    """Build competitor ``name`` (one of ``COMPETITORS``) for ``problem``, compiling it
    if it compiles (the first call happens here and is timed as compile time).

    Raises:
        Unavailable: The framework is not installed or the model could not be built.
    """
    builders = {TORCH_EAGER: _torch_eager, TORCH_COMPILE: _torch_compiled, JAX_JIT: _jax_jit}
    if name not in builders:
        raise ValueError(f"unknown competitor {name!r}; expected one of {COMPETITORS}")
    return builders[name](problem)


def first_call(prepared: Prepared) -> Prepared:
    """Run the first call (which compiles) and a second one; record the difference."""
    start = time.perf_counter()
    prepared.step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    prepared.step()
    second = time.perf_counter() - start
    prepared.compile_seconds = max(0.0, first - second)
    return prepared


# --- PyTorch ----------------------------------------------------------------------------


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise Unavailable("PyTorch not installed (pip install 'derivgen[bench]')") from exc
    return torch


def _torch_functions(torch: Any, problem: Problem) -> tuple[Callable, list[str]]:
    """The cost as a function of the parameters (in ``problem.param_names`` order) and
    the data, written with PyTorch operations."""
    names = list(problem.param_names)
    batch = problem.x.shape[-2]

    if problem.kind == "mlp":
        layers = problem.n_layers

        def mlp_cost(*args):
            params, x, y = args[:-2], args[-2], args[-1]
            a = x
            for index in range(layers):
                weight, bias = params[2 * index], params[2 * index + 1]
                a = torch.sigmoid(torch.addmm(bias, a, weight.t()))
            return torch.sum((a - y) ** 2) / batch

        return mlp_cost, names

    steps, _, n_in = problem.x.shape
    n_out = problem.params["WTu"].shape[0]

    def grn_cost(wxu, wxc, wtu, wtc, bu, bc, x, y):
        proj = torch.addmm(
            torch.cat((bu, bc)), x.reshape(steps * batch, n_in), torch.cat((wxu, wxc)).t()
        ).reshape(steps, batch, 2 * n_out)
        h = torch.zeros((batch, n_out), dtype=x.dtype)
        outputs = []
        # unbind, not proj[t]: the backward of indexing materialises a zero gradient of
        # proj's full size for every step (T times the work); unbind's stacks them once.
        for p in proj.unbind(0):
            gate = torch.sigmoid(p[:, :n_out] + wtu * h)
            cand = torch.tanh(p[:, n_out:] + wtc * h)
            h = h + gate * (cand - h)  # G*ac + (1 - G)*h
            outputs.append(h)
        return torch.sum((torch.stack(outputs) - y) ** 2) / batch

    assert names == ["WXu", "WXc", "WTu", "WTc", "Bu", "Bc"], names
    return grn_cost, names


def _torch_prepared(problem: Problem, compiled: bool) -> Prepared:
    torch = _import_torch()
    cost, names = _torch_functions(torch, problem)
    if compiled:
        cost = torch.compile(cost, fullgraph=True, dynamic=False)
    leaves = [torch.tensor(problem.params[n], requires_grad=True) for n in names]
    x = torch.from_numpy(problem.x)
    y = torch.from_numpy(problem.y)

    def step():
        value = cost(*leaves, x, y)
        return value, torch.autograd.grad(value, leaves)

    def to_numpy(result):
        value, grads = result
        return float(value.detach()), {
            n: g.detach().numpy().copy() for n, g in zip(names, grads, strict=True)
        }

    threads = torch.get_num_threads()
    if compiled:
        note = f"torch {torch.__version__}, inductor, fullgraph, {threads} threads"
        return first_call(Prepared(step, to_numpy, note=note))
    return Prepared(step, to_numpy, note=f"torch {torch.__version__}, {threads} threads")


def _torch_eager(problem: Problem) -> Prepared:
    return _torch_prepared(problem, compiled=False)


def _torch_compiled(problem: Problem) -> Prepared:
    return _torch_prepared(problem, compiled=True)


# --- JAX --------------------------------------------------------------------------------


def _import_jax():
    try:
        import jax
    except ImportError as exc:
        raise Unavailable("JAX not installed (pip install 'derivgen[bench]')") from exc
    # float64 needs x64 mode; float32 inputs stay float32 in it.
    jax.config.update("jax_enable_x64", True)
    return jax


def _jax_cost(jax: Any, problem: Problem) -> Callable:
    jnp = jax.numpy
    batch = problem.x.shape[-2]

    if problem.kind == "mlp":
        layers = problem.n_layers

        def mlp_cost(params, x, y):
            a = x
            for index in range(layers):
                a = jax.nn.sigmoid(
                    a @ params[f"layer{index + 1}.W"].T + params[f"layer{index + 1}.B"]
                )
            return jnp.sum((a - y) ** 2) / batch

        return mlp_cost

    steps, _, n_in = problem.x.shape
    n_out = problem.params["WTu"].shape[0]

    def grn_cost(params, x, y):
        weights = jnp.concatenate((params["WXu"], params["WXc"]))
        bias = jnp.concatenate((params["Bu"], params["Bc"]))
        proj = (x.reshape(steps * batch, n_in) @ weights.T + bias).reshape(steps, batch, 2 * n_out)
        wtu, wtc = params["WTu"], params["WTc"]

        def cell(h, p):
            gate = jax.nn.sigmoid(p[:, :n_out] + wtu * h)
            cand = jnp.tanh(p[:, n_out:] + wtc * h)
            h = h + gate * (cand - h)  # G*ac + (1 - G)*h
            return h, h

        _, outputs = jax.lax.scan(cell, jnp.zeros((batch, n_out), x.dtype), proj)
        return jnp.sum((outputs - y) ** 2) / batch

    return grn_cost


def _jax_jit(problem: Problem) -> Prepared:
    jax = _import_jax()
    fn = jax.jit(jax.value_and_grad(_jax_cost(jax, problem)))
    params = {n: jax.device_put(v) for n, v in problem.params.items()}
    x = jax.device_put(problem.x)
    y = jax.device_put(problem.y)

    def step():
        return jax.block_until_ready(fn(params, x, y))

    def to_numpy(result):
        value, grads = result
        return float(value), {n: np.asarray(g) for n, g in grads.items()}

    loop = ", lax.scan" if problem.kind == "grn" else ""
    note = f"jax {jax.__version__}, jit{loop}, {jax.devices()[0].platform}"
    return first_call(Prepared(step, to_numpy, note=note))


# --- compiling under a time budget ------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What compiling a competitor in a child process gave.

    Attributes:
        ok: Whether it compiled and ran a step within the budget.
        timed_out: Whether the budget ran out (rather than the compile failing).
        seconds: Compile seconds (as measured in the child), or the budget if it ran out.
        message: Why not, when not ok ("did not compile in 300 s", an error's last line).
    """

    ok: bool
    seconds: float
    message: str = ""
    timed_out: bool = False


def probe_compile(
    name: str, workload: str, kind: str, dims: dict[str, Any], dtype: str, budget: float
) -> Probe:
    """Compile competitor ``name`` for a workload in a fresh Python process, killing it
    (and whatever it started) after ``budget`` seconds.

    Compilation runs in C++ and in worker processes that a signal in this process could
    not stop in time; a child process can always be killed, and a compile that hangs or
    exhausts memory never disturbs the timing process.

    Args:
        name: A compiled competitor (``COMPILED``).
        workload: The workload's name.
        kind: "mlp" or "grn".
        dims: The workload's sizes, as ``Workload.dims``.
        dtype: "float32" or "float64".
        budget: Seconds allowed, start-up included.
    """
    payload = json.dumps(
        {"name": name, "workload": workload, "kind": kind, "dims": dims, "dtype": dtype}
    )
    command = [sys.executable, "-m", "symbolic.bench.competitors", payload]
    start = time.perf_counter()
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so the kill reaches its workers
    ) as child:
        try:
            out, err = child.communicate(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return Probe(False, budget, f"did not compile in {budget:.0f} s", timed_out=True)
    elapsed = time.perf_counter() - start
    if child.returncode != 0:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {child.returncode}"
        return Probe(False, elapsed, f"failed to compile: {last[:200]}")
    result = json.loads(out.strip().splitlines()[-1])
    if not result.get("ok"):
        return Probe(False, elapsed, result.get("message", "unavailable"))
    return Probe(True, float(result["compile_seconds"]))


def _probe_main(payload: str) -> int:
    """The child process of ``probe_compile``: compile, run, print one JSON line."""
    request = json.loads(payload)
    workload = Workload(request["workload"], request["kind"], request["dims"])
    problem = make_problem(workload, np.dtype(request["dtype"]))
    try:
        prepared = prepare(request["name"], problem)
    except Unavailable as exc:
        print(json.dumps({"ok": False, "message": str(exc)}))
        return 0
    print(json.dumps({"ok": True, "compile_seconds": prepared.compile_seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(_probe_main(sys.argv[1]))
