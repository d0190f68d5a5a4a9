"""Node facts: ``/proc, /sys, lscpu, psutil -> one JSON-ready dict per machine``.

Each fact is a source read (a file or a command) plus a pure parser that turns
its text into a value, so the parsers can be tested with real captured text.
``node_facts`` is the only function that reads; everything it returns is
plain JSON (str, int, float, bool, None, list, dict).
"""

from __future__ import annotations

import functools
import math
import os
import platform
import re
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import psutil

from tracekit import cpuset
from tracekit.errors import UsageError

CPUFREQ_MAX_PATH = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"
CPUINFO_PATH = "/proc/cpuinfo"
# os-release(5): /etc/os-release wins, /usr/lib/os-release is the vendor fallback.
OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
CGROUP2_MARKER = "/sys/fs/cgroup/cgroup.controllers"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
PID_NAMESPACE_LINK = "/proc/self/ns/pid"
LSCPU_TIMEOUT_S = 5

# Keys naming the CPU in /proc/cpuinfo, best first: x86 has "model name",
# Raspberry Pi style boards have "Model"/"Hardware", MIPS has "cpu model".
_CPUINFO_MODEL_KEYS = ("model name", "Model", "Hardware", "cpu model")
_MODEL_GHZ = re.compile(r"@\s*(\d+(?:[.,]\d+)?)\s*GHz", re.IGNORECASE)


class CpuSpeed(NamedTuple):
    """Nominal CPU speed and where it came from (so readers know how far to trust it)."""

    mhz: float | None
    source: str  # "override", "cpufreq", "lscpu", "cpuinfo", "model-name" or "unknown"


# --- pure parsers: text in, value out ------------------------------------------


def _positive_float(text: str) -> float | None:
    """``"3600,0000"`` or ``"3600.0000"`` -> 3600.0; None for garbage, zero, nan, inf."""
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _key_values(text: str, separator: str = ":") -> list[tuple[str, str]]:
    """``"key<sep> value"`` lines -> [(key, value)] in file order, whitespace stripped."""
    pairs = []
    for line in text.splitlines():
        key, found, value = line.partition(separator)
        if found:
            pairs.append((key.strip(), value.strip()))
    return pairs


def _first_value(text: str, key: str) -> str | None:
    return next((value for k, value in _key_values(text) if k == key), None)


def parse_cpufreq_max_khz(text: str) -> float | None:
    """cpufreq ``cpuinfo_max_freq`` (kHz) -> MHz, e.g. ``"3700000\\n"`` -> 3700.0."""
    khz = _positive_float(text)
    return khz / 1000.0 if khz is not None else None


def parse_lscpu_mhz(text: str) -> float | None:
    """``LC_ALL=C lscpu`` output -> MHz: "CPU max MHz" (nominal top speed), else "CPU MHz"."""
    # Newer lscpu indents keys as a tree, so keys are compared after stripping.
    for key in ("CPU max MHz", "CPU MHz"):
        value = _first_value(text, key)
        mhz = _positive_float(value) if value is not None else None
        if mhz is not None:
            return mhz
    return None


def parse_cpuinfo_mhz(text: str) -> float | None:
    """/proc/cpuinfo -> the first ``cpu MHz`` value (current speed of cpu0)."""
    value = _first_value(text, "cpu MHz")
    return _positive_float(value) if value is not None else None


def parse_cpuinfo_model(text: str) -> str | None:
    """/proc/cpuinfo -> CPU or board model name; None when the kernel names none (arm64)."""
    pairs = _key_values(text)
    for wanted in _CPUINFO_MODEL_KEYS:
        for key, value in pairs:
            if key == wanted and value:
                return value
    return None


def parse_model_name_ghz(model: str) -> float | None:
    """``"Intel(R) Xeon(R) CPU E5-2630 v4 @ 2.20GHz"`` -> 2200.0; None without ``@ x.xxGHz``."""
    match = _MODEL_GHZ.search(model)
    ghz = _positive_float(match.group(1)) if match else None
    return ghz * 1000.0 if ghz is not None else None


def parse_os_release(text: str) -> str | None:
    """os-release(5) text -> PRETTY_NAME, e.g. ``"Debian GNU/Linux 12 (bookworm)"``."""
    for key, value in _key_values(text, separator="="):
        if key == "PRETTY_NAME":
            # Values are shell-quoted; a matching pair of quotes is not part of the name.
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            return value or None
    return None


# --- readers: the only code touching the machine -------------------------------


def _read_text(path: str) -> str | None:
    """File content, or None when missing/unreadable (facts are best effort)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _run_lscpu() -> str | None:
    """``lscpu`` output in the C locale, or None when missing, failing or hung."""
    try:
        done = subprocess.run(
            ["lscpu"],
            env={**os.environ, "LC_ALL": "C"},  # English labels and "." decimals
            capture_output=True,
            text=True,
            timeout=LSCPU_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def validate_cpu_mhz(override_mhz: float | None) -> float | None:
    """The user's --cpu-mhz as a float; UsageError unless a positive finite number."""
    if override_mhz is None:
        return None
    is_number = isinstance(override_mhz, (int, float)) and not isinstance(override_mhz, bool)
    mhz = float(override_mhz) if is_number else math.nan
    if not (math.isfinite(mhz) and mhz > 0):
        raise UsageError(
            f"invalid CPU speed {override_mhz!r}: "
            "--cpu-mhz must be a positive number of MHz, e.g. 2400"
        )
    return mhz


