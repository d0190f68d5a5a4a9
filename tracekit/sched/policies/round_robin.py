"""Round-robin: the next node in name order after the last one used.

The baseline: it ignores task sizes and node load, so it shows what the
smarter policies gain. Nodes that are not candidates this round (backlog
full) are skipped rather than waited for, so one slow node cannot stall it.
"""

from __future__ import annotations

from tracekit.sched.policies.base import NodeState, PlannedTask, Policy
from tracekit.sched.policies.speed import SpeedModel


class RoundRobin(Policy):
    name = "round-robin"

    def __init__(self, speed: SpeedModel | None = None):
        super().__init__(speed)
        self._last: str | None = None  # the node used last; the cycle resumes after it

    def plan(self, tasks: list[PlannedTask], nodes: list[str]) -> None:
        self._last = None

    def choose(self, task: PlannedTask, candidates: list[NodeState]) -> str | None:
        names = sorted(c.node for c in candidates)
        # First candidate after the last node used, wrapping around. Comparing
        # names (not an index) keeps the cycle right when candidates change.
        after = [n for n in names if self._last is None or n > self._last]
        self._last = (after or names)[0]
        return self._last
