"""``derivgen bench``: the generated modules against other ways to write the same models.

Workloads (one step = forward, cost, every parameter's gradient; the cost is the squared
error summed over units and time steps, averaged over the batch):

- A1: sigmoid MLP, batch 256, layers [64, 128, 128, 10];
- A2: sigmoid MLP, batch 1024, layers [1024, 1024, 1024, 10];
- B1, B2, B3: one GRN layer with h0 = 0 and the cost on its output at every step,
  (T, B, D, H) = (50, 16, 16, 64), (200, 64, 64, 256), (1000, 8, 8, 32).

Backends: the generated NumPy and Numba modules (ours), the hand-written NumPy of
``symbolic.reference`` and, when installed, PyTorch eager, torch.compile and JAX jit
(``symbolic.competitors``). One more row times a bound: for the MLPs the step's matrix
products alone (beside the bound the machine's GEMM peak puts on them), for the GRN its
products and one pass of its two transcendentals.

Method, per workload and dtype:

1. parameters and data from a fixed seed; the generated NumPy step is the oracle;
2. every other backend is prepared: ours, the hand-written NumPy and the bound each in a
   child process with a clean environment (``symbolic.bench_runner``: no thread
   variables, as a user's script imports the modules), the frameworks here (compiling
   ones first in a child process under a time budget); compile time is reported apart
   from step time; each backend's cost and gradients are compared with the oracle's:
   one that disagrees is rejected, not timed;
3. each backend is warmed up and calibrated: a sample is ``k`` consecutive steps, ``k``
   chosen so that a sample lasts at least ``--min-sample-ms``;
4. samples are taken round-robin, the order rotating every round, so that drifts of the
   machine (other processes, clock) fall on every backend alike; before each sample the
   process idles for ``--settle`` seconds so that the previous backend's spinning worker
   threads (OpenBLAS spins about 0.1 s after each call) have gone to sleep;
5. median, min and max per step, and speed-ups against the fastest competitor and
   against the hand-written NumPy.

Thread pools: the generated Numba modules choose their thread policy themselves (see
templates/_threads.py.j2); the rows ``numba[blas1|numba1|both|env|frameworks]`` time the
same module under policies picked by hand, and with PyTorch and JAX in its process.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from symbolic import __version__, write
from symbolic.bench import reference
from symbolic.bench.competitors import (
    COMPETITORS,
    COMPILED,
    Prepared,
    Unavailable,
    prepare,
    probe_compile,
)
from symbolic.bench.runner import Child

# --- workloads --------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One benchmark problem's shape.

    Attributes:
        name: "A1", "B2", ...
        kind: "mlp" (sigmoid on every layer) or "grn" (one GRN layer).
        dims: mlp: ``{"batch": int, "sizes": [n0, n1, ...]}``; grn: ``{"T", "B", "D", "H"}``.
    """

    name: str
    kind: str
    dims: dict[str, Any]

    def describe(self) -> str:
        """A one-line description: "MLP batch 256, layers [64, 128, 128, 10]"."""
        d = self.dims
        if self.kind == "mlp":
            return f"sigmoid MLP, batch {d['batch']}, layers {list(d['sizes'])}"
        return f"GRN, T={d['T']}, B={d['B']}, D={d['D']}, H={d['H']}"


WORKLOADS: dict[str, Workload] = {
    "A1": Workload("A1", "mlp", {"batch": 256, "sizes": [64, 128, 128, 10]}),
    "A2": Workload("A2", "mlp", {"batch": 1024, "sizes": [1024, 1024, 1024, 10]}),
    "B1": Workload("B1", "grn", {"T": 50, "B": 16, "D": 16, "H": 64}),
    "B2": Workload("B2", "grn", {"T": 200, "B": 64, "D": 64, "H": 256}),
    "B3": Workload("B3", "grn", {"T": 1000, "B": 8, "D": 8, "H": 32}),
}

# --quick: the same workloads at toy sizes, for a smoke test of the whole pipeline.
QUICK_WORKLOADS: dict[str, Workload] = {
    "A1": Workload("A1", "mlp", {"batch": 8, "sizes": [5, 7, 6, 3]}),
    "A2": Workload("A2", "mlp", {"batch": 16, "sizes": [12, 12, 12, 4]}),
    "B1": Workload("B1", "grn", {"T": 4, "B": 2, "D": 3, "H": 5}),
    "B2": Workload("B2", "grn", {"T": 6, "B": 3, "D": 4, "H": 7}),
    "B3": Workload("B3", "grn", {"T": 20, "B": 2, "D": 2, "H": 3}),
}

# Relative error allowed between a backend's cost and gradients and the oracle's (the
# max-norm of the difference over the max-norm of the oracle's array, worst array).
TOLERANCES = {"float64": 1e-6, "float32": 1e-3}


@dataclass
class Problem:
    """Parameters and data of one workload in one dtype.

    Attributes:
        workload: What it is.
        dtype: float32 or float64.
        params: Flat ``{name: array}``: the GRN's names, or ``layer1.W``, ``layer1.B``, ...
        x: mlp: (batch, n0); grn: (T, B, D).
        y: The target, shaped like the output.
    """

    workload: Workload
    dtype: np.dtype
    params: dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray

    @property
    def kind(self) -> str:
        """ "mlp" or "grn"."""
        return self.workload.kind

    @property
    def n_layers(self) -> int:
        """Dense layers of an MLP."""
        return len(self.workload.dims["sizes"]) - 1

    @property
    def param_names(self) -> list[str]:
        """Parameter names in a fixed order (layer by layer, W before B)."""
        return list(self.params)

    def layers(self) -> list[dict[str, np.ndarray]]:
        """An MLP's parameters as one ``{"W", "B"}`` dict per layer."""
        return [
            {"W": self.params[f"layer{i}.W"], "B": self.params[f"layer{i}.B"]}
            for i in range(1, self.n_layers + 1)
        ]


