"""Least-loaded: the node with the fewest queued + running tasks (ties: less work placed so far, then name).

Counts tasks, not work: needs no speed estimate at all, so it is the policy
to compare against when asking whether duration estimates pay off.
"""

from __future__ import annotations

from tracekit.sched.policies.base import NodeState, PlannedTask, Policy


class LeastLoaded(Policy):
    name = "least-loaded"

    def choose(self, task: PlannedTask, candidates: list[NodeState]) -> str | None:
        return min(candidates, key=lambda c: (c.backlog, self.placed_ms.get(c.node, 0.0), c.node)).node