def _parse_if_any(text: str | None, parse: Callable[[str], float | None]) -> float | None:
    return parse(text) if text is not None else None


def detect_cpu_speed(override_mhz: float | None = None) -> CpuSpeed:
    """Best available nominal CPU speed, most trustworthy source first."""
    override = validate_cpu_mhz(override_mhz)
    if override is not None:
        return CpuSpeed(override, "override")
    cpuinfo = functools.cache(lambda: _read_text(CPUINFO_PATH) or "")
    sources = (
        # cpufreq max is the hardware's rated top speed; absent on most VMs.
        ("cpufreq", lambda: _parse_if_any(_read_text(CPUFREQ_MAX_PATH), parse_cpufreq_max_khz)),
        ("lscpu", lambda: _parse_if_any(_run_lscpu(), parse_lscpu_mhz)),
        # "cpu MHz" is a momentary reading (or the hypervisor's TSC speed), so it ranks lower.
        ("cpuinfo", lambda: parse_cpuinfo_mhz(cpuinfo())),
        ("model-name", lambda: _parse_if_any(parse_cpuinfo_model(cpuinfo()), parse_model_name_ghz)),
    )
    for source, read in sources:
        mhz = read()
        if mhz is not None:
            return CpuSpeed(mhz, source)
    return CpuSpeed(None, "unknown")


def cgroup_version() -> int:
    """2 on a unified (cgroup v2) hierarchy, else 1."""
    return 2 if os.path.exists(CGROUP2_MARKER) else 1


def interfaces() -> list[dict[str, Any]]:
    """Network interfaces with link state, speed, MTU, IPv4 addresses and MAC, by name."""
    stats = psutil.net_if_stats()
    addrs = psutil.net_if_addrs()
    result = []
    for name in sorted(set(stats) | set(addrs)):
        stat = stats.get(name)
        nic_addrs = addrs.get(name, [])
        mac = next((a.address for a in nic_addrs if a.family == psutil.AF_LINK), None)
        result.append(
            {
                "name": name,
                "is_up": bool(stat.isup) if stat else False,
                # psutil reports 0 when the driver does not know (lo, most virtual NICs).
                "speed_mbps": int(stat.speed) if stat and stat.speed > 0 else 0,
                "mtu": int(stat.mtu) if stat else 0,
                "ipv4": [a.address for a in nic_addrs if a.family == socket.AF_INET],
                "mac": mac,
            }
        )
    return result


def _os_pretty_name() -> str | None:
    for path in OS_RELEASE_PATHS:
        text = _read_text(path)
        if text is not None:
            return parse_os_release(text)
    return None


def start_time_correction_ms() -> int:
    """What to add to a process's create_time_ms to get its real start time.

    The kernel gives boot time in whole seconds (/proc/stat btime), so
    create times (btime + start ticks, the same for every reader, hence a
    stable process key) are early by up to a second. The precise boot time is
    now minus the time since boot.
    """
    precise_boot_ms = (time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)) * 1000
    return round(precise_boot_ms - int(psutil.boot_time()) * 1000)


def machine_identity() -> dict[str, str | None]:
    """Which kernel and which process table this node runs on.

    Nodes with the same boot_id share one machine's CPUs and memory (several
    inventory nodes on one machine, or containers on one kernel); with the
    same PID namespace as well, they see the same processes under the same
    (pid, create time). Parse and verify use this to check that no node's
    trace holds another node's processes, and export that the topology
    claims no more cores than the machines had.
    """
    boot_id = (_read_text(BOOT_ID_PATH) or "").strip() or None
    try:
        pid_namespace: str | None = os.readlink(PID_NAMESPACE_LINK)
    except OSError:
        pid_namespace = None
    return {"boot_id": boot_id, "pid_namespace": pid_namespace}


def node_facts(
    node: str,
    stage: str,
    role: str | None = None,
    cpu_mhz_override: float | None = None,
    cpus_assigned: bool = False,
) -> dict[str, Any]:
    """Everything a report needs to know about this machine, as a JSON-ready dict.

    ``cpus`` are the CPUs this process may use (its affinity): the node's
    own when ``cpus_assigned`` (the collector was given --cpus), else
    whatever the machine leaves it (all of them, unless taskset or a cgroup
    cpuset says otherwise).
    """
    # First, so a bad --cpu-mhz fails before any other probing.
    speed = detect_cpu_speed(cpu_mhz_override)
    cores_logical = psutil.cpu_count()
    cpus = cpuset.usable_cpus()
    return {
        "node": node,
        "stage": stage,
        "role": role,
        "hostname": socket.gethostname(),
        "os": _os_pretty_name(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": parse_cpuinfo_model(_read_text(CPUINFO_PATH) or ""),
        "cores_logical": cores_logical,
        "cores_physical": psutil.cpu_count(logical=False) or cores_logical,
        "cpus": list(cpus),
        "cores_usable": len(cpus),
        "cpus_source": "assigned" if cpus_assigned else "affinity",
        "machine": machine_identity(),
        "cpu_mhz": speed.mhz,
        "cpu_mhz_source": speed.source,
        "mem_kb": psutil.virtual_memory().total // 1024,
        "cgroup_version": cgroup_version(),
        "boot_time_ms": int(psutil.boot_time() * 1000),
        "start_time_correction_ms": start_time_correction_ms(),
        "clk_tck": os.sysconf("SC_CLK_TCK"),
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "interfaces": interfaces(),
    }
