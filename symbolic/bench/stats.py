"""How sure a ratio of two rows' times is: the ratio within each round, and an interval.

The rows are sampled round-robin, one sample each per round, so a round's two samples
were taken seconds apart, under the same load. The ratio of two medians mixes the
rounds (a slow minute of the machine counts against whichever row it fell on more
often); the ratio within each round pairs like with like. ``paired_ratio`` gives the
median of those per-round ratios and a distribution-free confidence interval for it:
the order statistics ``r_(k)`` and ``r_(n+1-k)`` of the n sorted ratios, with k the
largest for which the binomial law gives at least the asked coverage (for n = 15 and
90%: the 4th and the 12th, 96.5%). No assumption on how the noise is distributed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Paired:
    """The per-round ratio of two rows.

    Attributes:
        median: The median of the per-round ratios.
        low, high: The interval's ends (None where the rounds are too few for one).
        coverage: The interval's exact coverage (0 where there is none).
        rounds: The rounds both rows were sampled in.
    """

    median: float
    low: float | None
    high: float | None
    coverage: float
    rounds: int

    def text(self) -> str:
        """ "1.07 per round (0.98-1.20, 96% interval)", or the median alone."""
        if self.low is None or self.high is None:
            return f"{self.median:.2f} per round ({self.rounds} rounds, too few for an interval)"
        return (
            f"{self.median:.2f} per round ({self.low:.2f}-{self.high:.2f}, "
            f"{self.coverage * 100:.0f}% interval)"
        )


def median_interval(n: int, level: float) -> tuple[int, float] | None:
    """``(k, coverage)``: the interval from the k-th to the (n+1-k)-th of n sorted values
    (1-based) covers their distribution's median with probability ``coverage`` >=
    ``level``, k as large as can be; None when even the smallest and largest do not."""
    best = None
    for k in range(1, n // 2 + 1):
        # P(fewer than k of n values fall below the median) = P(Binomial(n, 1/2) < k)
        tail = sum(math.comb(n, i) for i in range(k)) / 2**n
        coverage = 1.0 - 2.0 * tail
        if coverage < level:
            break
        best = (k, coverage)
    return best


def paired_ratio(numerator: list[float], denominator: list[float], level: float = 0.9) -> Paired:
    """The ratio numerator / denominator within each round (the samples of the same index),
    its median and its interval at ``level`` coverage.

    Raises:
        ValueError: No round has both samples, or a sample is not positive.
    """
    pairs = list(zip(numerator, denominator, strict=False))
    if not pairs:
        raise ValueError("no round has a sample of both rows")
    if any(not (a > 0 and b > 0) for a, b in pairs):
        raise ValueError("samples must be positive times")
    ratios = sorted(a / b for a, b in pairs)
    n = len(ratios)
    found = median_interval(n, level)
    if found is None:
        return Paired(statistics.median(ratios), None, None, 0.0, n)
    k, coverage = found
    return Paired(statistics.median(ratios), ratios[k - 1], ratios[n - k], coverage, n)
