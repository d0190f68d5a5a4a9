"""Every Redis key of a run, built in one place: ``tk:<RUN_ID>:...``.

Cleanup is one prefix scan; nothing of a run lives outside its prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracekit.runfolder import validate_run_id

WORKER_GROUP = "workers"  # the consumer group on every node queue
ENVELOPE_VERSION = 1  # version field of every message


@dataclass(frozen=True)
class RunKeys:
    run_id: str

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)

    @property
    def prefix(self) -> str:
        return f"tk:{self.run_id}:"

    @property
    def pattern(self) -> str:
        return f"{self.prefix}*"

    @property
    def meta(self) -> str:
        """Hash marking the run as live in Redis (gone after a restart without persistence)."""
        return f"{self.prefix}meta"

    def queue(self, node: str) -> str:
        """Stream of the tasks placed on ``node`` (consumer group WORKER_GROUP)."""
        return f"{self.prefix}queue:{node}"

    @property
    def results(self) -> str:
        """Stream of terminal records (done / failed), one per task."""
        return f"{self.prefix}results"

    @property
    def starts(self) -> str:
        """Stream of task starts (a worker began an attempt)."""
        return f"{self.prefix}starts"

    def heartbeat(self, node: str, consumer: str) -> str:
        """Expiring key a live worker slot keeps refreshing."""
        return f"{self.prefix}heartbeat:{node}:{consumer}"

    def heartbeat_pattern(self, node: str) -> str:
        return f"{self.prefix}heartbeat:{node}:*"
