"""Linux /proc readers for one process: ``pid -> ProcStat / ProcCounters``.

The per-process hot path of the collector. One ``/proc/<pid>/stat`` read gives
identity (start time), name, parent, CPU and RSS together, so each sample also
proves it still belongs to the same process (a reused PID has another start
time). Units are converted with the machine's real clock tick and page size.
"""

from __future__ import annotations

import os
from typing import NamedTuple

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_MS_PER_TICK = 1000.0 / CLK_TCK
_KB_PER_PAGE = PAGE_SIZE // 1024


def _boot_time_ms() -> int:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return int(line.split()[1]) * 1000
    raise OSError("no btime in /proc/stat")


BOOT_TIME_MS = _boot_time_ms()


class ProcStat(NamedTuple):
    """What /proc/<pid>/stat says about a process."""

    pid: int
    comm: str
    state: str  # R, S, D, Z (zombie: exited, not yet reaped), ...
    ppid: int
    create_time_ms: int  # epoch ms, same value for every reader (boot time + start ticks)
    cpu_user_ms: float  # cumulative, this process's threads only
    cpu_system_ms: float
    num_threads: int
    rss_kb: int


class ProcCounters(NamedTuple):
    """Counters from /proc/<pid>/io and /proc/<pid>/status (None when unreadable)."""

    read_bytes: int | None
    write_bytes: int | None
    ctx_voluntary: int | None
    ctx_involuntary: int | None


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 8192)
    finally:
        os.close(fd)


def read_stat(pid: int) -> ProcStat:
    """Parse /proc/<pid>/stat; raises OSError (FileNotFoundError, ...) if gone."""
    data = _read(f"/proc/{pid}/stat")
    # comm may hold spaces and parentheses: it ends at the LAST ')'.
    open_paren = data.index(b"(")
    close_paren = data.rindex(b")")
    comm = data[open_paren + 1 : close_paren].decode(errors="replace")
    fields = data[close_paren + 2 :].split()
    # fields[0] is field 3 (state) of proc(5).
    return ProcStat(
        pid=pid,
        comm=comm,
        state=fields[0].decode(),
        ppid=int(fields[1]),
        create_time_ms=BOOT_TIME_MS + round(int(fields[19]) * _MS_PER_TICK),
        cpu_user_ms=int(fields[11]) * _MS_PER_TICK,
        cpu_system_ms=int(fields[12]) * _MS_PER_TICK,
        num_threads=int(fields[17]),
        rss_kb=int(fields[21]) * _KB_PER_PAGE,
    )


def read_counters(pid: int) -> ProcCounters:
    """I/O bytes and context switches; fields the caller may not read are None."""
    read_bytes = write_bytes = None
    try:
        for line in _read(f"/proc/{pid}/io").splitlines():
            if line.startswith(b"read_bytes:"):
                read_bytes = int(line.split()[1])
            elif line.startswith(b"write_bytes:"):
                write_bytes = int(line.split()[1])
    except PermissionError:
        pass
    ctx_voluntary = ctx_involuntary = None
    status = _read(f"/proc/{pid}/status")
    at = status.find(b"voluntary_ctxt_switches:")
    if at >= 0:
        for line in status[at - 3 :].splitlines():
            if line.startswith(b"voluntary_ctxt_switches:"):
                ctx_voluntary = int(line.split()[1])
            elif line.startswith(b"nonvoluntary_ctxt_switches:"):
                ctx_involuntary = int(line.split()[1])
    return ProcCounters(read_bytes, write_bytes, ctx_voluntary, ctx_involuntary)


def read_cmdline(pid: int) -> list[str]:
    """The argv of a process ([] for kernel threads and zombies)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        data = f.read()
    return [arg.decode(errors="replace") for arg in data.split(b"\0") if arg]


def has_exited(pid: int) -> bool:
    """True when the process is gone or a zombie (exited, not yet reaped)."""
    try:
        return read_stat(pid).state == "Z"
    except OSError:
        return True


def list_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]
