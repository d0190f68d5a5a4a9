"""Learned speed: milliseconds of processing per unit of a task's size, per profile.

Every policy estimates a task's work as ``size * ms_per_unit(profile)``
(size: media seconds of a transcode, expected milliseconds given by the
experiment, or 1 a task: tracekit.workloads). The rate is learned online
from completed tasks, so estimates improve as a run goes on; before a
profile has been seen it borrows the mean over the profiles seen so far
(other profiles are the best evidence we have about this cluster), and with
nothing seen at all it takes the task's own guess (``unit_ms``: real time
for a transcode, the given expectation, one second a task).
"""

from __future__ import annotations

import math

from tracekit.sched.policies.types import PlannedTask

# Exponentially weighted mean rather than a plain running mean: speed on shared
# cloud VMs drifts (noisy neighbours, CPU credit and thermal limits, cache
# warm-up), so recent completions should count more. alpha = 0.3 remembers
# about (2 - alpha) / alpha ~ 6 completions: enough to smooth input-to-input
# noise, quick enough to follow a slowdown within a few tasks.
DEFAULT_ALPHA = 0.3


class SpeedModel:
    """Per-profile EWMA of ms per unit of size, with the task's own guess for what nothing has taught yet."""

    def __init__(self, alpha: float = DEFAULT_ALPHA):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self._rate: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def ms_per_unit(self, task: PlannedTask) -> float:
        if task.profile in self._rate:
            return self._rate[task.profile]
        if self._rate:
            return sum(self._rate.values()) / len(self._rate)
        return task.unit_ms

    def estimate_ms(self, task: PlannedTask) -> float:
        return task.size * self.ms_per_unit(task)

    def observe(self, task: PlannedTask, actual_ms: float) -> None:
        # A task of no size (an empty input) or a nonsensical duration says nothing about speed.
        if task.size <= 0 or not math.isfinite(actual_ms) or actual_ms < 0:
            return
        sample = actual_ms / task.size
        old = self._rate.get(task.profile)
        # The first observation replaces the guess outright: the guess is a guess.
        self._rate[task.profile] = sample if old is None else old + self.alpha * (sample - old)
        self._count[task.profile] = self._count.get(task.profile, 0) + 1

    def observations(self, profile: str) -> int:
        return self._count.get(profile, 0)

    def snapshot(self) -> dict[str, float]:
        """Learned rates by profile (JSON-ready), for placement records."""
        return {profile: round(rate, 3) for profile, rate in sorted(self._rate.items())}
