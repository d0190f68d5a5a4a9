"""The load's schedule, fixed before the first request: ``rate plan -> intended send times``.

input:  a rate plan (``50`` with a duration, or ``50@30s,100@30s``), the
        arrival process (constant spacing, or Poisson with a seed), a warm-up
output: every request's intended send time (ns after the start) and
        whether it falls in the warm-up

Open loop: the schedule never waits for responses, so a slow server shows
up as latency (measured from the intended time) and not as a lower rate.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from tracekit.errors import UsageError

ARRIVALS = ("constant", "poisson")
MAX_RATE = 1_000_000  # requests per second: a typo guard, far beyond what one machine sends
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
    if seconds < 0:
        raise UsageError(f"{what} {text!r} is negative")
    return round(seconds * 1e9)


@dataclass(frozen=True)
class Step:
    rate: float  # requests per second
    duration_ns: int


def parse_rate_plan(text: str, duration: str | None, rate_name: str = "--rate", duration_name: str = "--duration") -> list[Step]:
    """``--rate`` (and ``--duration``) -> the steps of the plan.

    ``50`` needs a duration; ``50@30s,100@30s`` carries its own (then a
    ``--duration`` must agree with their sum, or be left out).
    """
    steps = []
    for part in text.split(","):
        rate_text, at, length = part.strip().partition("@")
        try:
            rate = float(rate_text)
        except ValueError:
            raise UsageError(f"{rate_name} {text!r}: {rate_text!r} is not a rate (requests per second), e.g. 50 or 50@30s,100@30s") from None
        if not 0 < rate <= MAX_RATE:
            raise UsageError(f"{rate_name} {text!r}: {rate_text} must be above 0 and at most {MAX_RATE:,} per second")
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
    return plan


@dataclass(frozen=True)
class Schedule:
    offsets_ns: list[int]  # intended send times, ns after the start, ascending
    warmup_count: int  # the first ones are the warm-up's (left out of the summary)
    duration_ns: int  # warm-up + plan


def build_schedule(plan: list[Step], arrival: str = "constant", seed: int | None = None,
                   warmup_ns: int = 0) -> Schedule:  # fmt: skip
    """Intended send times: the warm-up at the first step's rate, then each step in turn.

    constant: evenly spaced (1/rate apart); poisson: exponential gaps with
    mean 1/rate (seeded: the same seed gives the same schedule).
    """
    if arrival not in ARRIVALS:
        raise UsageError(f"--arrival {arrival!r} is not one of {', '.join(ARRIVALS)}")
    rng = random.Random(seed)
    steps = ([Step(plan[0].rate, warmup_ns)] if warmup_ns > 0 else []) + plan
    offsets: list[int] = []
    warmup_count = 0
    start = 0
    for index, step in enumerate(steps):
        end = start + step.duration_ns
        gap = 1e9 / step.rate
        if arrival == "constant":
            count = int(step.duration_ns * step.rate // 1_000_000_000)
            offsets.extend(start + round(k * gap) for k in range(count))
        else:
            t = start + rng.expovariate(1.0) * gap
            while t < end:
                offsets.append(round(t))
                t += rng.expovariate(1.0) * gap
        if index == 0 and warmup_ns > 0:
            warmup_count = len(offsets)
        start = end
    return Schedule(offsets, warmup_count, start)
