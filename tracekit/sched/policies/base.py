"""The placement policies' base class and the batch loop they all use.

Kept apart from ``__init__`` (which re-exports everything) so that the policy
modules can import it without a circular import through the registry; the
types they decide about are in ``types``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

from tracekit.sched.policies.speed import SpeedModel
from tracekit.sched.policies.types import NodeState, Placement, PlannedTask

__all__ = ["NodeState", "Placement", "PlannedTask", "Policy"]


class Policy(abc.ABC):
    """A placement policy. Subclasses implement ``choose``; the rest has defaults.

    ``choose`` is called once per placement and every non-None answer is
    placed, so a policy may advance internal state (a cursor) inside it.
    """

    name: str

    def __init__(self, speed: SpeedModel | None = None):
        self.speed = speed if speed is not None else SpeedModel()

    def plan(self, tasks: list[PlannedTask], nodes: list[str]) -> None:
        """Called once before dispatching; offline policies plan here."""

    def order(self, pending: list[PlannedTask]) -> list[PlannedTask]:
        """Dispatch order of the pending tasks; default: as given (plan order)."""
        return list(pending)

    @abc.abstractmethod
    def choose(self, task: PlannedTask, candidates: list[NodeState]) -> str | None:
        """The node for ``task`` among ``candidates`` (sorted by name), or None to wait."""

    def expected_ms(self, task: PlannedTask) -> float:
        return self.speed.estimate_ms(task)

    def task_completed(self, task: PlannedTask, node: str, actual_ms: float) -> None:
        self.speed.observe(task, actual_ms)

    def describe(self, task: PlannedTask) -> dict[str, Any]:
        """Policy-specific extras for ``Placement.decided_on`` (JSON-ready)."""
        return {}

    def next_placements(
        self,
        pending: list[PlannedTask],
        states: dict[str, NodeState],
        batch_size: int,
        *,
        backlog_limit: int = 0,
    ) -> list[Placement]:
        """Up to ``batch_size`` placements (0 = no limit) for one dispatch round.

        ``states`` holds the nodes the dispatcher considers open. Each placement
        is added to a local copy of the states, so the next choice of the same
        round sees it and a batch spreads out instead of piling on one node.
        With ``backlog_limit`` (0 = none) a node that fills up mid-batch closes.
        Tasks for which ``choose`` returns None stay pending for a later round.
        """
        local = dict(states)
        placements: list[Placement] = []
        for task in self.order(pending):
            if batch_size and len(placements) >= batch_size:
                break
            candidates = [
                local[n] for n in sorted(local) if not backlog_limit or local[n].backlog < backlog_limit
            ]
            if not candidates:
                break
            node = self.choose(task, candidates)
            if node is None:
                continue
            if node not in {c.node for c in candidates}:
                raise RuntimeError(f"policy {self.name} chose {node!r}, which is not a candidate node")
            expected = self.expected_ms(task)
            decided_on = {
                "policy": self.name,
                "backlog": {c.node: c.backlog for c in candidates},
                "expected_outstanding_ms": {c.node: round(c.expected_outstanding_ms, 3) for c in candidates},
                "busy_ms": {c.node: round(c.busy_ms, 3) for c in candidates},
                **self.describe(task),
            }
            placements.append(Placement(task, node, expected, decided_on))
            state = local[node]
            local[node] = dataclasses.replace(
                state,
                queued=state.queued + 1,
                expected_outstanding_ms=state.expected_outstanding_ms + expected,
            )
        return placements
