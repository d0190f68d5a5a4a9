"""Host samples: ``psutil counters -> one host.jsonl record`` (cumulative).

CPU times are cumulative milliseconds per mode, network and disk counters are
cumulative bytes; ``parse`` turns consecutive samples into rates, so a lost
sample widens one interval and loses nothing.
"""

from __future__ import annotations

import os
from typing import Any

import psutil

_CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def _cpu_ms(times: Any) -> dict[str, int]:
    return {mode: round(getattr(times, mode, 0.0) * 1000) for mode in _CPU_MODES}


def sample_host(ts_ms: int) -> dict[str, Any]:
    """One host record: CPU (total and per core), memory, load, network, disk."""
    per_core = [_cpu_ms(core) for core in psutil.cpu_times(percpu=True)]
    total = {mode: sum(core[mode] for core in per_core) for mode in _CPU_MODES}
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    load1, load5, load15 = os.getloadavg()
    net = psutil.net_io_counters(pernic=True)
    disk = psutil.disk_io_counters(perdisk=False)
    return {
        "ts_ms": ts_ms,
        "cpu_ms": total,
        "cpu_ms_per_core": per_core,
        "mem_total_kb": memory.total // 1024,
        "mem_available_kb": memory.available // 1024,
        "mem_used_kb": memory.used // 1024,
        "mem_free_kb": memory.free // 1024,
        "swap_used_kb": swap.used // 1024,
        "load1": load1,
        "load5": load5,
        "load15": load15,
        "net": {
            nic: {
                "rx_bytes": c.bytes_recv,
                "tx_bytes": c.bytes_sent,
                "rx_packets": c.packets_recv,
                "tx_packets": c.packets_sent,
                "rx_errors": c.errin,
                "tx_errors": c.errout,
                "rx_dropped": c.dropin,
                "tx_dropped": c.dropout,
            }
            for nic, c in sorted(net.items())
        },
        "disk": None
        if disk is None
        else {
            "read_bytes": disk.read_bytes,
            "write_bytes": disk.write_bytes,
            "read_count": disk.read_count,
            "write_count": disk.write_count,
            "busy_ms": getattr(disk, "busy_time", None),
        },
    }


def self_usage() -> dict[str, Any]:
    """The collector's own cumulative CPU and current RSS."""
    me = psutil.Process()
    with me.oneshot():
        cpu = me.cpu_times()
        rss = me.memory_info().rss
    return {
        "cpu_user_ms": round(cpu.user * 1000),
        "cpu_system_ms": round(cpu.system * 1000),
        "rss_kb": rss // 1024,
    }
