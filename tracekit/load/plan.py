"""The load's schedule: ``rate plan -> intended send times``, made as they are sent.

input:  a rate plan (``50`` with a duration, or ``50@30s,100@30s``), the
        arrival process (constant spacing, or Poisson with a seed), a warm-up
output: every request's intended send time (ns after the start) and
        whether it falls in the warm-up, one at a time

Open loop: the schedule never waits for responses, so a slow server shows
up as latency (measured from the intended time) and not as a lower rate.
The times are fixed by the plan and the seed alone (the same seed gives the
same schedule), but drawn only as the generator reaches them: a plan of a
week at a million requests a second costs no more memory than one of a
second (a list of its times would not fit in any machine).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice, zip_longest
from typing import Any

from tracekit.errors import UsageError

ARRIVALS = ("constant", "poisson")
MAX_RATE = 1_000_000  # requests per second: a typo guard, far beyond what one machine sends
MIN_RATE = 0.001  # requests per second: one every 1000 s; below it a load is a typo (1e-9) and sends nothing
MAX_DURATION_NS = 7 * 24 * 3_600_000_000_000  # warm-up and plan together: a week is no load test, a typo
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_NS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration_ns(text: str, what: str = "duration") -> int:
    """``60s``, ``500ms``, ``1m30s``, ``2h``, or a bare number of seconds -> nanoseconds."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise UsageError(f"{what} {text!r} is not a duration: use e.g. 60s, 500ms, 1m30s") from None
        return sum(round(float(number) * _UNIT_NS[unit]) for number, unit in parts)
    if not math.isfinite(seconds):  # 'inf', 'nan', '1e400': float() takes them, round() does not
        raise UsageError(f"{what} {text!r} is not a duration: use e.g. 60s, 500ms, 1m30s")
    if seconds < 0:
        raise UsageError(f"{what} {text!r} is negative")
    return round(seconds * 1e9)


@dataclass(frozen=True)
class Step:
    rate: float  # requests per second
    duration_ns: int


