"""The per-round ratio of two rows and its interval (``symbolic.bench.stats``), and how the
report's targets use it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from symbolic.bench.candidates import Row
from symbolic.bench.measure import Section
from symbolic.bench.report import criteria_lines, thread_note_lines
from symbolic.bench.stats import median_interval, paired_ratio
from symbolic.bench.workloads import QUICK_WORKLOADS, TOLERANCES


@pytest.mark.parametrize("n", [5, 6, 7, 10, 15, 16, 30])
@pytest.mark.parametrize("level", [0.8, 0.9, 0.95])
def test_the_interval_covers_the_median_as_often_as_it_says(n, level):
    found = median_interval(n, level)
    if found is None:
        # even the smallest and largest of n values miss the median too often
        assert 1 - 2 / 2**n < level
        return
    k, coverage = found
    assert coverage >= level
    # k is the largest that keeps the coverage: one more falls short
    if k < n // 2:
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
        assert 1 - 2 * tail < level
    # the coverage checked by drawing: skewed noise around a known median (log-normal,
    # median 1), 20 000 experiments of n values each
    rng = np.random.default_rng(n * 1000 + int(level * 100))
    values = np.sort(rng.lognormal(0.0, 0.5, (20_000, n)), axis=1)
    held = np.mean((values[:, k - 1] <= 1.0) & (1.0 <= values[:, n - k]))
    assert abs(held - coverage) < 0.015, (held, coverage)


def test_fifteen_rounds_give_the_fourth_and_the_twelfth_ratio():
    k, coverage = median_interval(15, 0.9)
    assert k == 4 and coverage == pytest.approx(1 - 2 * 576 / 32768)
    slow = [1.0 + i / 100 for i in range(15)]  # the rounds' ratios: 1.00, 1.01, ..., 1.14
    paired = paired_ratio([2.0 * r for r in slow], [2.0] * 15)
    assert paired.median == pytest.approx(1.07)
    assert (paired.low, paired.high) == (pytest.approx(1.03), pytest.approx(1.11))
    assert paired.rounds == 15
    assert paired.text() == "1.07 per round (1.03-1.11, 96% interval)"


def test_the_ratio_is_taken_within_each_round():
    # the machine slows down over the run; one row is 10% slower in every round
    load = [1.0, 1.0, 3.0, 3.0, 3.0, 1.0, 3.0]
    base = [0.5 * m for m in load]
    slower = [0.55 * m for m in load]
    paired = paired_ratio(slower, base)
    assert paired.median == pytest.approx(1.1)
    assert paired.low == pytest.approx(1.1) and paired.high == pytest.approx(1.1)


def test_few_rounds_give_no_interval_and_bad_samples_are_refused():
    paired = paired_ratio([1.0, 2.0, 3.0], [1.0, 1.0, 1.0])
    assert paired.median == 2.0 and paired.low is None and paired.coverage == 0.0
    assert "too few for an interval" in paired.text()
    with pytest.raises(ValueError, match="no round"):
        paired_ratio([], [1.0])
    with pytest.raises(ValueError, match="positive"):
        paired_ratio([1.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        paired_ratio([1.0, math.nan], [1.0, 1.0])


def _row(key: str, samples_ms: list[float], policy: str | None = None) -> Row:
    label = "generated numba" if key == "numba" else key
    row = Row(key, label, ours=key.startswith("numba"), competitor=False, policy=policy)
    row.chosen = "numba1" if key == "numba" else None
    row.samples = [s / 1e3 for s in samples_ms]
    return row


def test_a_target_inside_the_interval_is_reported_as_undecided():
    workload = QUICK_WORKLOADS["A2"]
    rounds = 15
    own = [10.0 + 0.1 * (i % 5) for i in range(rounds)]
    # one hand-picked policy 2-12% faster than the module's own, round by round
    close = [o / (1.02 + 0.10 * i / (rounds - 1)) for i, o in enumerate(own)]
    # the matrix products: clearly under the module, 1.2x in every round
    gemm = [o / 1.2 for o in own]
    section = Section(
        workload,
        "float64",
        [
            _row("numba", own),
            _row("numba[numba1]", close, policy="numba1"),
            _row("gemm", gemm),
        ],
        TOLERANCES["float64"],
    )
    text = "\n".join(criteria_lines([section], quick=True))
    policy_line = next(line for line in text.splitlines() if "hand-picked" in line)
    assert "NOT met (the interval holds the target: this run cannot tell)" in policy_line
    assert "per round (" in policy_line and "96% interval" in policy_line
    bound_line = next(line for line in text.splitlines() if "generated numba step <= 1.05x" in line)
    assert bound_line.endswith("| NOT met |"), bound_line  # 1.2x in every round: no doubt
    assert "1.20 per round (1.20-1.20" in bound_line
    table = "\n".join(thread_note_lines([section]))
    assert "| within each round |" in table
    assert "per round (" in table.split("| within each round |")[1]


def test_the_own_policy_is_held_to_the_thread_policies_not_to_the_module_without_its_memory_policy():
    """numba[malloc] (the module's own thread policy, its memory policy left out) and the
    contexts are shown beside it but are not candidates; every other policy is one."""
    from symbolic.bench.candidates import CONTEXTS, POLICIES, THREAD_POLICIES

    assert set(POLICIES) == {*THREAD_POLICIES, *CONTEXTS, "malloc"}
    own = [10.0] * 15
    rows = [_row("numba", own)]
    rows += [_row(f"numba[{p}]", [8.0] * 15, policy=p) for p in ("malloc", *CONTEXTS)]
    rows.append(_row("numba[blas1]", [10.2] * 15, policy="blas1"))
    section = Section(QUICK_WORKLOADS["B1"], "float64", rows, TOLERANCES["float64"])
    text = "\n".join(criteria_lines([section], quick=True))
    line = next(x for x in text.splitlines() if "hand-picked thread policy" in x)
    assert "0.98 (best: BLAS limited to 1 thread" in line and line.endswith("| met |"), line
    rows[-1].samples = [s * 0.9 for s in rows[-1].samples]
    text = "\n".join(criteria_lines([section], quick=True))
    line = next(x for x in text.splitlines() if "hand-picked thread policy" in x)
    assert "1.09 (best: BLAS limited" in line and "NOT met" in line, line


def _drifting(level: float, first: float) -> list[float]:
    """15 rounds of a row that runs ``level`` times the other row's 7x100 then 8x110 ms,
    but for round 7, where it ran ``first`` times: the ratio of medians moves with that
    one round (it lands on the median), the per-round interval (4th to 12th) does not."""
    base = [100.0] * 7 + [110.0] * 8
    return [b * (first if i == 7 else level) for i, b in enumerate(base)]


def _target_line(workload: str, rows: list[Row], needle: str) -> str:
    """The report's target line holding ``needle`` for these rows (float64, quick sizes)."""
    section = Section(QUICK_WORKLOADS[workload], "float64", rows, TOLERANCES["float64"])
    text = "\n".join(criteria_lines([section], quick=True))
    return next(x for x in text.splitlines() if needle in x)


def _last_cell(line: str) -> str:
    """A table line's last cell: the verdict."""
    return line.rsplit("|", 2)[1].strip()


def test_a_ratio_of_medians_the_rounds_contradict_is_not_counted_as_met():
    """A drift that falls on one row more than the other can carry the ratio of medians
    across the target while every round but one says otherwise: the verdict says so."""
    base = [100.0] * 7 + [110.0] * 8
    own = _drifting(1.07, 1.0)  # ratio of medians 110/110 = 1.00, per round 1.07 (1.07-1.07)
    rows = [_row("numba", own), _row("numba[numba1]", own, policy="numba1"), _row("gemm", base)]
    line = _target_line("A2", rows, "generated numba step <= 1.05x")
    assert "| 1.00x; 1.07 per round (1.07-1.07, 96% interval) |" in line, line
    medians_only = "met by the medians, NOT met within the rounds"
    assert (
        _last_cell(line) == f"{medians_only} (the per-round interval lies wholly above the target)"
    )

    # the speed-up target is a lower limit: the same drift the other way round
    jax = Row("jax", "JAX jit", ours=False, competitor=True)
    jax.samples = [s / 1e3 for s in _drifting(1.35, 1.0)]  # medians 135/110 = 1.23
    rows = [_row("numba", base), _row("numba[numba1]", base, policy="numba1"), jax]
    line = _target_line("B1", rows, "fastest framework")
    assert "1.23x (vs JAX jit); 1.35 per round (1.35-1.35, 96% interval)" in line, line
    rounds_only = "NOT met by the medians, met within the rounds"
    assert (
        _last_cell(line) == f"{rounds_only} (the per-round interval lies wholly above the target)"
    )
    # and where both agree, the plain verdicts stand
    jax.samples = [s / 1e3 for s in _drifting(1.35, 1.35)]
    line = _target_line("B1", rows, "fastest framework")
    assert _last_cell(line) == "met", line
