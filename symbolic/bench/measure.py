"""The measurement: every row prepared, checked against the oracle and timed round-robin.

Per workload and dtype:

1. parameters and data from a fixed seed; the generated NumPy step is the oracle;
2. every other row is prepared (``symbolic.bench.candidates``): ours, the hand-written
   NumPy and the bound each in a child process with a clean environment, the frameworks
   here (compiling ones first in a child process under a time budget); compile time is
   kept apart from step time; each row's cost and gradients are compared with the
   oracle's: one that disagrees is rejected, not timed;
3. each row is warmed up and calibrated (after idling ``--settle`` seconds, over
   consecutive steps): a sample is ``k`` consecutive steps, ``k`` chosen so that a
   sample lasts at least ``--min-sample-ms``;
4. samples are taken round-robin, the order rotating every round, so that drifts of the
   machine (other processes, clock) fall on every row alike; before each sample the
   process idles for ``--settle`` seconds so that the previous row's spinning worker
   threads (OpenBLAS spins about 0.1 s after each call) have gone to sleep, then runs
   one untimed step, which wakes the row's own threads: a sample times the steady state
   of a training loop;
5. the rows in child processes get fresh ones between parts of the rounds (``--processes``
   parts): a process can keep one speed for its whole life (on a 2-core virtual machine
   the same GRN step ran at a median of 21 ms in some processes and 43 in others), and a
   user's script is any one of them.

Medians and speed-ups are the report's (``symbolic.bench.report``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from symbolic.bench.candidates import NUMBA as NUMBA_KEY
from symbolic.bench.candidates import Factory, Row, make_row
from symbolic.bench.competitors import COMPILED, probe_compile
from symbolic.bench.prepared import Prepared, Unavailable
from symbolic.bench.runner import Child, Shared
from symbolic.bench.steps import GEMM, NUMPY, generated
from symbolic.bench.workloads import TOLERANCES, Problem, Workload, make_problem, mlp_gemm_flops

#: A step's cost and gradients, as every row's ``to_numpy`` gives them.
Result = tuple[float, dict[str, np.ndarray]]


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
    processes: int = 1


def relative_error(reference_result: Result, result: Result) -> tuple[float, str]:
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

    def run(self) -> list[Section]:
        """Every workload in every dtype, in order."""
        return [
            self.run_section(workload, dtype)
            for workload in self.settings.workloads
            for dtype in self.settings.dtypes
        ]

    def run_section(self, workload: Workload, dtype: str) -> Section:
        """Everything for one workload in one dtype: prepare, check, calibrate, time."""
        settings = self.settings
        problem = make_problem(workload, np.dtype(dtype), settings.seed)
        section = Section(workload, dtype, [], TOLERANCES[dtype])
        if workload.kind == "mlp":
            section.gemm_flops = mlp_gemm_flops(problem)
            section.peak_gflops = self.measure_peak(dtype)
        oracle_prepared = generated(problem, NUMPY)
        oracle = oracle_prepared.to_numpy(oracle_prepared.step())
        try:
            self._prepare_rows(section, problem, oracle)
            self._time_rows(section)
        finally:
            for row in section.rows:
                if row.prepared is not None:
                    row.prepared.close()
        return section

    # preparing and checking the rows

    def _prepare_rows(self, section: Section, problem: Problem, oracle: Result) -> None:
        """Every row built; all but the oracle and the bound checked against the oracle."""
        settings = self.settings
        tag = f"[{section.workload.name} {section.dtype}]"
        keys = list(settings.backends)
        keys += [k for k in settings.extra if k not in keys]
        for key in keys:
            owner = section.row(NUMBA_KEY)
            row, build = make_row(key, problem, settings.seed, settings.extra, owner)
            section.rows.append(row)
            self._prepare(row, build, problem)
            if row.prepared is None or key == GEMM:
                continue
            if key == NUMPY:
                row.status = "oracle"
                row.check_error = 0.0
                continue
            self._check(row, oracle, section.tolerance, f"{tag} {row.label}")

    def _prepare(self, row: Row, build: Callable[[], Prepared | Child], problem: Problem) -> None:
        """Build the row (a compiled one first probed in a child process), or say why not."""
        tag = f"[{problem.workload.name} {problem.dtype.name}] {row.label}"
        if row.key in COMPILED and self.settings.compile_budget > 0:
            if not self._probe(row, problem, tag):
                return
        try:
            start = time.perf_counter()
            row.prepared = build()
            built = time.perf_counter() - start
            row.build = build
            row.processes = 1 if isinstance(row.prepared, Child) else 0
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

    def _probe(self, row: Row, problem: Problem, tag: str) -> bool:
        """Compile a compiled competitor in a child process under the budget first;
        whether it did (if not, the row is skipped and says why)."""
        key, workload, dtype = row.key, problem.workload, problem.dtype.name
        timed_out = self.timeouts.get((key, workload.name))
        if timed_out is not None:
            # The graph is the same in the other dtype: do not spend the budget again.
            row.status, row.reason = "skipped", f"{timed_out[0]} (in {timed_out[1]}; not retried)"
            self.say(f"{tag}: {row.reason}")
            return False
        budget = self.settings.compile_budget
        self.say(f"{tag}: compiling in a child process (budget {budget:.0f} s)")
        probe = probe_compile(key, workload.name, workload.kind, workload.dims, dtype, budget)
        if not probe.ok:
            row.status, row.reason = "skipped", probe.message
            self.say(f"{tag}: {probe.message}")
            if probe.timed_out:
                self.timeouts[(key, workload.name)] = (probe.message, dtype)
            return False
        row.cold_compile_seconds = probe.seconds
        return True

    def _check(self, row: Row, oracle: Result, tol: float, tag: str) -> None:
        """Run a step and compare its cost and gradients with the oracle's."""
        assert row.prepared is not None
        try:
            start = time.perf_counter()
            result = row.prepared.to_numpy(row.prepared.step())
            first = time.perf_counter() - start
        except Exception as exc:
            row.status, row.reason = "failed", f"{type(exc).__name__}: {str(exc)[:160]}"
            self.say(f"{tag}: failed: {row.reason}")
            return
        if (
            row.ours
            and row.key != NUMPY
            and row.compile_seconds is None
            and not isinstance(row.prepared, Shared)
        ):
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

    def _time_rows(self, section: Section) -> None:
        """Calibrate every row that passed, then take the samples round-robin, the order
        rotating every round."""
        settings = self.settings
        tag = f"[{section.workload.name} {section.dtype}]"
        timed = [r for r in section.rows if r.prepared is not None and r.status in ("ok", "oracle")]
        for row in timed:
            self._calibrate(row)
        self.say(
            f"{tag} timing {len(timed)} backends, {settings.repeats} rounds: "
            + ", ".join(f"{r.key} x{r.steps_per_sample}" for r in timed)
        )
        for round_index in range(settings.repeats):
            if self._fresh_processes(round_index):
                timed = self._respawn(timed, tag)
            shift = round_index % max(1, len(timed))
            parts = []
            for row in timed[shift:] + timed[:shift]:
                assert row.prepared is not None
                row.samples.append(row.prepared.sample(row.steps_per_sample, settings.settle))
                parts.append(f"{row.key} {row.samples[-1] * 1e3:.3g}")
            self.say(
                f"{tag} round {round_index + 1}/{settings.repeats} (ms/step): " + ", ".join(parts)
            )

    def _fresh_processes(self, round_index: int) -> bool:
        """Whether the rows in child processes start fresh ones before this round: the
        rounds are split evenly between ``processes`` processes per row."""
        n, repeats = self.settings.processes, self.settings.repeats
        return (
            n > 1
            and round_index > 0
            and round_index * n // repeats != (round_index - 1) * n // repeats
        )

    def _respawn(self, timed: list[Row], tag: str) -> list[Row]:
        """Every row in a child process gets a fresh one, warmed up like the first (its
        steps per sample kept). On some machines a process keeps one speed for its whole
        life, for reasons a benchmark cannot see, so each row's samples come from several.
        A row whose fresh process fails loses its samples and says why, and so do the rows
        that share it."""
        failed = set()
        # the processes first, then the rows that share one (which calibrate in it anew)
        for row in sorted(timed, key=lambda r: isinstance(r.prepared, Shared)):
            shared = isinstance(row.prepared, Shared)
            if not shared and not (isinstance(row.prepared, Child) and row.build is not None):
                continue
            try:
                if not shared:
                    row.prepared.close()
                    row.prepared = row.build()
                row.prepared.calibrate(self.settings.warmup, self.settings.settle)
            except Exception as exc:
                row.prepared, row.samples, row.status = None, [], "failed"
                what = "the process it shares" if shared else "its fresh child process"
                row.reason = f"{what} failed: {str(exc)[:160]}"
                self.say(f"{tag} {row.label}: {row.reason}")
                failed.add(row.key)
                continue
            if not shared:
                row.processes += 1
        self.say(f"{tag} fresh child processes for the rows in child processes")
        return [row for row in timed if row.key not in failed]

    def _calibrate(self, row: Row) -> None:
        """Warm up, then choose the steps per sample from one step's time so that a sample
        lasts at least ``min_sample_ms``."""
        assert row.prepared is not None
        once = row.prepared.calibrate(self.settings.warmup, self.settings.settle)
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
