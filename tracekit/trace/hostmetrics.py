"""Host samples: cumulative ``host.jsonl`` records -> ``host_metrics`` and ``link_metrics``.

input:  one node's host records (in time order), its clock offset
output: one host_metrics record per interval between consecutive samples,
        one link_metrics record per interval and network interface

One host sample per tick: a day at 1 Hz is 86,400 samples of a few kB, so
samples are streamed pairwise, never held all at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

# Time the CPU spent doing nothing; everything else counts as busy.
_IDLE_MODES = ("idle", "iowait")


def _busy_pct(now: dict[str, int], before: dict[str, int]) -> tuple[float, dict[str, float]]:
    delta = {mode: now[mode] - before[mode] for mode in now}
    total = sum(delta.values())
    if total <= 0:
        return 0.0, {mode: 0.0 for mode in delta}
    shares = {mode: round(100.0 * value / total, 3) for mode, value in delta.items()}
    busy = 100.0 * (total - sum(delta[mode] for mode in _IDLE_MODES)) / total
    return round(busy, 3), shares


def _rate(delta: int, dt_ms: int) -> float:
    return round(delta * 1000.0 / dt_ms, 3)


def host_and_link_metrics(
    node: str, records: Iterable[dict[str, Any]], clock_offset_ms: int
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(host_metrics record, link_metrics records) per interval, streamed.

    Samples come in time order (the collector writes them so); one that goes
    back in time (a collector restarted with a stepped clock) starts a new
    series instead of giving a negative interval.
    """
    before = None
    for now in records:
        if before is None or now["ts_ms"] <= before["ts_ms"]:
            before = now
            continue
        yield _interval(node, before, now, clock_offset_ms)
        before = now


def _interval(node: str, before: dict[str, Any], now: dict[str, Any], clock_offset_ms: int):
    dt_ms = now["ts_ms"] - before["ts_ms"]
    ts_ms = now["ts_ms"] + clock_offset_ms
    busy, shares = _busy_pct(now["cpu_ms"], before["cpu_ms"])
    per_core = [
        _busy_pct(core_now, core_before)[0]
        for core_now, core_before in zip(now["cpu_ms_per_core"], before["cpu_ms_per_core"])
    ]
    disk_now, disk_before = now.get("disk"), before.get("disk")
    disk_read = disk_write = None
    if disk_now and disk_before:
        disk_read = max(0, disk_now["read_bytes"] - disk_before["read_bytes"])
        disk_write = max(0, disk_now["write_bytes"] - disk_before["write_bytes"])
    host = {
        "ts_ms": ts_ms,
        "node": node,
        "dt_ms": dt_ms,
        "cpu_util_pct": busy,
        "cpu_user_pct": shares["user"],
        "cpu_system_pct": shares["system"],
        "cpu_iowait_pct": shares["iowait"],
        "cpu_idle_pct": shares["idle"],
        "per_core_util_pct": per_core,
        "mem_total_kb": now["mem_total_kb"],
        "mem_available_kb": now["mem_available_kb"],
        "mem_used_kb": now["mem_used_kb"],
        "swap_used_kb": now["swap_used_kb"],
        "load1": now["load1"],
        "load5": now["load5"],
        "load15": now["load15"],
        "disk_read_bytes": disk_read,
        "disk_write_bytes": disk_write,
        "disk_read_bps": None if disk_read is None else _rate(disk_read, dt_ms),
        "disk_write_bps": None if disk_write is None else _rate(disk_write, dt_ms),
    }
    links = []
    for iface, counters in sorted(now["net"].items()):
        previous = before["net"].get(iface)
        if previous is None or iface == "lo":
            continue
        rx = max(0, counters["rx_bytes"] - previous["rx_bytes"])
        tx = max(0, counters["tx_bytes"] - previous["tx_bytes"])
        links.append(
            {
                "ts_ms": ts_ms,
                "node": node,
                "iface": iface,
                "dt_ms": dt_ms,
                "rx_bytes": rx,
                "tx_bytes": tx,
                "rx_bps": _rate(rx * 8, dt_ms),
                "tx_bps": _rate(tx * 8, dt_ms),
            }
        )
    return host, links
