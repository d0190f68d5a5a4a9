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
    task_id: str
    profile: str  # transcode profile name, e.g. "720p-veryfast"
    media_s: float  # input duration from ffprobe (seconds)

    def __post_init__(self) -> None:
        if not (isinstance(self.media_s, int | float) and math.isfinite(self.media_s) and self.media_s >= 0):
            raise UsageError(
                f"task {self.task_id!r}: media duration {self.media_s!r} is not a number >= 0:"
                " check that ffprobe can read its input"
            )


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
