"""Online duration-aware greedy: longest expected task to the least expected work.

Each round orders pending tasks longest expected first (LPT's order, with the
speeds learned so far) and gives each to the candidate node with the least
expected outstanding work (ties: smaller backlog, then the smaller expected
total: measured busy time plus expected outstanding work; then name). Unlike ``lpt``
it never waits for a particular node, and because estimates come from the
speed model fed by ``task_completed``, a profile that turns out slower than
assumed moves earlier and weighs more on its node as completions arrive.
"""

from __future__ import annotations

from tracekit.sched.policies.base import NodeState, PlannedTask, Policy


class DurationOnline(Policy):
    name = "duration-online"

    def order(self, pending: list[PlannedTask]) -> list[PlannedTask]:
        # Stable sort: equal estimates keep plan order.
        return sorted(pending, key=lambda t: -self.expected_ms(t))

    def choose(self, task: PlannedTask, candidates: list[NodeState]) -> str | None:
        return min(candidates, key=lambda c: (c.expected_outstanding_ms, c.backlog, c.expected_total_ms, c.node)).node

    def describe(self, task: PlannedTask) -> dict:
        # The learned speeds are part of the state this decision used.
        return {"ms_per_unit": self.speed.snapshot()}