def make_problem(workload: Workload, dtype: np.dtype, seed: int = 0) -> Problem:
    """Parameters as the generated modules initialise them and random data, from
    ``seed``: every backend and every run sees the same numbers."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed + 1000)
    d = workload.dims
    if workload.kind == "mlp":
        from generated import dense_sigmoid_numpy as layer

        sizes = list(d["sizes"])
        params = {}
        for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), 1):
            for name, value in layer.init_params(
                n_in, n_out, seed=seed + index, dtype=dtype
            ).items():
                params[f"layer{index}.{name}"] = value
        x = rng.standard_normal((d["batch"], sizes[0])).astype(dtype)
        y = rng.uniform(0.0, 1.0, (d["batch"], sizes[-1])).astype(dtype)
    elif workload.kind == "grn":
        from generated import grn_numpy as cell

        params = cell.init_params(d["D"], d["H"], seed=seed, dtype=dtype)
        x = rng.standard_normal((d["T"], d["B"], d["D"])).astype(dtype)
        y = rng.uniform(-0.5, 0.5, (d["T"], d["B"], d["H"])).astype(dtype)
    else:
        raise ValueError(f"unknown workload kind {workload.kind!r}")
    return Problem(workload, dtype, params, x, y)


# --- backends ---------------------------------------------------------------------------

NUMPY = "numpy"
NUMBA = "numba"
REFERENCE = "reference"
GEMM = "gemm"

# The generated modules choose their own thread policy (templates/_threads.py.j2); the
# hand-picked policies run as extra rows, each in a child process of its own where it is
# applied the way a user would (see symbolic.bench_runner), and "frameworks" times the
# module after PyTorch and JAX have run a step in the same process.
POLICIES = ("blas1", "numba1", "both", "env", "frameworks")
POLICY_LABELS = {
    "blas1": "BLAS limited to 1 thread by threadpoolctl",
    "numba1": "numba.set_num_threads(1)",
    "both": "both pools on every core, spinning",
    "env": "both pools, OPENBLAS_THREAD_TIMEOUT=1 and OMP_WAIT_POLICY=PASSIVE",
    "frameworks": "its own policy, PyTorch and JAX in the same process",
}

# Plain "numba" runs the module's own policy; the explicit policies beside it show what
# the control is worth.
DEFAULT_BACKENDS = (
    NUMPY,
    NUMBA,
    *(f"{NUMBA}[{policy}]" for policy in POLICIES),
    REFERENCE,
    *COMPETITORS,
    GEMM,
)
LABELS = {
    NUMPY: "generated numpy",
    NUMBA: "generated numba",
    REFERENCE: "hand-written NumPy",
    "torch": "PyTorch eager",
    "torch.compile": "torch.compile",
    "jax": "JAX jit",
    GEMM: "matrix products alone",
}
#: The rows timed in a child process with a clean environment, as a user's script runs.
IN_CHILD = (NUMPY, NUMBA, REFERENCE, GEMM)

# A backend factory: builds a Prepared for a problem (raising Unavailable when it
# cannot), given the workload's numba policy through the name.
Factory = Callable[[Problem], Prepared]


def _split_backend(name: str) -> tuple[str, str | None]:
    """ "numba[blas1]" -> ("numba", "blas1"); "torch" -> ("torch", None)."""
    if name.endswith("]") and "[" in name:
        base, policy = name[:-1].split("[", 1)
        return base, policy
    return name, None


def parse_backends(text: str) -> list[str]:
    """The --backends value: names separated by commas, each checked."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = {NUMPY, NUMBA, REFERENCE, GEMM, *COMPETITORS}
    for name in names:
        base, policy = _split_backend(name)
        if base not in known or (policy is not None and (base != NUMBA or policy not in POLICIES)):
            choices = ", ".join(sorted(known)) + "; numba[" + "|".join(POLICIES) + "]"
            raise argparse.ArgumentTypeError(f"unknown backend {name!r} (choose from {choices})")
    return names


def _import_generated(spec: str, backend: str) -> Any:
    module = f"generated.{spec}_{backend}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise Unavailable(f"generated/{spec}_{backend}.py does not exist yet") from exc
        if exc.name == "numba" or "numba" in str(exc):
            raise Unavailable("numba is not installed") from exc
        raise
    except ImportError as exc:
        raise Unavailable(f"{module} does not import: {exc}") from exc


def _generated(problem: Problem, backend: str) -> Prepared:
    """The generated modules of ``backend`` chained into one training step."""
    spec = "dense_sigmoid" if problem.kind == "mlp" else "grn"
    cell = _import_generated(spec, backend)
    note = ""
    try:
        cost = _import_generated("squared_error", backend)
    except Unavailable:
        cost = _import_generated("squared_error", NUMPY)
        note = "cost from squared_error_numpy"
    x, y = problem.x, problem.y

    if problem.kind == "mlp":
        layers = problem.layers()

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
            flat = {}
            for index, layer in sorted(grads.items()):
                flat[f"layer{index}.W"] = layer["W"]
                flat[f"layer{index}.B"] = layer["B"]
            return float(value), flat

        return Prepared(step, to_numpy, note=note)

    params = problem.params

    def step():
        a, cache = cell.forward(params, x)
        value, da = cost.loss(a, y)
        grads, _, _ = cell.backward(params, cache, da, need_dx=False)
        return value, grads

    return Prepared(step, lambda result: (float(result[0]), dict(result[1])), note=note)


