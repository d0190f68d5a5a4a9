"""Offline longest-processing-time-first (Graham's LPT list scheduling).

``plan`` sorts all tasks by expected time, longest first, and gives each to
the node with the least work assigned so far (ties by name). The makespan is
within 4/3 - 1/(3m) of optimal for m identical nodes. The plan is fixed: a
task waits for its planned node (``choose`` returns None) even when another
node is free, so runs are reproducible and comparable with the offline bound.
Estimates come from the speed model at plan time (the prior, unless a model
with observations is passed in), so learning later does not change the plan.
"""

from __future__ import annotations

from tracekit.sched.policies.base import NodeState, PlannedTask, Policy
from tracekit.sched.policies.speed import SpeedModel


class LongestProcessingTimeFirst(Policy):
    name = "lpt"

    def __init__(self, speed: SpeedModel | None = None):
        super().__init__(speed)
        self.assignment: dict[str, str] = {}  # task_id -> planned node
        self.planned_ms: dict[str, float] = {}  # node -> total expected work assigned
        self._rank: dict[str, int] = {}  # task_id -> position in longest-first order

    def plan(self, tasks: list[PlannedTask], nodes: list[str]) -> None:
        # Stable sort: equal estimates keep plan order, so the plan is deterministic.
        longest_first = sorted(tasks, key=lambda t: -self.expected_ms(t))
        self.planned_ms = {node: 0.0 for node in sorted(nodes)}
        self.assignment = {}
        self._rank = {}
        for rank, task in enumerate(longest_first):
            node = min(self.planned_ms, key=lambda n: (self.planned_ms[n], n))
            self.planned_ms[node] += self.expected_ms(task)
            self.assignment[task.task_id] = node
            self._rank[task.task_id] = rank

    def order(self, pending: list[PlannedTask]) -> list[PlannedTask]:
        self._check_planned(pending)
        return sorted(pending, key=lambda t: self._rank[t.task_id])

    def choose(self, task: PlannedTask, candidates: list[NodeState]) -> str | None:
        self._check_planned([task])
        node = self.assignment[task.task_id]
        # Wait for the planned node rather than deviate from the plan.
        return node if any(c.node == node for c in candidates) else None

    def describe(self, task: PlannedTask) -> dict:
        return {"planned_node": self.assignment[task.task_id]}

    def _check_planned(self, tasks: list[PlannedTask]) -> None:
        # An offline policy cannot place what it did not plan: a dispatcher bug.
        for task in tasks:
            if task.task_id not in self.assignment:
                raise RuntimeError(
                    f"lpt: task {task.task_id!r} was not planned; call plan() with every task first"
                )
