"""What the placement policies decide about: tasks, node states, placements (no policy logic).

Their own module so that the speed model and every policy import them without
importing the policies' base class (which imports the speed model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tracekit.errors import UsageError


@dataclass(frozen=True)
class PlannedTask:
    """A task as the policies see it: its profile and its amount of work.

    ``size`` is in its kind's unit (media seconds of a transcode, a task's
    expected milliseconds when the experiment gives them, else 1 per task);
    ``unit_ms`` is the guess of milliseconds per unit until the speed of its
    profile is learned (tracekit.sched.policies.speed).
    """

    task_id: str
    profile: str
    size: float
    unit_ms: float = 1000.0

    def __post_init__(self) -> None:
        for name in ("size", "unit_ms"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise UsageError(f"task {self.task_id!r}: {name} {value!r} is not a number >= 0")


@dataclass(frozen=True)
class NodeState:
    node: str
    queued: int  # placed, not started
    running: int  # started, no terminal record yet
    expected_outstanding_ms: float  # expected remaining work of queued + running (policy.expected_ms, now)
    busy_ms: float = 0.0  # measured: run times of its finished tasks, plus how long the running ones have run

    @property
    def backlog(self) -> int:
        return self.queued + self.running

    @property
    def expected_total_ms(self) -> float:
        """The node's whole share of the run: what it did (measured) and what it is expected to still do.

        Balances nodes that look alike right now (both idle between rounds):
        measurements replace estimates as tasks finish, and what is left is
        re-estimated with the speeds learned so far, so one early estimate
        that was far off does not weigh on a node for the rest of the run.
        """
        return self.busy_ms + self.expected_outstanding_ms


@dataclass(frozen=True)
class Placement:
    task: PlannedTask
    node: str
    expected_ms: float
    decided_on: dict[str, Any]  # JSON-ready: the state the decision used
