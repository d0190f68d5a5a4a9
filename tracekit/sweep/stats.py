"""A figure's spread over the repetitions of one point: n, mean, sample SD, Student's t 95% CI, min, max.

input:  the values one figure took in the runs of a point (None: the run did not measure it)
output: a ``Spread``; None where a statistic needs more values than there are (an SD and a
        confidence interval need two: with one value they are unknown, not 0)

The interval is mean +- t(0.975, n - 1) * sd / sqrt(n), the two-sided 95% interval of the mean of
n independent repetitions; t's quantile comes from scipy.stats (a well-kept implementation, not a
table typed in by hand).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from scipy.stats import t as student_t

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Spread:
    n: int  # values measured
    mean: float | None
    sd: float | None  # sample standard deviation (n - 1 in the denominator)
    ci95_low: float | None
    ci95_high: float | None
    min: float | None
    max: float | None

    @property
    def ci95_half(self) -> float | None:
        """Half the interval's width: the "+-" of "mean +- half"."""
        return None if self.ci95_high is None or self.mean is None else self.ci95_high - self.mean


def t_quantile(n: int) -> float:
    """Student's t quantile for a two-sided 95% interval of the mean of ``n`` values (n >= 2)."""
    return float(student_t.ppf(1 - (1 - CONFIDENCE) / 2, n - 1))


def spread(values: Iterable[float | None]) -> Spread:
    """The statistics of the measured values (None left out)."""
    measured = [float(v) for v in values if v is not None]
    n = len(measured)
    if n == 0:
        return Spread(0, None, None, None, None, None, None)
    mean = statistics.mean(measured)  # exact (rational) sums: equal values have an SD of 0, not 3e-17
    if n == 1:
        return Spread(1, mean, None, None, None, mean, mean)
    sd = statistics.stdev(measured)
    half = t_quantile(n) * sd / math.sqrt(n)
    return Spread(n, mean, sd, mean - half, mean + half, min(measured), max(measured))
