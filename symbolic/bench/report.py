"""The benchmark's Markdown report: one table per workload and dtype, the targets, the
thread pools and every generated Numba module's first call.

Times are medians per step over the samples; a speed-up is the other's median over this
median, against the fastest competitor and against the hand-written NumPy; the bound's
row (the matrix products alone, or the GRN's products and transcendentals) gives each
row's time over the bound's.
"""

from __future__ import annotations

import datetime
import sys
import tempfile
import time
from pathlib import Path

from symbolic.bench.candidates import NUMBA, POLICY_LABELS, THREAD_POLICIES, Row
from symbolic.bench.competitors import COMPETITORS
from symbolic.bench.machine import blas_kernels_warning, busy, load, machine_lines
from symbolic.bench.measure import Section, Settings
from symbolic.bench.runner import ChildError, first_call
from symbolic.bench.stats import Paired, paired_ratio
from symbolic.bench.steps import GEMM, NUMPY, REFERENCE
from symbolic.bench.workloads import TOLERANCES


def _fmt_ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def _median_ms(row: Row | None) -> float | None:
    """A row's median, or None when it is absent or was not timed."""
    return row.median_ms if row is not None and row.timed else None


def _paired(numerator: Row | None, denominator: Row | None) -> Paired | None:
    """The two rows' time ratio within each round (``symbolic.bench.stats``), or None
    where either has no samples."""
    if numerator is None or denominator is None or not (numerator.timed and denominator.timed):
        return None
    return paired_ratio(numerator.samples, denominator.samples)


def _per_round(paired: Paired | None) -> str:
    """``; 1.07 per round (0.98-1.20, 96% interval)``, or nothing."""
    return "; " + paired.text() if paired is not None else ""


def _cell_status(row: Row) -> str:
    if row.status == "oracle":
        return "oracle"
    if row.status == "ok":
        return "n/a" if row.check_error is None else f"ok ({row.check_error:.0e})"
    return f"{row.status}: {row.reason}"


# --- one workload's table ------------------------------------------------------------------


