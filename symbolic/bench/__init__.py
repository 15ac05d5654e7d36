"""``derivgen bench``: the generated modules against other ways to write the same models.

The generated NumPy and Numba modules (ours), the hand-written NumPy of
``symbolic.bench.reference`` and, when installed, PyTorch eager, torch.compile and JAX jit
are timed on the MLP (A1, A2) and GRN (B1, B2, B3) workloads, after every backend's cost
and gradients have been checked against the generated NumPy step's. One more row times a
bound: for the MLPs the step's matrix products alone (beside the bound the machine's GEMM
peak puts on them), for the GRN its products and one pass of its two transcendentals.

Modules, each importing only those above it:

- ``workloads``: the workload table and the problems (parameters and data) they make;
- ``prepared``: what a row is once ready to time, and how its steps are timed;
- ``reference``: the hand-written NumPy models (also a test oracle);
- ``competitors``: PyTorch eager, torch.compile and JAX jit, and compiling under a budget;
- ``steps``: the steps the benchmark builds itself (generated modules, reference, bounds);
- ``runner``: the child processes with a clean environment that time our rows;
- ``candidates``: the rows: backend names, thread policies, labels, where each row runs;
- ``measure``: prepare, check against the oracle, calibrate, time round-robin;
- ``machine``: the machine, the software and the load the numbers were taken on;
- ``report``: the Markdown report;
- ``cli``: the options and ``main``.

``main`` and ``add_arguments`` are loaded on first use: the child processes run
``python -m symbolic.bench.runner`` (and ``.competitors``), which imports this package
first, and they must start as lean as a user's script, without the measuring side.
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_arguments", "main"]


def __getattr__(name: str) -> Any:
    """``main`` and ``add_arguments`` of ``symbolic.bench.cli``."""
    if name in __all__:
        from symbolic.bench import cli

        return getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
