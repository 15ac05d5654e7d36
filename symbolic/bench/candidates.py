"""The rows of the benchmark: which backends it knows, their labels, and how each row is
started on a problem.

The generated backends are the registry's (``symbolic.backends.names()``). The generated modules choose
their own thread policy (templates/numba/_threads.py.j2): the plain "numba" row runs it, and
the hand-picked policies run as extra rows (``numba[blas1]`` ...), applied the way a user
would (see ``symbolic.bench.runner``): those that can be applied and undone in a running
process in the own row's child process, alternating with it, the others in a child
process of their own;
"numba[frameworks]" times the module after PyTorch and JAX have run a step in the same
process, "numba[product]" each step after a NumPy product of the caller's, and
"numba[notebook]" the same with another Python thread alive, idle, as a notebook's kernel
has several. The generated
modules, the hand-written NumPy and the bounds are timed in child processes with a clean
environment; the frameworks (and the rows a test adds) here.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from symbolic.backends import names as backend_names
from symbolic.bench import competitors
from symbolic.bench.competitors import COMPETITORS, prepare
from symbolic.bench.prepared import Prepared, Unavailable
from symbolic.bench.runner import IN_PROCESS, Child, ChildError, Shared
from symbolic.bench.steps import GEMM, REFERENCE, generated_backend, generated_key, split_backend
from symbolic.bench.workloads import Problem

#: The generated backends' row keys (``generated-torch`` beside PyTorch's own "torch").
BACKENDS = tuple(generated_key(name) for name in backend_names())

#: The generated backend whose modules take a thread policy.
NUMBA = "numba"
POLICIES = ("blas1", "numba1", "both", "env", "frameworks", "product", "notebook", "malloc")
POLICY_LABELS = {
    "blas1": "BLAS limited to 1 thread by threadpoolctl",
    "numba1": "numba.set_num_threads(1)",
    "both": "both pools on every core, spinning",
    "env": "both pools, OPENBLAS_THREAD_TIMEOUT=1 and OMP_WAIT_POLICY=PASSIVE",
    "frameworks": "its own policy, PyTorch and JAX in the same process",
    "product": "its own policy, after a NumPy product of the caller's before each step",
    "notebook": (
        "its own policy, after a NumPy product of the caller's before each step, another"
        " Python thread alive (as in a notebook)"
    ),
    "malloc": "its own thread policy, glibc's memory thresholds left as they were",
}
#: The rows that run the module's own policy where a user's script may call it (beside
#: other frameworks, after a product of its own): what the policy meets, not policies to
#: pick from.
CONTEXTS = ("frameworks", "product", "notebook")
#: The hand-picked thread policies: the candidates the module's own policy is held to.
#: (``malloc`` runs the module's own thread policy without its memory policy: it shows
#: what the memory policy is worth, and can only be timed in a process of its own.)
THREAD_POLICIES = ("blas1", "numba1", "both", "env")


def _generated_rows(policies: list[str] | tuple[str, ...]) -> list[str]:
    """The generated backends' rows: each backend, the Numba one followed by ``policies``."""
    rows = []
    for backend in BACKENDS:
        rows.append(backend)
        if backend == NUMBA:
            rows += [f"{NUMBA}[{policy}]" for policy in policies]
    return rows


# Plain "numba" runs the module's own policy; the explicit policies beside it show what
# the control is worth.
DEFAULT_BACKENDS = (*_generated_rows(POLICIES), REFERENCE, *COMPETITORS, GEMM)
#: The --backends help: every name, the Numba policies in one entry.
BACKENDS_HELP = (
    "comma-separated, from "
    + ", ".join((*_generated_rows(["|".join(POLICIES)]), REFERENCE, *COMPETITORS, GEMM))
    + " (default: all; missing frameworks are skipped)"
)
LABELS = {
    **{key: f"generated {generated_backend(key)}" for key in BACKENDS},
    REFERENCE: "hand-written NumPy",
    **competitors.LABELS,
    GEMM: "matrix products alone",
}
GRN_BOUND_LABEL = "matrix products and one pass of exp and tanh"

