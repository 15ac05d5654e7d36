"""What a benchmark row is once it is ready to time, and how its steps are timed.

Every row (a generated module, the hand-written NumPy, a framework, a bound) is prepared
for one problem of ``symbolic.bench.workloads`` and becomes a ``Prepared``: one training
step's work and a way to read its result. The same two timing functions serve the rows
timed in the benchmark's process and those timed in a child process
(``symbolic.bench.runner``), so both are measured alike.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


class Unavailable(Exception):
    """A backend cannot run here (not installed, failed or too slow to compile)."""


@dataclass
class Prepared:
    """A backend ready to time on one problem.

    Attributes:
        step: One training step's work (forward, cost, every gradient); returns the
            framework's own objects after they are computed (it synchronises).
        to_numpy: Turns what ``step`` returned into ``(cost, {param name: gradient})``.
        compile_seconds: Seconds spent compiling (the first call, minus a step), or None
            for what does not compile.
        note: A remark for the table (how it was built, the framework version).
    """

    step: Callable[[], Any]
    to_numpy: Callable[[Any], tuple[float, dict[str, np.ndarray]]]
    compile_seconds: float | None = None
    note: str = ""

    def calibrate(self, warmup: int, settle: float = 0.0) -> float:
        """Seconds of one step, once warm (see ``warm_step_seconds``)."""
        return warm_step_seconds(self.step, warmup, settle)

    def sample(self, steps: int, settle: float) -> float:
        """Seconds per step over ``steps`` consecutive steps (see ``seconds_per_step``)."""
        return seconds_per_step(self.step, steps, settle)

    def close(self) -> None:
        """Nothing to release here (a child process's row ends its process)."""


#: How long ``warm_step_seconds`` runs steps for (at least three of them).
CALIBRATION_SECONDS = 0.02


def warm_step_seconds(step: Callable[[], Any], warmup: int, settle: float = 0.0) -> float:
    """Idle ``settle`` seconds (the previous row's spinning threads go to sleep), warm
    up (caches, allocator, lazy initialisations, this row's own threads) with ``warmup``
    steps, then the seconds per step over consecutive steps lasting at least
    ``CALIBRATION_SECONDS`` (at least three): one slow step, a thread woken late, must
    not decide how many steps a sample holds."""
    if settle > 0:
        time.sleep(settle)
    for _ in range(max(1, warmup)):
        step()
    count = 0
    start = time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - start
        if count >= 3 and elapsed >= CALIBRATION_SECONDS:
            return elapsed / count


def seconds_per_step(step: Callable[[], Any], steps: int, settle: float) -> float:
    """Seconds per step over ``steps`` consecutive steps, the garbage collector off,
    after idling ``settle`` seconds (so that the previous row's spinning worker threads
    have gone to sleep) and one untimed step.

    The untimed step wakes this row's own worker threads, asleep after the idle: on a
    virtual machine the first wake-up of an idle core took up to 11 ms (measured for
    the B1 GRN step, 0.5 ms warm), which would be charged to a sample of a few steps
    and not to one of a hundred. A sample is the steady state of a training loop, whose
    steps follow each other without idling."""
    if settle > 0:
        time.sleep(settle)
        step()
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