def _constant_count(step: Step) -> int:
    """Requests of a step with constant arrivals (the schedule and the checks count alike)."""
    return int(step.duration_ns * step.rate // 1_000_000_000)


def _check_rate(rate: float, what: str) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:  # also refuses nan
        raise UsageError(f"{what} must be at least {MIN_RATE:g} and at most {MAX_RATE:,} per second")


def _check_length(total_ns: int, what: str) -> None:
    if total_ns > MAX_DURATION_NS:
        raise UsageError(f"{what}: {total_ns / 3.6e12:,.1f} h is longer than a load may last "
                         f"({MAX_DURATION_NS // 3_600_000_000_000} h, 7 days)")  # fmt: skip


def parse_rate_plan(text: str, duration: str | None, rate_name: str = "--rate", duration_name: str = "--duration") -> list[Step]:
    """``--rate`` (and ``--duration``) -> the steps of the plan.

    ``50`` needs a duration; ``50@30s,100@30s`` carries its own (then a
    ``--duration`` must agree with their sum, or be left out). Each step must
    plan at least one request, and the plan lasts at most MAX_DURATION_NS.
    """
    steps = []
    for part in text.split(","):
        rate_text, at, length = part.strip().partition("@")
        try:
            rate = float(rate_text)
        except ValueError:
            raise UsageError(f"{rate_name} {text!r}: {rate_text!r} is not a rate (requests per second), e.g. 50 or 50@30s,100@30s") from None
        if not 0 < rate:
            raise UsageError(f"{rate_name} {text!r}: {rate_text} must be above 0 (requests per second)")
        _check_rate(rate, f"{rate_name} {text!r}: {rate_text}")
        if at and not length:
            raise UsageError(f"{rate_name} {text!r}: {part!r} needs a duration after '@', e.g. {rate_text}@30s")
        steps.append((rate, parse_duration_ns(length, f"{rate_name} {text!r}: duration") if at else None))
    total = parse_duration_ns(duration, duration_name) if duration is not None else None
    if len(steps) == 1 and steps[0][1] is None:
        if total is None:
            raise UsageError(f"{rate_name} {text} needs {duration_name} (e.g. 60s), or a plan like {text}@60s")
        steps = [(steps[0][0], total)]
    elif any(length is None for _, length in steps):
        raise UsageError(f"{rate_name} {text!r}: in a plan of several steps each needs its duration, e.g. 50@30s,100@30s")
    elif total is not None and total != sum(length for _, length in steps):
        raise UsageError(f"{duration_name} {duration} disagrees with the plan {rate_name} {text} (leave {duration_name} out)")
    plan = [Step(rate, length) for rate, length in steps]
    if sum(step.duration_ns for step in plan) <= 0:
        raise UsageError(f"the load lasts no time: give a {duration_name} above 0")
    _check_length(sum(step.duration_ns for step in plan),
                  f"{rate_name} {text}" + (f" {duration_name} {duration}" if duration is not None else ""))
    for step in plan:
        if _constant_count(step) < 1:
            raise UsageError(f"{rate_name} {text}: {step.rate:g} per second for {step.duration_ns / 1e9:g} s plans "
                             f"no request; raise the rate or lengthen {duration_name}")  # fmt: skip
    return plan


def check_plan(plan: Sequence[Step], warmup_ns: int = 0) -> None:
    """The bounds of a plan made without ``parse_rate_plan`` (the Python API): rates, total length."""
    if not plan:
        raise UsageError("the rate plan has no step: give --rate")
    for step in plan:
        _check_rate(step.rate, f"--rate {step.rate:g}")
        if step.duration_ns < 0:
            raise UsageError(f"--rate {step.rate:g}: a step lasts {step.duration_ns} ns, less than no time")
    if warmup_ns < 0:
        raise UsageError("--warmup must not be negative")
    _check_length(warmup_ns + sum(step.duration_ns for step in plan), "--warmup and --rate together")


@dataclass(frozen=True)
class Schedule:
    """The intended send times of a plan, drawn one by one as ``sends()`` is read.

    Nothing is kept per planned request: ``sends()`` is a generator over the
    steps (a ``range`` for constant arrivals, a seeded RNG for Poisson ones).
    """

    steps: tuple[Step, ...]  # the warm-up's step first, if there is one
    arrival: str
    seed: int | None
    has_warmup: bool
    duration_ns: int  # warm-up + plan

    def sends(self) -> Iterator[tuple[int, bool]]:
        """(intended send time in ns after the start, in the warm-up), ascending.

        constant: evenly spaced (1/rate apart); poisson: exponential gaps with
        mean 1/rate, from one RNG seeded once (the same seed, the same times).
        """
        rng = random.Random(self.seed)
        start = 0
        for index, step in enumerate(self.steps):
            warmup = self.has_warmup and index == 0
            end = start + step.duration_ns
            gap = 1e9 / step.rate
            if self.arrival == "constant":
                for k in range(_constant_count(step)):
                    yield start + round(k * gap), warmup
            else:
                t = start + rng.expovariate(1.0) * gap
                while t < end:
                    yield round(t), warmup
                    t += rng.expovariate(1.0) * gap
            start = end

    def __iter__(self) -> Iterator[int]:
        return (offset for offset, _ in self.sends())

    @property
    def count(self) -> int | None:
        """Planned requests, warm-up included: exact for constant arrivals; None for Poisson ones
        (their number is known only once all are drawn)."""
        return sum(_constant_count(step) for step in self.steps) if self.arrival == "constant" else None

    @property
    def warmup_count(self) -> int | None:
        """Requests in the warm-up (the first ones, left out of the summary); None as for ``count``."""
        if self.arrival != "constant":
            return None
        return _constant_count(self.steps[0]) if self.has_warmup else 0

    @property
    def offsets_ns(self) -> _Offsets:
        """The send times as a read-only sequence, computed when read (for tests and small plans)."""
        return _Offsets(self)


class _Offsets(Sequence):
    """A schedule's send times as a sequence; each read draws them again (time, not memory)."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def __iter__(self) -> Iterator[int]:
        return iter(self.schedule)

    def __len__(self) -> int:
        count = self.schedule.count
        return count if count is not None else sum(1 for _ in self.schedule)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            bounds = (index.start, index.stop, index.step)
            if all(bound is None or bound >= 0 for bound in bounds) and index.step != 0:
                return list(islice(self, *bounds))  # [:n] of a long schedule draws n times, no more
            return list(islice(self, *index.indices(len(self))))
        if index < 0:
            index += len(self)
        for offset in islice(self, index, None):
            return offset
        raise IndexError("schedule index out of range")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence | Schedule):
            return NotImplemented
        missing = object()
        return all(a == b for a, b in zip_longest(self, other, fillvalue=missing))


def build_schedule(plan: Sequence[Step], arrival: str = "constant", seed: int | None = None,
                   warmup_ns: int = 0) -> Schedule:  # fmt: skip
    """The schedule of ``plan``: the warm-up at the first step's rate, then each step in turn."""
    if arrival not in ARRIVALS:
        raise UsageError(f"--arrival {arrival!r} is not one of {', '.join(ARRIVALS)}")
    check_plan(plan, warmup_ns)
    steps = ((Step(plan[0].rate, warmup_ns),) if warmup_ns > 0 else ()) + tuple(plan)
    return Schedule(steps, arrival, seed, warmup_ns > 0, sum(step.duration_ns for step in steps))