def _reference(problem: Problem) -> Prepared:
    x, y = problem.x, problem.y
    if problem.kind == "mlp":
        layers = problem.layers()

        def step():
            return reference.mlp_step(layers, x, y)

        def to_numpy(result):
            value, grads = result
            flat = {}
            for index, layer in enumerate(grads, 1):
                flat[f"layer{index}.W"] = layer["W"]
                flat[f"layer{index}.B"] = layer["B"]
            return float(value), flat

        return Prepared(step, to_numpy, note="symbolic/bench/reference.py")

    params = problem.params
    return Prepared(
        lambda: reference.grn_step(params, x, y),
        lambda result: (float(result[0]), dict(result[1])),
        note="symbolic/bench/reference.py",
    )


def mlp_gemm_flops(problem: Problem) -> float:
    """Floating-point operations of the generated MLP step's matrix products: per layer,
    the forward product, the weight gradient and (but for the first layer, whose input
    needs none) the input gradient, 2*B*n_in*n_out each."""
    sizes = problem.workload.dims["sizes"]
    batch = problem.workload.dims["batch"]
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    return float(sum((4 if i == 0 else 6) * batch * a * b for i, (a, b) in enumerate(pairs)))


def _gemms(problem: Problem) -> Prepared:
    """The MLP step's matrix products alone, with the same shapes and memory layouts as
    the generated code (``x @ W.T``, ``dz.T @ x``, ``dz @ W`` but for the first layer),
    into preallocated outputs: what the step would cost if everything else were free."""
    if problem.kind != "mlp":
        return _grn_bound(problem)
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


GRN_BOUND_LABEL = "matrix products and one pass of exp and tanh"


def _grn_bound(problem: Problem) -> Prepared:
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

    def step():
        np.matmul(x2, weights.T, out=projected)
        np.matmul(x2.T, delta, out=dw)
        np.exp(lanes, out=out)
        np.tanh(lanes, out=out)
        return None

    return Prepared(step, lambda result: (math.nan, {}), note="")


def _child(request: dict, policy: str) -> Child:
    """A backend in a child process (see symbolic.bench_runner)."""
    from symbolic.bench.runner import ChildError

    try:
        return Child(request, policy)
    except ChildError as exc:
        message = str(exc)
        if "Unavailable" in message or "No module named 'numba'" in message:
            raise Unavailable(message.split(": ", 1)[-1]) from None
        raise


# --- building a backend (in whichever process times it) -----------------------------------


def build_backend(key: str, problem: Problem) -> Prepared:
    """Backend ``key`` (a policy suffix aside) prepared for ``problem``."""
    base, _ = _split_backend(key)
    if base in (NUMPY, NUMBA):
        return _generated(problem, base)
    if base == REFERENCE:
        return _reference(problem)
    if base == GEMM:
        return _gemms(problem)
    return prepare(base, problem)


def chosen_policy(key: str, problem: Problem) -> str | None:
    """The thread policy a generated Numba module chooses for ``problem`` (per layer of
    an MLP, when they differ)."""
    if _split_backend(key)[0] != NUMBA:
        return None
    if problem.kind == "grn":
        module = _import_generated("grn", NUMBA)
        return getattr(module._threads(problem.params, problem.x), "policy", "none")
    module = _import_generated("dense_sigmoid", NUMBA)
    found, a = [], problem.x
    for params in problem.layers():
        found.append(getattr(module._threads(params, a), "policy", "none"))
        a = np.empty((a.shape[0], params["W"].shape[0]), a.dtype)
    return ", ".join(dict.fromkeys(found))


# --- measuring --------------------------------------------------------------------------


@dataclass
class Row:
    """One backend on one workload and dtype, and what became of it."""

    key: str
    label: str
    ours: bool
    competitor: bool
    policy: str | None = None
    chosen: str | None = None
    prepared: Prepared | None = None
    status: str = "ok"  # "ok", "oracle", "skipped", "rejected", "failed"
    reason: str = ""
    check_error: float | None = None
    compile_seconds: float | None = None
    cold_compile_seconds: float | None = None
    steps_per_sample: int = 1
    samples: list[float] = field(default_factory=list)  # seconds per step
    notes: list[str] = field(default_factory=list)

    @property
    def timed(self) -> bool:
        """Whether it has samples."""
        return bool(self.samples)

    @property
    def median_ms(self) -> float:
        """Median milliseconds per step."""
        return statistics.median(self.samples) * 1e3

    @property
    def min_ms(self) -> float:
        """Fastest sample, milliseconds per step."""
        return min(self.samples) * 1e3

    @property
    def max_ms(self) -> float:
        """Slowest sample, milliseconds per step."""
        return max(self.samples) * 1e3


@dataclass
class Section:
    """The rows of one workload in one dtype."""

    workload: Workload
    dtype: str
    rows: list[Row]
    tolerance: float
    gemm_flops: float | None = None
    peak_gflops: float | None = None

    def row(self, key: str) -> Row | None:
        """The row of backend ``key``, if present."""
        return next((r for r in self.rows if r.key == key), None)

    def fastest_competitor(self) -> Row | None:
        """The competitor (not ours, not the GEMM row) with the lowest median."""
        timed = [r for r in self.rows if r.competitor and r.timed]
        return min(timed, key=lambda r: r.median_ms) if timed else None


@dataclass
class Settings:
    """How to measure (the command line's options, resolved)."""

    workloads: list[Workload]
    dtypes: list[str]
    backends: list[str]
    repeats: int = 15
    warmup: int = 2
    min_sample_ms: float = 50.0
    settle: float = 0.15
    compile_budget: float = 300.0
    quick: bool = False
    seed: int = 0
    log: TextIO | None = None
    extra: dict[str, tuple[str, Factory]] = field(default_factory=dict)
    first_call: bool = True


