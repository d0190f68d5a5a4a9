"""The load results' timestamps: RFC 3339 with nanoseconds, UTC, as vegeta writes them.

Written by tracekit.load.results, read back by tracekit.trace.requests; a
module of its own so that parse reads them without importing the generator.
"""

from __future__ import annotations

from datetime import datetime, timezone


def rfc3339(epoch_ns: int) -> str:
    """Epoch ns -> ``2026-12-03T11:44:16.392964767Z``."""
    seconds, ns = divmod(epoch_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"


def parse_rfc3339_ns(text: str) -> int:
    """``2026-12-03T11:44:16.392964767Z`` -> epoch ns (the inverse of rfc3339)."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])
