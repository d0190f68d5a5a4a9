"""Placement policies: which worker node gets which transcode task.

Pure Python, no Redis and no I/O: the dispatcher owns the queues and node
states and asks a policy for each round's placements (``next_placements``).
One small module per policy; ``make_policy`` builds one by name or alias.
"""

from __future__ import annotations

from tracekit.errors import UsageError
from tracekit.sched.policies.base import NodeState, Placement, PlannedTask, Policy
from tracekit.sched.policies.duration_online import DurationOnline
from tracekit.sched.policies.least_loaded import LeastLoaded
from tracekit.sched.policies.lpt import LongestProcessingTimeFirst
from tracekit.sched.policies.round_robin import RoundRobin
from tracekit.sched.policies.speed import SpeedModel

POLICIES: dict[str, type[Policy]] = {
    "round-robin": RoundRobin,
    "least-loaded": LeastLoaded,
    "lpt": LongestProcessingTimeFirst,
    "duration-online": DurationOnline,
}

# Older names used in experiment configs. "duration-greedy" maps to
# duration-online, not least-loaded: greedy by duration means longest expected
# task first to the node with the least expected work, decided online; it is
# not lpt either, since lpt fixes the whole plan in advance.
ALIASES: dict[str, str] = {
    "rr3": "round-robin",
    "duration-greedy": "duration-online",
    "lpt-duration": "lpt",
    "online-duration": "duration-online",
}


def make_policy(name: str, *, speed: SpeedModel | None = None) -> Policy:
    """A fresh policy by name or alias; ``speed`` seeds it with learned speeds."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in POLICIES:
        raise UsageError(
            f"unknown policy {name!r}: use one of {', '.join(POLICIES)} (aliases: {', '.join(ALIASES)})"
        )
    return POLICIES[key](speed)


__all__ = [
    "ALIASES",
    "POLICIES",
    "DurationOnline",
    "LeastLoaded",
    "LongestProcessingTimeFirst",
    "NodeState",
    "Placement",
    "PlannedTask",
    "Policy",
    "RoundRobin",
    "SpeedModel",
    "make_policy",
]
