"""Least-loaded: the node with the fewest queued + running tasks.

Ties (nodes often all look idle between rounds of short tasks) go to the
node with the smaller expected total (measured busy time plus expected
outstanding work), then by name.

Counts tasks, not work (estimates only break ties), so it is the policy to
compare against when asking whether duration estimates pay off.
"""

from __future__ import annotations

from tracekit.sched.policies.base import NodeState, PlannedTask, Policy


class LeastLoaded(Policy):
    name = "least-loaded"

    def choose(self, task: PlannedTask, candidates: list[NodeState]) -> str | None:
        return min(candidates, key=lambda c: (c.backlog, c.expected_total_ms, c.node)).node
