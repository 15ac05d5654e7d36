"""The benchmark's workloads and the problems they make.

One step = forward, cost, every parameter's gradient; the cost is the squared error
summed over units and time steps, averaged over the batch:

- A1: sigmoid MLP, batch 256, layers [64, 128, 128, 10];
- A2: sigmoid MLP, batch 1024, layers [1024, 1024, 1024, 10];
- B1, B2, B3: one GRN layer with h0 = 0 and the cost on its output at every step,
  (T, B, D, H) = (50, 16, 16, 64), (200, 64, 64, 256), (1000, 8, 8, 32).

``--quick`` runs the same workloads at toy sizes. A ``Problem`` is a workload's
parameters and data in one dtype, from a seed, so that every backend and every process
sees the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


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


def mlp_gemm_flops(problem: Problem) -> float:
    """Floating-point operations of the generated MLP step's matrix products: per layer,
    the forward product, the weight gradient and (but for the first layer, whose input
    needs none) the input gradient, 2*B*n_in*n_out each."""
    sizes = problem.workload.dims["sizes"]
    batch = problem.workload.dims["batch"]
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    return float(sum((4 if i == 0 else 6) * batch * a * b for i, (a, b) in enumerate(pairs)))
