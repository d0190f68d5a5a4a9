"""CPU sets: ``"0-1,3" <-> (0, 1, 3)``, and keeping a process on its node's CPUs.

Nodes that share one machine (the local inventory puts three on this one)
each get CPUs of their own (the inventory's ``tracekit_node_cpus``): the
worker and everything it runs stay on them, the collector records them in
node.json and takes the node's host CPU samples from them, and the OpenDC
topology claims them, so a trace never describes more cores than the
measurement had. The format is the kernel's cpulist (``taskset -c``,
``/sys/fs/cgroup/cpuset.cpus``).
"""

from __future__ import annotations

import os

from tracekit.errors import UsageError


def parse_cpu_list(text: str, what: str = "--cpus") -> tuple[int, ...]:
    """``"0-1,3"`` -> (0, 1, 3), sorted and without repeats; UsageError for anything else."""
    cpus: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        try:
            low, high = int(first), int(last) if dash else int(first)
        except ValueError:
            low, high = -1, -1
        if not part or low < 0 or high < low:
            raise UsageError(f"{what} {text!r} is not a CPU list: give CPU numbers and ranges, e.g. 1 or 0-3,6")
        cpus.update(range(low, high + 1))
    return tuple(sorted(cpus))


def format_cpu_list(cpus: tuple[int, ...] | list[int] | set[int]) -> str:
    """(0, 1, 3) -> ``"0-1,3"``."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def usable_cpus() -> tuple[int, ...]:
    """The CPUs this process may run on (its affinity: taskset, a cgroup cpuset, or --cpus)."""
    return tuple(sorted(os.sched_getaffinity(0)))


def check_usable(cpus: tuple[int, ...], what: str = "--cpus") -> tuple[int, ...]:
    """``cpus``, if this process may use them all; UsageError naming the CPUs it may use if not."""
    allowed = set(usable_cpus())
    missing = sorted(set(cpus) - allowed)
    if not cpus or missing:
        raise UsageError(
            f"{what} {format_cpu_list(cpus) or '(empty)'}: this machine lets this process use CPUs "
            f"{format_cpu_list(allowed)} only ({format_cpu_list(missing) or 'none given'} not among them); "
            "give each node CPUs from that list (inventory: tracekit_node_cpus)"
        )
    return cpus


def keep_on(cpus: tuple[int, ...], what: str = "--cpus") -> None:
    """Restrict this process, every thread of it, and what it starts from now on, to ``cpus``."""
    check_usable(cpus, what)
    # sched_setaffinity(0) sets the calling thread's only: set every thread's.
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass  # a thread that just ended