def relative_error(
    reference_result: tuple[float, dict[str, np.ndarray]],
    result: tuple[float, dict[str, np.ndarray]],
) -> tuple[float, str]:
    """The largest relative disagreement between two ``(cost, gradients)`` and where.

    Each gradient counts as max|g - g_ref| / max|g_ref| (a norm-wise error: entries near
    zero do not blow it up); the cost as |C - C_ref| / |C_ref|. A missing or misshapen
    gradient is an infinite error.
    """
    cost_ref, grads_ref = reference_result
    cost, grads = result
    worst, where = abs(cost - cost_ref) / max(abs(cost_ref), 1e-300), "cost"
    if worst != worst:
        return math.inf, "cost"
    for name, expected in grads_ref.items():
        got = grads.get(name)
        if got is None or np.shape(got) != expected.shape:
            return math.inf, f"gradient {name} missing or misshapen"
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
        diff = float(np.max(np.abs(np.asarray(got, np.float64) - expected))) if expected.size else 0
        error = diff / scale if scale > 0 else diff
        if not error <= worst:  # NaN counts as the worst
            worst, where = (math.inf if error != error else error), name
    return worst, where


class Bench:
    """Runs the measurements of ``Settings`` and collects them into ``Section`` s."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.peaks: dict[str, float] = {}
        # (backend, workload) -> (message, dtype) of a compile that ran out of time.
        self.timeouts: dict[tuple[str, str], tuple[str, str]] = {}

    def say(self, message: str) -> None:
        """A progress line on the log stream (stderr by default)."""
        stream = self.settings.log if self.settings.log is not None else sys.stderr
        print(message, file=stream, flush=True)

    # building rows

    def _factory(self, key: str, problem: Problem) -> tuple[Row, Callable[[], Prepared]]:
        base, policy = _split_backend(key)
        if key in self.settings.extra:
            label, factory = self.settings.extra[key]
            return Row(key, label, ours=False, competitor=True), lambda: factory(problem)
        if base == NUMBA:
            label = (
                LABELS[NUMBA] if policy is None else f"{LABELS[NUMBA]} ({POLICY_LABELS[policy]})"
            )
            row = Row(key, label, ours=True, competitor=False, policy=policy)
        elif base == NUMPY:
            row = Row(key, LABELS[NUMPY], True, False)
        elif base == REFERENCE:
            row = Row(key, LABELS[REFERENCE], False, True)
        elif base == GEMM:
            label = LABELS[GEMM] if problem.kind == "mlp" else GRN_BOUND_LABEL
            row = Row(key, label, False, False)
        else:
            return Row(key, LABELS[base], False, True), lambda: prepare(base, problem)
        request = {
            "backend": key,
            "workload": problem.workload.name,
            "kind": problem.workload.kind,
            "dims": problem.workload.dims,
            "dtype": problem.dtype.name,
            "seed": self.settings.seed,
            "frameworks": policy == "frameworks",
        }
        child_policy = "module" if policy in (None, "frameworks") else policy
        return row, lambda: _child(request, child_policy)

    @staticmethod
    def _applies(key: str, workload: Workload, keys: list[str]) -> bool:
        """Every backend has a row for every workload."""
        return True

    def _prepare(self, row: Row, build: Callable[[], Prepared], problem: Problem) -> None:
        tag = f"[{problem.workload.name} {problem.dtype.name}] {row.label}"
        timed_out = self.timeouts.get((row.key, problem.workload.name))
        if timed_out is not None:
            # The graph is the same in the other dtype: do not spend the budget again.
            row.status, row.reason = "skipped", f"{timed_out[0]} (in {timed_out[1]}; not retried)"
            self.say(f"{tag}: {row.reason}")
            return
        if row.key in COMPILED and self.settings.compile_budget > 0:
            self.say(
                f"{tag}: compiling in a child process (budget {self.settings.compile_budget:.0f} s)"
            )
            probe = probe_compile(
                row.key,
                problem.workload.name,
                problem.kind,
                problem.workload.dims,
                problem.dtype.name,
                self.settings.compile_budget,
            )
            if not probe.ok:
                row.status, row.reason = "skipped", probe.message
                self.say(f"{tag}: {probe.message}")
                if probe.timed_out:
                    self.timeouts[(row.key, problem.workload.name)] = (
                        probe.message,
                        problem.dtype.name,
                    )
                return
            row.cold_compile_seconds = probe.seconds
        try:
            start = time.perf_counter()
            row.prepared = build()
            built = time.perf_counter() - start
        except Unavailable as exc:
            row.status, row.reason = "skipped", str(exc)
            self.say(f"{tag}: skipped: {exc}")
            return
        except Exception as exc:  # a competitor's failure must not end the benchmark
            row.status, row.reason = "failed", f"{type(exc).__name__}: {str(exc)[:160]}"
            self.say(f"{tag}: failed: {row.reason}")
            return
        row.compile_seconds = row.prepared.compile_seconds
        row.chosen = getattr(row.prepared, "chosen", None)
        if row.chosen and row.policy is None:
            row.label = f"{row.label} (its policy: {row.chosen})"
        if row.prepared.note:
            row.notes.append(row.prepared.note)
        if row.compile_seconds is not None:
            self.say(f"{tag}: compiled in {row.compile_seconds:.1f} s (build {built:.1f} s)")

    def _check(
        self, row: Row, oracle: tuple[float, dict[str, np.ndarray]], tol: float, tag: str
    ) -> None:
        assert row.prepared is not None
        try:
            start = time.perf_counter()
            result = row.prepared.to_numpy(row.prepared.step())
            first = time.perf_counter() - start
        except Exception as exc:
            row.status, row.reason = "failed", f"{type(exc).__name__}: {str(exc)[:160]}"
            self.say(f"{tag}: failed: {row.reason}")
            return
        if row.ours and row.key != NUMPY and row.compile_seconds is None:
            # Numba compiles (or loads its cache) on the first call.
            row.compile_seconds = first
        error, where = relative_error(oracle, result)
        row.check_error = error
        if not error <= tol:
            row.status = "rejected"
            row.reason = f"gradient check failed: {where} off by {error:.1e} (> {tol:.0e})"
            self.say(f"{tag}: REJECTED, {row.reason}")
        else:
            self.say(f"{tag}: gradient check passed ({error:.1e} <= {tol:.0e})")

    # timing

    def _sample(self, row: Row, steps: int) -> float:
        """Seconds per step over ``steps`` consecutive steps, under the row's policy."""
        assert row.prepared is not None
        if isinstance(row.prepared, Child):
            return row.prepared.sample(steps, self.settings.settle)
        step = row.prepared.step
        if self.settings.settle > 0:
            time.sleep(self.settings.settle)
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            for _ in range(steps):
                step()
            elapsed = time.perf_counter() - start
        finally:
            if gc_was_enabled:
                gc.enable()
        return elapsed / steps

    def _calibrate(self, row: Row) -> None:
        """Warm up (caches, allocator, lazy initialisations), then choose the steps per
        sample from the median of three single steps (one slow outlier must not decide)."""
        assert row.prepared is not None
        if isinstance(row.prepared, Child):
            once = row.prepared.calibrate(self.settings.warmup)
        else:
            for _ in range(self.settings.warmup):
                row.prepared.step()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                row.prepared.step()
                times.append(time.perf_counter() - start)
            once = statistics.median(times)
        target = self.settings.min_sample_ms / 1e3
        row.steps_per_sample = max(1, min(10_000, math.ceil(target / max(once, 1e-7))))

    def measure_peak(self, dtype: str) -> float:
        """The machine's matrix-product peak in GFLOP/s: the best of several large
        square products on every BLAS thread."""
        if dtype in self.peaks:
            return self.peaks[dtype]
        n = 256 if self.settings.quick else 2048
        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        out = np.empty((n, n), dtype)
        np.matmul(a, b, out=out)
        best = math.inf
        for _ in range(3 if self.settings.quick else 7):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - start)
        self.peaks[dtype] = 2.0 * n**3 / best / 1e9
        self.say(f"GEMM peak {dtype}: {self.peaks[dtype]:.1f} GFLOP/s ({n}x{n} matmul)")
        return self.peaks[dtype]

    def run_section(self, workload: Workload, dtype: str) -> Section:
        """Everything for one workload in one dtype: prepare, check, calibrate, time."""
        settings = self.settings
        tol = TOLERANCES[dtype]
        problem = make_problem(workload, np.dtype(dtype), settings.seed)
        tag = f"[{workload.name} {dtype}]"
        section = Section(workload, dtype, [], tol)
        if workload.kind == "mlp":
            section.gemm_flops = mlp_gemm_flops(problem)
            section.peak_gflops = self.measure_peak(dtype)

        oracle_prepared = _generated(problem, NUMPY)
        oracle = oracle_prepared.to_numpy(oracle_prepared.step())
        try:
            return self._run_rows(section, problem, oracle, tol, tag)
        finally:
            for row in section.rows:
                if isinstance(row.prepared, Child):
                    row.prepared.close()

    def _run_rows(self, section, problem, oracle, tol, tag) -> Section:
        settings = self.settings
        workload = problem.workload

        keys = [k for k in settings.backends if self._applies(k, workload, settings.backends)]
        keys += [k for k in settings.extra if k not in keys]
        for key in keys:
            row, build = self._factory(key, problem)
            section.rows.append(row)
            self._prepare(row, build, problem)
            if row.prepared is None:
                continue
            if key == GEMM:
                continue
            if key == NUMPY:
                row.status = "oracle"
                row.check_error = 0.0
                continue
            self._check(row, oracle, tol, f"{tag} {row.label}")

        timed = [r for r in section.rows if r.prepared is not None and r.status in ("ok", "oracle")]
        for row in timed:
            self._calibrate(row)
        self.say(
            f"{tag} timing {len(timed)} backends, {settings.repeats} rounds: "
            + ", ".join(f"{r.key} x{r.steps_per_sample}" for r in timed)
        )
        for round_index in range(settings.repeats):
            shift = round_index % max(1, len(timed))
            order = timed[shift:] + timed[:shift]
            parts = []
            for row in order:
                row.samples.append(self._sample(row, row.steps_per_sample))
                parts.append(f"{row.key} {row.samples[-1] * 1e3:.3g}")
            self.say(
                f"{tag} round {round_index + 1}/{settings.repeats} (ms/step): " + ", ".join(parts)
            )
        return section

    def run(self) -> list[Section]:
        """Every workload in every dtype, in order."""
        return [
            self.run_section(workload, dtype)
            for workload in self.settings.workloads
            for dtype in self.settings.dtypes
        ]


