"""Host samples: ``/proc counters -> a HostSample -> rows of host.csv, host_cpus.csv, host_net.csv``.

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
from dataclasses import dataclass
from typing import Any

import psutil

from tracekit import procfs as _procfs

_CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
# The raw files' columns, in order (tracekit.trace.records.RAW_HOST* declare their types).
HOST_CSV_COLUMNS = (
    "ts_ms", *(f"cpu_{mode}_ms" for mode in _CPU_MODES), "mem_total_kb", "mem_available_kb", "mem_used_kb",
    "mem_free_kb", "swap_used_kb", "load1", "load5", "load15", "disk_read_bytes", "disk_write_bytes",
    "disk_read_count", "disk_write_count", "disk_busy_ms",
)  # fmt: skip
HOST_CPUS_CSV_COLUMNS = ("ts_ms", "cpu", *(f"{mode}_ms" for mode in _CPU_MODES))
NET_COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors", "rx_dropped", "tx_dropped")
HOST_NET_CSV_COLUMNS = ("ts_ms", "iface", *NET_COUNTERS)
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


@dataclass(frozen=True)
class HostSample:
    """The node at one tick: cumulative counters, gauges as read."""

    ts_ms: int
    cpu_ms: tuple[int, ...]  # per mode (_CPU_MODES), the node's CPUs summed
    cpu_ms_per_core: tuple[tuple[int, tuple[int, ...]], ...]  # (CPU number, per mode), in CPU order
    memory: dict[str, int]  # mem_total_kb, mem_available_kb, mem_used_kb, mem_free_kb, swap_used_kb
    load: tuple[float, float, float]
    net: dict[str, tuple[int, ...]]  # interface -> NET_COUNTERS
    disk: tuple[int, ...] | None  # read_bytes, write_bytes, read_count, write_count, busy_ms; None: no disk

    def host_row(self) -> str:
        """Its host.csv row."""
        memory = self.memory
        disk = ",,,," if self.disk is None else ",".join("" if value is None else str(value) for value in self.disk)
        return (
            f"{self.ts_ms},{','.join(map(str, self.cpu_ms))},{memory['mem_total_kb']},{memory['mem_available_kb']},"
            f"{memory['mem_used_kb']},{memory['mem_free_kb']},{memory['swap_used_kb']},"
            f"{self.load[0]!r},{self.load[1]!r},{self.load[2]!r},{disk}"
        )

    def cpu_rows(self) -> list[str]:
        """Its host_cpus.csv rows, one per CPU."""
        return [f"{self.ts_ms},{cpu},{','.join(map(str, ms))}" for cpu, ms in self.cpu_ms_per_core]

    def net_rows(self) -> list[str]:
        """Its host_net.csv rows, one per interface."""
        return [f"{self.ts_ms},{_csv_text(nic)},{','.join(map(str, c))}" for nic, c in self.net.items()]


def _csv_text(value: str) -> str:
    """A CSV field: quoted when it holds a comma, a quote or a line break."""
    if any(mark in value for mark in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


class HostSampler:
    """Host samples from /proc files opened once; ``close()`` when done.

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
        self._net_read: tuple[bytes | None, dict[str, tuple[int, ...]]] = (None, {})  # (content, figures)
        self._disk_read: tuple[bytes | None, tuple[int, ...] | None] = (None, None)

    def close(self) -> None:
        for kept in (self._stat, self._meminfo, self._net_dev, self._diskstats):
            if kept is not None:
                kept.close()

    def sample(self, ts_ms: int) -> HostSample:
        """One host sample: CPU (total and per core), memory, load, network, disk."""
        per_core = tuple(
            (cpu, tuple(map(_ticks_to_ms, ticks))) for cpu, ticks in _procfs.cpu_ticks_per_core(self._stat.read(), self._cpus)
        )
        total = tuple(map(sum, zip(*(ms for _, ms in per_core)))) or (0,) * len(_CPU_MODES)  # of the rounded ms
        return HostSample(ts_ms, total, per_core, self._memory(), os.getloadavg(), self._net(), self._disk())

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

    # net/dev and diskstats stay the same byte for byte while there is no traffic: the last figures then.

    def _net(self) -> dict[str, tuple[int, ...]]:
        if self._net_dev is None:
            return {}
        content = self._net_dev.read()
        if content != self._net_read[0]:
            nics = self._net_nowrap(_procfs.net_dev(content))
            self._net_read = (content, {nic: tuple(counters[: len(NET_COUNTERS)]) for nic, counters in sorted(nics.items())})
        return self._net_read[1]

    def _disk(self) -> tuple[int, ...] | None:
        if self._diskstats is None:
            return None
        content = self._diskstats.read()
        if content != self._disk_read[0]:
            disks = self._disk_nowrap(_procfs.disk_stats(content, self._is_whole_disk))
            sums = None
            if disks:
                read_count, write_count, read_bytes, write_bytes, busy_ms = map(sum, zip(*disks.values()))
                sums = (read_bytes, write_bytes, read_count, write_count, busy_ms)
            self._disk_read = (content, sums)
        return self._disk_read[1]


def self_usage() -> dict[str, Any]:
    """The collector's own cumulative CPU and current RSS."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_user_ms": round(usage.ru_utime * 1000),
        "cpu_system_ms": round(usage.ru_stime * 1000),
        "rss_kb": _procfs.self_rss_kb(),
    }
