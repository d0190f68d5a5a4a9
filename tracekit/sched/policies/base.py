"""Shared types of the placement policies and the batch loop they all use.

Kept apart from ``__init__`` (which re-exports everything) so that the policy
modules can import these types without a circular import through the registry.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from tracekit.errors import UsageError
from tracekit.sched.policies.speed import SpeedModel


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