# --- the report -------------------------------------------------------------------------


def _cpu_model() -> str:
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if ":" in line:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
            elif fields:
                break
    if not fields:
        return platform.processor() or platform.machine()
    model = fields.get("model name", "unknown CPU")
    extras = []
    if "cpu family" in fields:
        extras.append(f"family {fields['cpu family']} model {fields.get('model', '?')}")
    flags = fields.get("flags", "").split()
    simd = [f for f in ("avx512f", "avx2", "fma") if f in flags]
    if simd:
        extras.append("/".join(simd))
    if "cpu MHz" in fields:
        extras.append(f"{float(fields['cpu MHz']):.0f} MHz")
    return f"{model} ({', '.join(extras)})" if extras else model


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return None


def _load() -> str:
    """The one-minute load average: other work on the machine skews every number."""
    with contextlib.suppress(OSError):
        return f"{os.getloadavg()[0]:.2f}"
    return "?"


def _busy(load_before: str) -> str:
    """A warning when other work shared the machine, or "" when it was quiet."""
    with contextlib.suppress(ValueError):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        if float(load_before) > 0.25 * (cores or 1):
            return (
                f"the load average was {load_before} on {cores} cores when the run started: "
                "other processes shared the machine, so times are slower and more spread "
                "out than on a quiet machine (the round-robin order spreads the disturbance "
                "over every backend alike)."
            )
    return ""