# A row's factory: builds a Prepared for a problem (raising Unavailable when it cannot).
Factory = Callable[[Problem], Prepared]


def parse_backends(text: str) -> list[str]:
    """The --backends value: names separated by commas, each checked."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = {*BACKENDS, REFERENCE, GEMM, *COMPETITORS}
    for name in names:
        base, policy = split_backend(name)
        if base not in known or (policy is not None and (base != NUMBA or policy not in POLICIES)):
            choices = ", ".join(sorted(known)) + "; numba[" + "|".join(POLICIES) + "]"
            raise argparse.ArgumentTypeError(f"unknown backend {name!r} (choose from {choices})")
    return names


@dataclass
class Row:
    """One backend on one workload and dtype, and what became of it."""

    key: str
    label: str
    ours: bool
    competitor: bool
    policy: str | None = None
    chosen: str | None = None
    prepared: Prepared | Child | Shared | None = None
    status: str = "ok"  # "ok", "oracle", "skipped", "rejected", "failed"
    reason: str = ""
    check_error: float | None = None
    compile_seconds: float | None = None
    cold_compile_seconds: float | None = None
    steps_per_sample: int = 1
    samples: list[float] = field(default_factory=list)  # seconds per step
    notes: list[str] = field(default_factory=list)
    # How it was built (again for a fresh child process), and its child processes so far.
    build: Callable[[], Prepared | Child | Shared] | None = field(default=None, repr=False)
    processes: int = 0
    shared: bool = False  # timed in the process of the module's own row

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


def make_row(
    key: str,
    problem: Problem,
    seed: int,
    extra: dict[str, tuple[str, Factory]],
    owner: Row | None = None,
) -> tuple[Row, Callable[[], Prepared | Child | Shared]]:
    """Row ``key`` for ``problem`` and how to build it: an ``extra`` row's factory or a
    framework in this process; a hand-picked policy that can be applied inside a running
    process (``IN_PROCESS``) in the child process of ``owner``, the module's own row, where
    it has one; every other row in a child process of its own."""
    base, policy = split_backend(key)
    if policy in IN_PROCESS and owner is not None and isinstance(owner.prepared, Child):
        row = _own_row(key, problem)
        row.label += ", in the same process"
        row.shared = True
        return row, lambda: Shared(owner, policy)
    if key in extra:
        label, factory = extra[key]
        return Row(key, label, ours=False, competitor=True), lambda: factory(problem)
    if base in COMPETITORS:
        return Row(key, LABELS[base], False, True), lambda: prepare(base, problem)
    request = {
        "backend": key,
        "workload": problem.workload.name,
        "kind": problem.workload.kind,
        "dims": problem.workload.dims,
        "dtype": problem.dtype.name,
        "seed": seed,
        "frameworks": policy == "frameworks",
        "product": policy in ("product", "notebook"),
        "thread": policy == "notebook",
    }
    child_policy = "module" if policy in (None, *CONTEXTS) else policy
    return _own_row(key, problem), lambda: _in_child(request, child_policy)


def _own_row(key: str, problem: Problem) -> Row:
    """The row of a generated module, the hand-written NumPy or a bound."""
    base, policy = split_backend(key)
    if base in BACKENDS:
        label = LABELS[base] if policy is None else f"{LABELS[base]} ({POLICY_LABELS[policy]})"
        return Row(key, label, ours=True, competitor=False, policy=policy)
    if base == REFERENCE:
        return Row(key, LABELS[REFERENCE], False, True)
    return Row(key, LABELS[GEMM] if problem.kind == "mlp" else GRN_BOUND_LABEL, False, False)


def _in_child(request: dict, policy: str) -> Child:
    """A row in a child process (see ``symbolic.bench.runner``)."""
    try:
        return Child(request, policy)
    except ChildError as exc:
        message = str(exc)
        if "Unavailable" in message or "No module named 'numba'" in message:
            raise Unavailable(message.split(": ", 1)[-1]) from None
        raise