def section_table(section: Section) -> list[str]:
    """One workload's Markdown table and the notes under it."""
    fastest = section.fastest_competitor()
    hand_ms = _median_ms(section.row(REFERENCE))
    gemm_ms = _median_ms(section.row(GEMM))
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
        cells = _row_cells(row, fastest, hand_ms, gemm_ms)
        cells += ["-"] * (len(headers) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
        notes += [f"{row.label}: {note}" for note in row.notes]
    lines.append("")
    if fastest is not None:
        lines.append(f"Fastest competitor: {fastest.label}, {_fmt_ms(fastest.median_ms)} ms/step.")
    lines += _gemm_bound_lines(section, gemm_ms)
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    lines.append("")
    return lines


def _row_cells(
    row: Row, fastest: Row | None, hand_ms: float | None, gemm_ms: float | None
) -> list[str]:
    """A row's cells; an untimed row's stop after the compile time."""
    compile_text = "" if row.compile_seconds is None else f"{row.compile_seconds:.1f}"
    if row.cold_compile_seconds is not None:
        compile_text = f"{row.cold_compile_seconds:.1f} child, {compile_text} here"
    label = f"**{row.label}**" if row.ours else row.label
    cells = [label, _cell_status(row), compile_text or "-"]
    if not row.timed:
        return cells
    cells += [_fmt_ms(row.median_ms), _fmt_ms(row.min_ms), _fmt_ms(row.max_ms)]
    if row.key == GEMM:
        cells += ["-", "-"]
    else:
        cells.append(_fmt_ratio(fastest.median_ms / row.median_ms) if fastest else "-")
        cells.append(_fmt_ratio(hand_ms / row.median_ms) if hand_ms else "-")
    if gemm_ms is not None:
        cells.append(_fmt_ratio(row.median_ms / gemm_ms))
    return cells


def _gemm_bound_lines(section: Section, gemm_ms: float | None) -> list[str]:
    """An MLP's matrix products: their GFLOP, the time the GEMM peak allows them, and
    the rate the timed products reached."""
    if section.gemm_flops is None or not section.peak_gflops:
        return []
    bound = section.gemm_flops / (section.peak_gflops * 1e9) * 1e3
    achieved = (
        f"; the timed matrix products reach {section.gemm_flops / (gemm_ms * 1e6):.1f} GFLOP/s"
        if gemm_ms
        else ""
    )
    return [
        f"Matrix products of the generated step: {section.gemm_flops / 1e9:.3g} GFLOP "
        f"(forward and weight gradient of every layer, input gradient of all but the "
        f"first, as in every backend); at the measured GEMM peak of "
        f"{section.peak_gflops:.1f} GFLOP/s they need at least {_fmt_ms(bound)} ms{achieved}."
    ]


# --- the targets ---------------------------------------------------------------------------


def criteria_lines(sections: list[Section], quick: bool) -> list[str]:
    """The targets, each with its verdict in this run: the generated Numba GRN 1.3x faster
    than the fastest framework; the module's own policy within 5% of the best hand-picked
    thread policy (``THREAD_POLICIES``); B2 within 1.3x of its products and one pass of its transcendentals; A2 within
    1.05x of its matrix products."""
    lines = ["## Targets", ""]
    if quick:
        lines += ["(--quick: toy sizes, not the workloads' own; verdicts for illustration)", ""]
    lines += [
        "A verdict reads the ratio of the two rows' medians. Beside it, the same ratio taken "
        "within each round (the two samples seconds apart, under the same load): its median "
        "over the rounds and the interval that holds the median ratio with the coverage "
        "given (order statistics of the rounds' ratios, symbolic/bench/stats.py). An "
        "interval that straddles the target says this run cannot tell.",
        "",
        "| target | measured | verdict |",
        "|---|---:|---|",
    ]
    for section in sections:
        lines += _section_targets(section)
    lines.append("")
    return lines


def _verdict(
    target: str,
    value: float | None,
    text: str,
    ok: bool,
    paired: Paired | None = None,
    limit: float | None = None,
    at_least: bool = False,
) -> str:
    """One target's table line. ``ok`` is the verdict of the ratio of medians; the
    per-round ratio of ``paired`` must be ``limit`` or above (``at_least``) or at most
    ``limit``. Where its interval holds ``limit``, the verdict says that the run cannot
    tell; where the interval lies wholly on the other side of ``limit`` from the ratio
    of medians (a drift of the machine fell on one row more than the other), the verdict
    says so and counts as not met."""
    if value is None:
        return f"| {target} | - | not measured |"
    verdict = "met" if ok else "NOT met"
    if paired is not None and paired.low is not None and limit is not None:
        above = paired.low > limit  # else, outside the interval, wholly below it
        if paired.low <= limit <= paired.high:
            verdict += " (the interval holds the target: this run cannot tell)"
        elif ok != (above == at_least):
            side = "above" if above else "below"
            verdict = (
                f"{'met' if ok else 'NOT met'} by the medians, "
                f"{'NOT met' if ok else 'met'} within the rounds (the per-round interval "
                f"lies wholly {side} the target)"
            )
    return f"| {target} | {text + _per_round(paired)} | {verdict} |"


def _section_targets(section: Section) -> list[str]:
    """The target lines of one workload and dtype."""
    name, dtype = section.workload.name, section.dtype
    own = _median_ms(section.row(NUMBA))
    lines = []
    if section.workload.kind == "grn":
        frameworks = [r for r in section.rows if r.key in COMPETITORS and r.timed]
        fastest = min(frameworks, key=lambda r: r.median_ms) if frameworks else None
        speedup = fastest.median_ms / own if fastest and own else None
        lines.append(
            _verdict(
                f"{name} {dtype}: generated numba >= 1.3x faster than the fastest framework",
                speedup,
                f"{speedup:.2f}x (vs {fastest.label})" if speedup and fastest else "",
                bool(speedup and speedup >= 1.3),
                _paired(fastest, section.row(NUMBA)),
                1.3,
                at_least=True,
            )
        )
    hand = [
        r
        for r in section.rows
        if r.key.startswith(f"{NUMBA}[") and r.policy in THREAD_POLICIES and r.timed
    ]
    best = min(hand, key=lambda r: r.median_ms) if hand else None
    ratio = own / best.median_ms if own and best else None
    lines.append(
        _verdict(
            f"{name} {dtype}: the module's own policy within 5% of the best hand-picked thread policy",
            ratio,
            f"{ratio:.2f} (best: {POLICY_LABELS[best.policy]}"
            f"{', same process' if best.shared else ', another process'})"
            if ratio and best
            else "",
            bool(ratio and ratio <= 1.05),
            _paired(section.row(NUMBA), best),
            1.05,
        )
    )
    return lines + _bound_targets(section, own)


def _bound_targets(section: Section, own: float | None) -> list[str]:
    """B2 float64's Numba step against its bound; A2's generated steps against theirs."""
    name, dtype = section.workload.name, section.dtype
    bound_ms = _median_ms(section.row(GEMM))
    lines = []
    if name == "B2" and dtype == "float64":
        ratio = own / bound_ms if own and bound_ms else None
        lines.append(
            _verdict(
                "B2 float64: generated numba <= 1.3x its products and transcendentals",
                ratio,
                f"{ratio:.2f}x" if ratio else "",
                bool(ratio and ratio <= 1.3),
                _paired(section.row(NUMBA), section.row(GEMM)),
                1.3,
            )
        )
    if name == "A2":
        for row in (section.row(NUMPY), section.row(NUMBA)):
            ms = _median_ms(row)
            ratio = ms / bound_ms if ms and bound_ms else None
            label = row.label if row is not None else "generated"
            lines.append(
                _verdict(
                    f"A2 {dtype}: {label} step <= 1.05x its matrix products",
                    ratio,
                    f"{ratio:.2f}x" if ratio else "",
                    bool(ratio and ratio <= 1.05),
                    _paired(row, section.row(GEMM)),
                    1.05,
                )
            )
    return lines


# --- the framework backends ---------------------------------------------------------------

#: Each generated framework backend's row and the framework rows it is measured against.
DERIVED_AGAINST = {
    "generated-torch": ("torch", "torch.compile"),
    "generated-jax": ("jax",),
}


def derived_lines(sections: list[Section]) -> list[str]:
    """The derived backward inside a framework against that framework's own autodiff of
    the same model, same run: speed-up = the framework's median / the generated one's."""
    rows = []
    for section in sections:
        for key, against in DERIVED_AGAINST.items():
            ours = section.row(key)
            if ours is None or not ours.timed:
                continue
            for other in (section.row(name) for name in against):
                if other is not None and other.timed:
                    rows.append(
                        f"| {section.workload.name} {section.dtype} | {ours.label} | "
                        f"{_fmt_ms(ours.median_ms)} | {other.label} | "
                        f"{_fmt_ms(other.median_ms)} | {_fmt_ratio(other.median_ms / ours.median_ms)} |"
                    )
    if not rows:
        return []
    return [
        "## The derived backward inside the frameworks",
        "",
        "The generated torch module (custom ops, gradients by `torch.autograd.grad` through "
        "the derived backward) and the generated jax module (`jax.custom_vjp`, the step under "
        "`jax.jit`) against the framework's own autodiff of the same model. Speed-up > 1: "
        "the derived backward is faster.",
        "",
        "| workload | generated | ms/step | framework autodiff | ms/step | speed-up |",
        "|---|---|---:|---|---:|---:|",
        *rows,
        "",
    ]


# --- thread pools and first calls ----------------------------------------------------------


def thread_note_lines(sections: list[Section]) -> list[str]:
    """The thread policy the generated modules chose, against the hand-picked ones."""
    lines = ["## Thread pools", ""]
    lines.append(
        "Every row of the generated modules (and the hand-written NumPy and the matrix "
        "products' rows) runs in a child process of its own with a clean environment "
        "(no OpenBLAS, OpenMP, MKL or Numba thread variables), as a user's script does; "
        "with several child processes a row (the Run line above), a fresh one takes over "
        "for each part of the rounds. "
        "The plain `generated numba` row is the module's own thread policy "
        "(templates/numba/_threads.py.j2: BLAS on one thread where the products are small beside "
        "the elementwise work, Numba on one thread where they dominate); the rows in "
        "brackets apply a policy by hand. The two a module chooses between (BLAS on one "
        "thread, Numba on one thread) are timed in the plain row's own process, each sample "
        "under its policy, applied and undone by hand, alternating with the plain row's "
        "samples: their ratio within each round compares the policies in one process (one "
        "module's step can keep a different speed in each process). The others (both pools "
        "spinning, thread variables set before Python starts, the memory policy left out, "
        "the contexts below) run in a child process of their own. Every module, NumPy's and "
        "Numba's, also applies its memory policy at its first call (templates/_memory.py.j2: "
        "glibc keeps freed arrays for reuse instead of returning them to the system); "
        "`numba[malloc]` is the module without it. `numba[product]` runs a NumPy product "
        "(BLAS on its own threads, as a user's script leaves it) before each step and "
        "takes out the time of the same product run alone: what is left is the step "
        "and what the step and the product cost each other (OpenBLAS's worker spinning "
        "on the cores the module's loops use, the loops' threads on the product's); "
        "`numba[notebook]` does the same with another Python thread alive and waiting, "
        "as a notebook's kernel has several (the module then cannot stop the pool a "
        "product leaves spinning: that thread could be inside a product). "
        "Every sample starts after its process "
        "has idled for the settle time and run one untimed step, which wakes its own "
        "threads: a sample is the steady state of a training loop."
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
                f"{_fmt_ms(other.median_ms)} ms | {'same' if other.shared else 'its own'} | "
                f"{own.median_ms / other.median_ms:.2f} | "
                f"{_per_round(_paired(own, other))[2:]} |"
            )
    if comparisons:
        lines += [
            "",
            "| workload | the module's policy | hand-picked policy | process | time ratio "
            "(own / hand) | within each round |",
            "|---|---:|---:|---|---:|---|",
            *comparisons,
        ]
    lines.append("")
    return lines


def first_call_lines(quick: bool) -> list[str]:
    """Every generated Numba module's first call: the cold compile (an empty Numba
    cache) and the warm start (import and first call with the cache filled), each in a
    fresh child process."""
    # The compiler's list of specs, imported only now that every section has been timed.
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
    lines += [_first_call_line(f"generated.{name}_numba") for name in names]
    lines.append("")
    return lines


def _first_call_line(module: str) -> str:
    """One module's first calls, cold then warm, as a table line."""
    with tempfile.TemporaryDirectory(prefix="derivgen-numba-cache-") as cache:
        try:
            cold = first_call(module, cache)
            warm = first_call(module, cache)
        except ChildError as exc:
            return f"| {module} | failed: {exc} | - | - | - |"
    compiled = ", ".join(cold["compiled_at_import"] + warm["compiled_at_import"]) or "nothing"
    return (
        f"| {module} | {cold['imported'] + cold['first']:.2f} | {warm['imported']:.2f} | "
        f"{warm['first']:.2f} | {compiled} |"
    )


# --- the whole report ----------------------------------------------------------------------


def render_markdown(
    sections: list[Section],
    settings: Settings,
    started: float,
    load_before: str,
    chart: Path | None = None,
) -> str:
    """The whole report; ``chart``, when given, is the PNG drawn beside it
    (``symbolic.bench.chart``), shown under the preamble by its name."""
    lines = _preamble_lines(settings, started, load_before)
    if chart is not None:
        lines += [
            f"![medians of every timed row, by workload and dtype]({chart.name})",
            "",
            "The chart: each row's median as a point, from its fastest to its slowest sample "
            "as a whisker, the generated modules in blue, the bound as a dashed red line.",
            "",
        ]
    for section in sections:
        lines += section_table(section)
    lines += criteria_lines(sections, settings.quick)
    lines += derived_lines(sections)
    lines += thread_note_lines(sections)
    if settings.first_call:
        lines += first_call_lines(settings.quick)
    return "\n".join(lines).rstrip() + "\n"


def _preamble_lines(settings: Settings, started: float, load_before: str) -> list[str]:
    """The title, how the run was made, the machine, how to read the tables, and a
    warning when the machine was busy."""
    finished = time.time()
    when = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["## derivgen bench", ""]
    lines.append(
        f"Run {when}, {finished - started:.0f} s; `derivgen bench` with repeats "
        f"{settings.repeats}, samples of at least {settings.min_sample_ms:g} ms, settle "
        f"{settings.settle:g} s, compile budget {settings.compile_budget:g} s, "
        f"{settings.processes} child process{'es' if settings.processes > 1 else ''} a row"
        + (", --quick (toy sizes)" if settings.quick else "")
        + f". Load average before {load_before}, after {load()}."
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
    for warning in (busy(load_before), blas_kernels_warning()):
        if warning:
            lines += [f"**Warning:** {warning}", ""]
    return lines