def machine_lines() -> list[str]:
    """The machine and software the numbers were taken on, as Markdown bullet lines."""
    from importlib import metadata

    from symbolic.bench.competitors import versions

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = _memory_gib()
    lines = [
        f"- CPU: {_cpu_model()}; {os.cpu_count()} logical cores ({usable} usable)"
        + (f"; {memory:.1f} GiB memory" if memory else ""),
        f"- OS: {platform.system()} {platform.release()}; Python {platform.python_version()}",
    ]
    software = [f"derivgen {__version__}", f"numpy {np.__version__}"]
    try:
        software.append(f"numba {metadata.version('numba')}")
    except metadata.PackageNotFoundError:
        software.append("numba not installed")
    software += [f"{name} {version}" for name, version in versions().items()]
    lines.append("- Software: " + ", ".join(software))
    lines.extend(f"- {line}" for line in thread_pool_lines())
    return lines


def thread_pool_lines() -> list[str]:
    """The thread pools loaded in this process, from threadpoolctl."""
    from threadpoolctl import threadpool_info

    lines = []
    for info in threadpool_info():
        name = Path(info.get("filepath", "?")).name
        api = info.get("user_api")
        version = info.get("version") or ""
        extra = ", ".join(
            str(v)
            for v in (
                info.get("internal_api"),
                version,
                info.get("architecture"),
                info.get("threading_layer"),
            )
            if v
        )
        lines.append(
            f"{api.upper() if api == 'blas' else api}: {name} ({extra}), {info.get('num_threads')} threads"
        )
    if "numba" in sys.modules:
        import numba

        with contextlib.suppress(Exception):
            layer = numba.threading_layer()
            lines.append(f"Numba threading layer: {layer}, {numba.get_num_threads()} threads")
    return lines


def _fmt_ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def _cell_status(row: Row) -> str:
    if row.status == "oracle":
        return "oracle"
    if row.status == "ok":
        return "n/a" if row.check_error is None else f"ok ({row.check_error:.0e})"
    return f"{row.status}: {row.reason}"


