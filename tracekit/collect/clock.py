"""This node's clock offset to the controller, measured against Redis ``TIME``.

input:  the controller's Redis (its TIME command reads the controller's clock)
output: ``clock.json`` in the node's run folder:
        {offset_ms, uncertainty_ms, rtt_ms, reference, start: {...}, end: {...}}

offset_ms is what to ADD to this node's timestamps to get controller time.
Each measurement takes the probe with the smallest round trip out of a few:
offset = server_time - (t_send + t_receive) / 2, uncertainty = rtt / 2.
The runner measures at the start and at the end of a run; the top-level
figures are their mean (drift shows as the difference between the two).
``tracekit parse`` applies offset_ms (tracekit.trace.rawrun).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import redis

from tracekit import runfolder
from tracekit.jsonl import write_json
from tracekit.redis_client import connect, safe_url

PROBES = 15


@dataclass(frozen=True)
class ClockProbe:
    offset_ms: float
    uncertainty_ms: float
    rtt_ms: float
    ts_ms: int  # this node's wall clock at the probe


def probe_offset(client: redis.Redis, probes: int = PROBES) -> ClockProbe:
    """The probe with the smallest round trip.

    The round trip is timed on the monotonic clock: a step of the wall
    clock during a probe (NTP) would otherwise give a round trip that is
    wrong, even negative, and a negative one would win. The midpoint on the
    wall clock is the send time plus half the round trip.
    """
    best: ClockProbe | None = None
    for _ in range(probes):
        sent_wall, sent = time.time(), time.monotonic()
        seconds, micros = client.time()
        rtt_ms = (time.monotonic() - sent) * 1000.0
        server_ms = int(seconds) * 1000.0 + int(micros) / 1000.0
        probe = ClockProbe(
            offset_ms=round(server_ms - (sent_wall * 1000.0 + rtt_ms / 2), 3),
            uncertainty_ms=round(rtt_ms / 2, 3),
            rtt_ms=round(rtt_ms, 3),
            ts_ms=int(sent_wall * 1000),
        )
        if best is None or probe.rtt_ms < best.rtt_ms:
            best = probe
    assert best is not None
    return best


def record_clock(
    run_id: str,
    redis_url: str,
    password_file: Path | None,
    moment: Literal["start", "end"],
    logs_dir: Path | str | None = None,
    reference: str = "controller",
) -> dict:
    """Measure now and merge the result into the node's clock.json; return its content."""
    folder = runfolder.ensure_writable_dir(runfolder.run_dir(run_id, logs_dir), "run folder")
    probe = probe_offset(connect(redis_url, password_file))
    path = folder / runfolder.CLOCK
    try:
        clock = json.loads(path.read_text())
    except (OSError, ValueError):
        clock = {}
    clock[moment] = asdict(probe)
    measured = [clock[m] for m in ("start", "end") if m in clock]
    clock.update(
        offset_ms=round(sum(m["offset_ms"] for m in measured) / len(measured), 3),
        uncertainty_ms=max(m["uncertainty_ms"] for m in measured),
        rtt_ms=min(m["rtt_ms"] for m in measured),
        reference=f"{reference} (Redis TIME at {safe_url(redis_url)})",
    )
    write_json(path, clock)
    return clock
