"""The run's Redis key names, for importers of this module: they are built in tracekit.sched.protocol."""

from tracekit.sched.protocol import RunKeys

__all__ = ["RunKeys"]