def section_table(section: Section) -> list[str]:
    """One workload's Markdown table and the notes under it."""
    fastest = section.fastest_competitor()
    hand = section.row(REFERENCE)
    hand_ms = hand.median_ms if hand is not None and hand.timed else None
    gemm = section.row(GEMM)
    gemm_ms = gemm.median_ms if gemm is not None and gemm.timed else None
    headers = ["backend", "gradient check", "compile s", "median ms", "min ms", "max ms"]
    headers += ["speed-up vs fastest competitor", "speed-up vs hand NumPy"]
    if gemm_ms is not None:
        headers.append("time / matrix products")
    lines = [
        f"### {section.workload.name} {section.dtype}: {section.workload.describe()}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    notes = []
    for row in section.rows:
        compile_text = "" if row.compile_seconds is None else f"{row.compile_seconds:.1f}"
        if row.cold_compile_seconds is not None:
            compile_text = f"{row.cold_compile_seconds:.1f} child, {compile_text} here"
        label = f"**{row.label}**" if row.ours else row.label
        if row.timed:
            cells = [label, _cell_status(row), compile_text or "-"]
            cells += [_fmt_ms(row.median_ms), _fmt_ms(row.min_ms), _fmt_ms(row.max_ms)]
            if row.key == GEMM:
                cells += ["-", "-"]
            else:
                cells.append(_fmt_ratio(fastest.median_ms / row.median_ms) if fastest else "-")
                cells.append(_fmt_ratio(hand_ms / row.median_ms) if hand_ms else "-")
            if gemm_ms is not None:
                cells.append(_fmt_ratio(row.median_ms / gemm_ms))
        else:
            cells = [label, _cell_status(row), compile_text or "-"] + ["-"] * (len(headers) - 3)
        lines.append("| " + " | ".join(cells) + " |")
        for note in row.notes:
            notes.append(f"{row.label}: {note}")
    lines.append("")
    if fastest is not None:
        lines.append(f"Fastest competitor: {fastest.label}, {_fmt_ms(fastest.median_ms)} ms/step.")
    if section.gemm_flops is not None and section.peak_gflops:
        bound = section.gemm_flops / (section.peak_gflops * 1e9) * 1e3
        achieved = (
            f"; the timed matrix products reach {section.gemm_flops / (gemm_ms * 1e6):.1f} GFLOP/s"
            if gemm_ms
            else ""
        )
        lines.append(
            f"Matrix products of the generated step: {section.gemm_flops / 1e9:.3g} GFLOP "
            f"(forward and weight gradient of every layer, input gradient of all but the "
            f"first, as in every backend); at the measured GEMM peak of "
            f"{section.peak_gflops:.1f} GFLOP/s they need at least {_fmt_ms(bound)} ms{achieved}."
        )
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    lines.append("")
    return lines


FRAMEWORKS = ("torch", "torch.compile", "jax")


def criteria_lines(sections: list[Section], quick: bool) -> list[str]:
    """The targets, each with its verdict in this run: the generated Numba GRN 1.3x faster
    than the fastest framework; the module's own policy within 5% of the best hand-picked
    one; B2 within 1.3x of its products and one pass of its transcendentals; A2 within
    1.05x of its matrix products."""
    lines = ["## Targets", ""]
    if quick:
        lines += ["(--quick: toy sizes, not the workloads' own; verdicts for illustration)", ""]
    lines += ["| target | measured | verdict |", "|---|---:|---|"]

    def verdict(target: str, value: float | None, text: str, ok: bool) -> None:
        if value is None:
            lines.append(f"| {target} | - | not measured |")
        else:
            lines.append(f"| {target} | {text} | {'met' if ok else 'NOT met'} |")

    for section in sections:
        name, dtype = section.workload.name, section.dtype
        numba = section.row(NUMBA)
        own = numba.median_ms if numba is not None and numba.timed else None
        if section.workload.kind == "grn":
            frameworks = [r for r in section.rows if r.key in FRAMEWORKS and r.timed]
            fastest = min(frameworks, key=lambda r: r.median_ms) if frameworks else None
            speedup = fastest.median_ms / own if fastest and own else None
            verdict(
                f"{name} {dtype}: generated numba >= 1.3x faster than the fastest framework",
                speedup,
                f"{speedup:.2f}x (vs {fastest.label})" if speedup else "",
                bool(speedup and speedup >= 1.3),
            )
        hand = [
            r
            for r in section.rows
            if r.key.startswith(f"{NUMBA}[") and r.policy != "frameworks" and r.timed
        ]
        best = min(hand, key=lambda r: r.median_ms) if hand else None
        ratio = own / best.median_ms if own and best else None
        verdict(
            f"{name} {dtype}: the module's own policy within 5% of the best hand-picked one",
            ratio,
            f"{ratio:.2f} (best: {POLICY_LABELS[best.policy]})" if ratio else "",
            bool(ratio and ratio <= 1.05),
        )
        bound = section.row(GEMM)
        bound_ms = bound.median_ms if bound is not None and bound.timed else None
        if name == "B2" and dtype == "float64":
            ratio = own / bound_ms if own and bound_ms else None
            verdict(
                "B2 float64: generated numba <= 1.3x its products and transcendentals",
                ratio,
                f"{ratio:.2f}x" if ratio else "",
                bool(ratio and ratio <= 1.3),
            )
        if name == "A2":
            for row in (section.row(NUMPY), numba):
                ms = row.median_ms if row is not None and row.timed else None
                ratio = ms / bound_ms if ms and bound_ms else None
                label = row.label if row is not None else "generated"
                verdict(
                    f"A2 {dtype}: {label} step <= 1.05x its matrix products",
                    ratio,
                    f"{ratio:.2f}x" if ratio else "",
                    bool(ratio and ratio <= 1.05),
                )
    lines.append("")
    return lines


def thread_note_lines(sections: list[Section]) -> list[str]:
    """The thread policy the generated modules chose, against the hand-picked ones."""
    lines = ["## Thread pools", ""]
    lines.append(
        "Every row of the generated modules (and the hand-written NumPy and the matrix "
        "products' rows) runs in a child process of its own with a clean environment "
        "(no OpenBLAS, OpenMP, MKL or Numba thread variables), as a user's script does. "
        "The plain `generated numba` row is the module's own thread policy "
        "(templates/_threads.py.j2: BLAS on one thread where the products are small beside "
        "the elementwise work, Numba on one thread where they dominate); the rows in "
        "brackets apply a policy by hand inside their child. Every sample starts after "
        "its process has idled for the settle time."
    )
    comparisons = []
    for section in sections:
        own = section.row(NUMBA)
        if own is None or not own.timed:
            continue
        others = [r for r in section.rows if r.key.startswith(f"{NUMBA}[") and r.timed]
        for other in others:
            comparisons.append(
                f"| {section.workload.name} {section.dtype} | {own.chosen} "
                f"{_fmt_ms(own.median_ms)} ms | {POLICY_LABELS[other.policy]} "
                f"{_fmt_ms(other.median_ms)} ms | {own.median_ms / other.median_ms:.2f} |"
            )
    if comparisons:
        lines += [
            "",
            "| workload | the module's policy | hand-picked policy | time ratio (own / hand) |",
            "|---|---:|---:|---:|",
            *comparisons,
        ]
    lines.append("")
    return lines


def first_call_lines(quick: bool) -> list[str]:
    """Every generated Numba module's first call: the cold compile (an empty Numba
    cache) and the warm start (import and first call with the cache filled), each in a
    fresh child process."""
    import tempfile

    from symbolic.bench.runner import ChildError, first_call
    from symbolic.generate import builtin_specs

    names = [p.stem for p in builtin_specs()]
    if quick:
        names = names[:1]
    lines = [
        "## First call",
        "",
        "Each generated Numba module imported and run once (a small problem, forward and "
        "backward) in a fresh process: cold, with an empty Numba cache (everything "
        "compiles), then warm, with the cache the cold run filled. Import alone compiles "
        "nothing (the kernels compile on their first call).",
        "",
        "| module | cold: import + first call, s | warm: import, s | warm: first call, s | "
        "compiled at import |",
        "|---|---:|---:|---:|---|",
    ]
    for name in names:
        module = f"generated.{name}_numba"
        with tempfile.TemporaryDirectory(prefix="derivgen-numba-cache-") as cache:
            try:
                cold = first_call(module, cache)
                warm = first_call(module, cache)
            except ChildError as exc:
                lines.append(f"| {module} | failed: {exc} | - | - | - |")
                continue
        compiled = ", ".join(cold["compiled_at_import"] + warm["compiled_at_import"]) or "nothing"
        lines.append(
            f"| {module} | {cold['imported'] + cold['first']:.2f} | {warm['imported']:.2f} | "
            f"{warm['first']:.2f} | {compiled} |"
        )
    lines.append("")
    return lines


def render_markdown(
    sections: list[Section], settings: Settings, started: float, load_before: str
) -> str:
    """The whole report."""
    finished = time.time()
    when = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["## derivgen bench", ""]
    lines.append(
        f"Run {when}, {finished - started:.0f} s; `derivgen bench` with repeats "
        f"{settings.repeats}, samples of at least {settings.min_sample_ms:g} ms, settle "
        f"{settings.settle:g} s, compile budget {settings.compile_budget:g} s"
        + (", --quick (toy sizes)" if settings.quick else "")
        + f". Load average before {load_before}, after {_load()}."
    )
    if sys.argv[1:2] == ["bench"]:
        lines += ["", "Command: `derivgen " + " ".join(sys.argv[1:]) + "`"]
    lines += ["", *machine_lines()]
    lines += [
        "",
        "One step = forward, cost and every parameter's gradient; cost = squared error summed "
        "over units (and steps), averaged over the batch. Times are per step, over samples "
        "taken round-robin. Speed-up = the other's median / this median. Gradient check: the "
        "largest relative max-norm difference of the cost and every gradient from the "
        f"generated NumPy module's; rejected above {TOLERANCES['float64']:.0e} (float64) or "
        f"{TOLERANCES['float32']:.0e} (float32). Compile s: the first call's extra time "
        "(JIT compile or cache load); for torch.compile and JAX first in a child process "
        "(cold caches, killed at the budget), then in this process (torch.compile finds its "
        "kernels in the inductor cache then).",
        "",
    ]
    busy = _busy(load_before)
    if busy:
        lines += [f"**Warning:** {busy}", ""]
    for section in sections:
        lines += section_table(section)
    lines += criteria_lines(sections, settings.quick)
    lines += thread_note_lines(sections)
    if settings.first_call:
        lines += first_call_lines(settings.quick)
    return "\n".join(lines).rstrip() + "\n"


# --- command line -----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``derivgen bench``."""
    parser.description = (
        "Time the generated modules against hand-written NumPy, PyTorch and JAX on the MLP "
        "(A1, A2) and GRN (B1, B2, B3) workloads, after checking every backend's gradients."
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, from {', '.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    parser.add_argument("--repeats", type=int, help="samples per backend (15; --quick 3)")
    parser.add_argument(
        "--out", type=write.path_argument, help="also write the Markdown report to this file"
    )
    parser.add_argument(
        "--quick", action="store_true", help="toy sizes and few samples: a smoke test"
    )
    parser.add_argument(
        "--backends",
        type=parse_backends,
        default=list(DEFAULT_BACKENDS),
        help="comma-separated, from numpy, numba, numba[blas1|numba1|both|env|frameworks], "
        "reference, "
        "torch, torch.compile, jax, gemm (default: all; missing frameworks are skipped)",
    )
    parser.add_argument(
        "--compile-budget",
        type=float,
        help="seconds allowed for one compile, in a child process (300; --quick 120; 0: no limit)",
    )
    parser.add_argument("--min-sample-ms", type=float, help="shortest sample (50; --quick 1)")
    parser.add_argument(
        "--settle", type=float, help="idle seconds before each sample (0.15; --quick 0)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of parameters and data")
    parser.add_argument(
        "--no-first-call",
        dest="first_call",
        action="store_false",
        help="skip the first-call section (each Numba module compiled cold, then warm)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Resolve the command line into ``Settings`` (quick mode changes the defaults)."""
    table = QUICK_WORKLOADS if args.quick else WORKLOADS
    names = [n.strip().upper() for n in str(args.workloads).split(",") if n.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        print(
            f"derivgen bench: error: unknown workload(s) {unknown}; choose from {list(table)}",
            file=sys.stderr,
        )
        raise SystemExit(2)

    def pick(value, normal, quick):
        return value if value is not None else (quick if args.quick else normal)

    return Settings(
        workloads=[table[n] for n in names],
        dtypes=["float32", "float64"] if args.dtype == "both" else [args.dtype],
        backends=list(args.backends),
        repeats=pick(args.repeats, 15, 3),
        warmup=1 if args.quick else 2,
        min_sample_ms=pick(args.min_sample_ms, 50.0, 1.0),
        settle=pick(args.settle, 0.15, 0.0),
        compile_budget=pick(args.compile_budget, 300.0, 120.0),
        quick=args.quick,
        seed=args.seed,
        first_call=getattr(args, "first_call", True),
    )


def main(args: argparse.Namespace) -> int:
    """Run ``derivgen bench``: the report goes to stdout (and --out), progress to stderr.

    Returns:
        0, or 1 when one of the generated backends disagreed with the oracle.
    """
    settings = settings_from_args(args)
    if args.out is not None:  # checked before the work
        write.check_folder(Path(args.out).parent, "--out's folder")
    started = time.time()
    load_before = _load()
    sections = Bench(settings).run()
    report = render_markdown(sections, settings, started, load_before)
    print(report, end="")
    if args.out is not None:
        write.atomic_write(args.out, report)
    ours_failed = any(
        r.ours and r.status in ("rejected", "failed") for s in sections for r in s.rows
    )
    return 1 if ours_failed else 0
