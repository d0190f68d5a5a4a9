"""Host samples: ``/proc counters -> one host.jsonl record`` (cumulative).

CPU times are cumulative milliseconds per mode, network and disk counters are
cumulative bytes; ``parse`` turns consecutive samples into rates, so a lost
sample widens one interval and loses nothing.

The values are psutil's (cpu_times(percpu=True), virtual_memory(),
swap_memory(), net_io_counters(pernic=True), disk_io_counters()), read
straight from /proc files kept open between ticks: psutil re-opens each file
on every call and reads more than this record needs (swap_memory() also
parses /proc/vmstat), which cost ~1.2 ms a tick. psutil still covers the rare
kernels without MemAvailable or Swap* lines.
"""

from __future__ import annotations

import operator
import os
import resource
from typing import Any

import psutil

from tracekit.collect import _procfs

_CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_MEMINFO_FIELDS = (b"MemTotal", b"MemFree", b"MemAvailable", b"SwapTotal", b"SwapFree")


# Clock ticks -> ms, rounded exactly as round(psutil's seconds * 1000).
if 1000 % _procfs.CLK_TCK == 0:  # 100 Hz and the like: exact in integers
    _MS_PER_TICK = 1000 // _procfs.CLK_TCK

    def _ticks_to_ms(ticks: int) -> int:
        return ticks * _MS_PER_TICK

else:

    def _ticks_to_ms(ticks: int) -> int:
        return round(ticks / _procfs.CLK_TCK * 1000)


class _NoWrap:
    """psutil's ``nowrap``: a counter never goes down.

    When a counter decreases (it wrapped, or its NIC or disk was re-created
    under the same name), its last value is added from then on; the offsets
    of a name are dropped when it disappears. Per name and field.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, ...]] = {}
        self._offsets: dict[str, list[int]] = {}

    def __call__(self, counters: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        last, self._last = self._last, counters
        offsets = self._offsets
        for gone in [name for name in offsets if name not in counters]:
            del offsets[gone]
        result = {}
        for name, values in counters.items():
            before = last.get(name)
            if before is not None and any(map(operator.lt, values, before)):
                added = offsets.setdefault(name, [0] * len(values))
                for i, (value, previous) in enumerate(zip(values, before)):
                    if value < previous:
                        added[i] += previous
            added = offsets.get(name)
            result[name] = values if added is None else tuple(map(operator.add, values, added))
        return result


def _kept_or_none(path: str) -> _procfs.KeptFile | None:
    try:
        return _procfs.KeptFile(path)
    except FileNotFoundError:
        return None


class HostSampler:
    """Host records from /proc files opened once; ``close()`` when done.

    ``cpus``: the node's CPUs (tracekit.cpuset), where the node has only some
    of the machine's: its CPU figures, total and per core, are those CPUs'
    alone (in CPU number order). Memory, network and disk stay the machine's.
    """

    def __init__(self, cpus: tuple[int, ...] | None = None) -> None:
        self._cpus = frozenset(cpus) if cpus is not None else None
        self._stat = _procfs.KeptFile("/proc/stat")
        self._meminfo = _procfs.KeptFile("/proc/meminfo")
        self._net_dev = _kept_or_none("/proc/net/dev")
        self._diskstats = _kept_or_none("/proc/diskstats")
        self._is_whole_disk = _procfs.WholeDisks()
        self._net_nowrap = _NoWrap()
        self._disk_nowrap = _NoWrap()

    def close(self) -> None:
        for kept in (self._stat, self._meminfo, self._net_dev, self._diskstats):
            if kept is not None:
                kept.close()

    def sample(self, ts_ms: int) -> dict[str, Any]:
        """One host record: CPU (total and per core), memory, load, network, disk."""
        per_core_ms = [list(map(_ticks_to_ms, ticks)) for ticks in _procfs.cpu_ticks_per_core(self._stat.read(), self._cpus)]
        total = [sum(mode) for mode in zip(*per_core_ms)] or [0] * len(_CPU_MODES)  # of the rounded ms
        per_core = [dict(zip(_CPU_MODES, ms)) for ms in per_core_ms]
        load1, load5, load15 = os.getloadavg()
        return {
            "ts_ms": ts_ms,
            "cpu_ms": dict(zip(_CPU_MODES, total)),
            "cpu_ms_per_core": per_core,
            **self._memory(),
            "load1": load1,
            "load5": load5,
            "load15": load15,
            "net": self._net(),
            "disk": self._disk(),
        }

    def _memory(self) -> dict[str, int]:
        kb = _procfs.meminfo_kb(self._meminfo.read(), _MEMINFO_FIELDS)
        total, free, available = kb[b"MemTotal"], kb[b"MemFree"], kb[b"MemAvailable"]
        if total is None or free is None or not available:
            # No MemAvailable (kernel < 3.14), or 0 (a kernel bug): psutil estimates it.
            memory = psutil.virtual_memory()
            total, free, available = memory.total // 1024, memory.free // 1024, memory.available // 1024
        elif available > total:  # distorted values in some containers: psutil's answer
            available = free
        swap_total, swap_free = kb[b"SwapTotal"], kb[b"SwapFree"]
        if swap_total is None or swap_free is None:
            swap_used = psutil.swap_memory().used // 1024
        else:
            swap_used = swap_total - swap_free
        return {
            "mem_total_kb": total,
            "mem_available_kb": available,
            "mem_used_kb": total - available,  # psutil >= 6: used = total - available
            "mem_free_kb": free,
            "swap_used_kb": swap_used,
        }

    def _net(self) -> dict[str, dict[str, int]]:
        if self._net_dev is None:
            return {}
        nics = self._net_nowrap(_procfs.net_dev(self._net_dev.read()))
        return {
            nic: {
                "rx_bytes": c[0],
                "tx_bytes": c[1],
                "rx_packets": c[2],
                "tx_packets": c[3],
                "rx_errors": c[4],
                "tx_errors": c[5],
                "rx_dropped": c[6],
                "tx_dropped": c[7],
            }
            for nic, c in sorted(nics.items())
        }

    def _disk(self) -> dict[str, int] | None:
        if self._diskstats is None:
            return None
        disks = self._disk_nowrap(_procfs.disk_stats(self._diskstats.read(), self._is_whole_disk))
        if not disks:
            return None
        read_count, write_count, read_bytes, write_bytes, busy_ms = map(sum, zip(*disks.values()))
        return {
            "read_bytes": read_bytes,
            "write_bytes": write_bytes,
            "read_count": read_count,
            "write_count": write_count,
            "busy_ms": busy_ms,
        }


_default_sampler: HostSampler | None = None


def sample_host(ts_ms: int) -> dict[str, Any]:
    """One host record from a shared ``HostSampler`` (the daemon owns its own)."""
    global _default_sampler
    if _default_sampler is None:
        _default_sampler = HostSampler()
    return _default_sampler.sample(ts_ms)


def self_usage() -> dict[str, Any]:
    """The collector's own cumulative CPU and current RSS."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_user_ms": round(usage.ru_utime * 1000),
        "cpu_system_ms": round(usage.ru_stime * 1000),
        "rss_kb": _procfs.self_rss_kb(),
    }
