"""Golden tests for node facts: real source text -> parsed values, plus live checks."""

from __future__ import annotations

import json
import os
import math
from pathlib import Path

import pytest

from tracekit.collect import topology
from tracekit.collect.topology import (
    CpuSpeed,
    detect_cpu_speed,
    node_facts,
    parse_cpufreq_max_khz,
    parse_cpuinfo_mhz,
    parse_cpuinfo_model,
    parse_lscpu_mhz,
    parse_model_name_ghz,
    parse_os_release,
)
from tracekit.errors import UsageError

# util-linux 2.34 (Ubuntu 20.04), bare-metal Intel Xeon Gold 6154 with cpufreq.
LSCPU_INTEL_XEON = """\
Architecture:                    x86_64
CPU op-mode(s):                  32-bit, 64-bit
Byte Order:                      Little Endian
Address sizes:                   46 bits physical, 48 bits virtual
CPU(s):                          72
On-line CPU(s) list:             0-71
Thread(s) per core:              2
Core(s) per socket:              18
Socket(s):                       2
NUMA node(s):                    2
Vendor ID:                       GenuineIntel
CPU family:                      6
Model:                           85
Model name:                      Intel(R) Xeon(R) Gold 6154 CPU @ 3.00GHz
Stepping:                        4
CPU MHz:                         1200.117
CPU max MHz:                     3700.0000
CPU min MHz:                     1200.0000
BogoMIPS:                        6000.00
Virtualization:                  VT-x
L1d cache:                       1.1 MiB
L1i cache:                       1.1 MiB
L2 cache:                        36 MiB
L3 cache:                        49.5 MiB
NUMA node0 CPU(s):               0-17,36-53
NUMA node1 CPU(s):               18-35,54-71
Flags:                           fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc
"""

# This machine (util-linux 2.38, Debian 12): AMD EPYC guest under KVM, no MHz line at all.
LSCPU_AMD_EPYC_KVM = """\
Architecture:                            x86_64
CPU op-mode(s):                          32-bit, 64-bit
Address sizes:                           48 bits physical, 48 bits virtual
Byte Order:                              Little Endian
CPU(s):                                  2
On-line CPU(s) list:                     0,1
Vendor ID:                               AuthenticAMD
Model name:                              AMD EPYC
CPU family:                              25
Model:                                   1
Thread(s) per core:                      1
Core(s) per socket:                      2
Socket(s):                               1
Stepping:                                1
BogoMIPS:                                4890.80
Flags:                                   fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq hypervisor
Hypervisor vendor:                       KVM
Virtualization type:                     full
L1d cache:                               64 KiB (2 instances)
L1i cache:                               64 KiB (2 instances)
L2 cache:                                1 MiB (2 instances)
L3 cache:                                32 MiB (1 instance)
NUMA node(s):                            1
NUMA node0 CPU(s):                       0,1
Vulnerability Meltdown:                  Not affected
Vulnerability Spec store bypass:         Mitigation; Speculative Store Bypass disabled via prctl
"""

# util-linux 2.37 (Ubuntu 22.04) tree layout, Ampere Altra (Neoverse-N1): keys are indented.
LSCPU_ARM_NEOVERSE = """\
Architecture:            aarch64
  CPU op-mode(s):        32-bit, 64-bit
  Byte Order:            Little Endian
CPU(s):                  80
  On-line CPU(s) list:   0-79
Vendor ID:               ARM
  Model name:            Neoverse-N1
    Model:               1
    Thread(s) per core:  1
    Core(s) per cluster: 80
    Socket(s):           -
    Cluster(s):          1
    Stepping:            r3p1
    Frequency boost:     disabled
    CPU max MHz:         3000.0000
    CPU min MHz:         1000.0000
    BogoMIPS:            50.00
    Flags:               fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
Caches (sum of all):
  L1d:                   5 MiB (80 instances)
  L1i:                   5 MiB (80 instances)
  L2:                    80 MiB (80 instances)
NUMA:
  NUMA node(s):          1
  NUMA node0 CPU(s):     0-79
"""

# lscpu run without LC_ALL=C under a de_DE numeric locale: comma decimals.
LSCPU_COMMA_DECIMALS = """\
Architecture:                    x86_64
Model name:                      Intel(R) Core(TM) i7-7700 CPU @ 3.60GHz
CPU MHz:                         800,029
CPU max MHz:                     3600,0000
CPU min MHz:                     800,0000
BogoMIPS:                        7200,00
"""

# Older lscpu on a VM: only the current-speed line.
LSCPU_ONLY_CPU_MHZ = """\
Architecture:        x86_64
Model name:          Intel(R) Xeon(R) CPU E5-2630 v4 @ 2.20GHz
CPU MHz:             2199.998
BogoMIPS:            4399.99
"""

# This machine's /proc/cpuinfo (first processor block, flags shortened).
CPUINFO_AMD_EPYC = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 1
microcode\t: 0x1000065
cpu MHz\t\t: 2445.406
cache size\t: 512 KB
physical id\t: 0
siblings\t: 2
core id\t\t: 0
cpu cores\t: 2
fpu\t\t: yes
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep
bogomips\t: 4890.80
power management:

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
cpu MHz\t\t: 2445.123
"""

CPUINFO_INTEL_E5 = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 79
model name\t: Intel(R) Xeon(R) CPU E5-2630 v4 @ 2.20GHz
stepping\t: 1
microcode\t: 0xb000038
cpu MHz\t\t: 2197.558
cache size\t: 25600 KB
"""

# Intel guest whose hypervisor hides the speed: only the model name carries it.
CPUINFO_INTEL_NO_MHZ = """\
processor\t: 0
vendor_id\t: GenuineIntel
model\t\t: 79
model name\t: Intel(R) Xeon(R) CPU E5-2630 v4 @ 2.20GHz
"""

# arm64 (Graviton2 / Neoverse-N1): no "cpu MHz" and no model name.
CPUINFO_ARM64 = """\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

processor\t: 1
BogoMIPS\t: 243.75
"""

# Raspberry Pi 4 (32-bit kernel): board name in "Hardware"/"Model" at the end.
CPUINFO_RASPBERRY_PI = """\
processor\t: 0
model name\t: ARMv7 Processor rev 3 (v7l)
BogoMIPS\t: 108.00
CPU implementer\t: 0x41
CPU part\t: 0xd08

Hardware\t: BCM2711
Revision\t: c03114
Serial\t\t: 100000002a5b9c1e
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

CPUINFO_RASPBERRY_PI_64 = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41

Revision\t: c03114
Serial\t\t: 100000002a5b9c1e
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

CPUINFO_MIPS = """\
system type\t\t: MediaTek MT7621 ver:1 eco:3
machine\t\t\t: Ubiquiti EdgeRouter X
processor\t\t: 0
cpu model\t\t: MIPS 1004Kc V2.15
BogoMIPS\t\t: 583.68
"""

OS_RELEASE_DEBIAN = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""

OS_RELEASE_UBUNTU = """\
NAME="Ubuntu"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
ID=ubuntu
ID_LIKE=debian
PRETTY_NAME="Ubuntu 22.04.4 LTS"
VERSION_ID="22.04"
"""

OS_RELEASE_ALPINE = """\
NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.19.1
PRETTY_NAME='Alpine Linux v3.19'
HOME_URL="https://alpinelinux.org/"
"""


# --- cpufreq --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3700000\n", 3700.0),
        ("2200000", 2200.0),
        ("", None),
        ("\n", None),
        ("garbage\n", None),
        ("0\n", None),
    ],
)
def test_parse_cpufreq_max_khz(text, expected):
    assert parse_cpufreq_max_khz(text) == expected


# --- lscpu ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (LSCPU_INTEL_XEON, 3700.0),  # max wins over the momentary "CPU MHz: 1200.117"
        (LSCPU_AMD_EPYC_KVM, None),
        (LSCPU_ARM_NEOVERSE, 3000.0),
        (LSCPU_COMMA_DECIMALS, 3600.0),
        (LSCPU_ONLY_CPU_MHZ, 2199.998),
        ("", None),
        ("CPU max MHz: -\n", None),
    ],
    ids=[
        "intel-xeon",
        "amd-epyc-kvm",
        "arm-neoverse",
        "comma-decimals",
        "only-cpu-mhz",
        "empty",
        "dash",
    ],
)
def test_parse_lscpu_mhz(text, expected):
    assert parse_lscpu_mhz(text) == expected


# --- /proc/cpuinfo --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CPUINFO_AMD_EPYC, 2445.406),  # first processor only
        (CPUINFO_INTEL_E5, 2197.558),
        (CPUINFO_INTEL_NO_MHZ, None),
        (CPUINFO_ARM64, None),
        ("", None),
    ],
)
def test_parse_cpuinfo_mhz(text, expected):
    assert parse_cpuinfo_mhz(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CPUINFO_AMD_EPYC, "AMD EPYC"),  # not fooled by the numeric "model : 1"
        (CPUINFO_INTEL_E5, "Intel(R) Xeon(R) CPU E5-2630 v4 @ 2.20GHz"),
        (CPUINFO_ARM64, None),
        (CPUINFO_RASPBERRY_PI, "ARMv7 Processor rev 3 (v7l)"),
        (CPUINFO_RASPBERRY_PI_64, "Raspberry Pi 4 Model B Rev 1.4"),
        (CPUINFO_MIPS, "MIPS 1004Kc V2.15"),
        ("", None),
    ],
)
def test_parse_cpuinfo_model(text, expected):
    assert parse_cpuinfo_model(text) == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("Intel(R) Xeon(R) CPU E5-2630 v4 @ 2.20GHz", 2200.0),
        ("Intel(R) Xeon(R) Gold 6154 CPU @ 3.00GHz", 3000.0),
        ("Intel(R) Core(TM) i7-7700 CPU @ 3.60GHz", 3600.0),
        ("AMD EPYC", None),
        ("AMD EPYC 7763 64-Core Processor", None),
        ("Neoverse-N1", None),
        ("", None),
    ],
)
def test_parse_model_name_ghz(model, expected):
    assert parse_model_name_ghz(model) == expected


# --- os-release -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (OS_RELEASE_DEBIAN, "Debian GNU/Linux 12 (bookworm)"),
        (OS_RELEASE_UBUNTU, "Ubuntu 22.04.4 LTS"),
        (OS_RELEASE_ALPINE, "Alpine Linux v3.19"),
        ('NAME="Foo"\n', None),
        ("", None),
    ],
)
def test_parse_os_release(text, expected):
    assert parse_os_release(text) == expected


# --- detect_cpu_speed -----------------------------------------------------------


def test_detect_cpu_speed_override():
    assert detect_cpu_speed(2400) == CpuSpeed(2400.0, "override")
    assert detect_cpu_speed(2400.5) == CpuSpeed(2400.5, "override")


def test_detect_cpu_speed_this_machine():
    speed = detect_cpu_speed()
    assert speed.source in {"cpufreq", "lscpu", "cpuinfo", "model-name", "unknown"}
    if speed.source == "unknown":
        assert speed.mhz is None
    else:
        assert speed.mhz is not None and speed.mhz > 0


def _fake_machine(monkeypatch, files: dict[str, str], lscpu: str | None) -> None:
    monkeypatch.setattr(topology, "_read_text", files.get)
    monkeypatch.setattr(topology, "_run_lscpu", lambda: lscpu)


@pytest.mark.parametrize(
    ("files", "lscpu", "expected"),
    [
        (
            {topology.CPUFREQ_MAX_PATH: "3700000\n", topology.CPUINFO_PATH: CPUINFO_INTEL_E5},
            LSCPU_INTEL_XEON,
            CpuSpeed(3700.0, "cpufreq"),
        ),
        ({topology.CPUINFO_PATH: CPUINFO_INTEL_E5}, LSCPU_ARM_NEOVERSE, CpuSpeed(3000.0, "lscpu")),
        (
            {topology.CPUINFO_PATH: CPUINFO_AMD_EPYC},
            LSCPU_AMD_EPYC_KVM,
            CpuSpeed(2445.406, "cpuinfo"),
        ),
        ({topology.CPUINFO_PATH: CPUINFO_AMD_EPYC}, None, CpuSpeed(2445.406, "cpuinfo")),
        ({topology.CPUINFO_PATH: CPUINFO_INTEL_NO_MHZ}, None, CpuSpeed(2200.0, "model-name")),
        ({topology.CPUINFO_PATH: CPUINFO_ARM64}, None, CpuSpeed(None, "unknown")),
        ({}, None, CpuSpeed(None, "unknown")),
        ({topology.CPUFREQ_MAX_PATH: "garbage"}, "", CpuSpeed(None, "unknown")),
    ],
    ids=[
        "cpufreq",
        "lscpu",
        "cpuinfo-after-lscpu-without-mhz",
        "cpuinfo-no-lscpu",
        "model-name",
        "arm64-unknown",
        "nothing",
        "garbage",
    ],
)
def test_detect_cpu_speed_fallback_order(monkeypatch, files, lscpu, expected):
    _fake_machine(monkeypatch, files, lscpu)
    assert detect_cpu_speed() == expected


def test_detect_cpu_speed_override_skips_probing(monkeypatch):
    def must_not_run():
        raise AssertionError("lscpu should not run when overridden")

    monkeypatch.setattr(topology, "_run_lscpu", must_not_run)
    assert detect_cpu_speed(1800) == CpuSpeed(1800.0, "override")


def test_run_lscpu_missing_binary(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert topology._run_lscpu() is None


# --- node_facts -----------------------------------------------------------------

EXPECTED_KEYS = {
    "node", "stage", "role", "hostname", "os", "kernel", "arch", "cpu_model",
    "cores_logical", "cores_physical", "cpu_mhz", "cpu_mhz_source", "mem_kb",
    "cgroup_version", "boot_time_ms", "start_time_correction_ms", "clk_tck", "page_size", "interfaces",
    "cpus", "cores_usable", "cpus_source", "machine",
}


def test_node_facts_this_machine():
    facts = node_facts("cloud1", "cloud")
    assert set(facts) == EXPECTED_KEYS
    assert (facts["node"], facts["stage"], facts["role"]) == ("cloud1", "cloud", None)
    assert isinstance(facts["hostname"], str) and facts["hostname"]
    assert facts["os"] is None or isinstance(facts["os"], str)
    assert isinstance(facts["kernel"], str) and facts["kernel"]
    assert isinstance(facts["arch"], str) and facts["arch"]
    assert facts["cpu_model"] is None or isinstance(facts["cpu_model"], str)
    assert isinstance(facts["cores_logical"], int) and facts["cores_logical"] >= 1
    assert isinstance(facts["cores_physical"], int)
    assert 1 <= facts["cores_physical"] <= facts["cores_logical"]
    assert facts["cpu_mhz_source"] != "override"
    assert facts["cpu_mhz"] is None or facts["cpu_mhz"] > 0
    assert isinstance(facts["mem_kb"], int) and facts["mem_kb"] > 0
    assert facts["cgroup_version"] in (1, 2)
    assert isinstance(facts["boot_time_ms"], int) and facts["boot_time_ms"] > 0
    # The CPUs this process may use, and which kernel and process table it is on.
    assert facts["cpus"] == sorted(os.sched_getaffinity(0)) and facts["cores_usable"] == len(facts["cpus"])
    assert facts["cpus_source"] == "affinity"
    assert facts["machine"]["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert facts["machine"]["pid_namespace"].startswith("pid:[")
    assert facts["clk_tck"] > 0 and facts["page_size"] >= 4096
    names = [nic["name"] for nic in facts["interfaces"]]
    assert "lo" in names and names == sorted(names)
    for nic in facts["interfaces"]:
        assert set(nic) == {"name", "is_up", "speed_mbps", "mtu", "ipv4", "mac"}
        assert isinstance(nic["is_up"], bool)
        assert isinstance(nic["speed_mbps"], int) and nic["speed_mbps"] >= 0
        assert isinstance(nic["mtu"], int)
        assert all(isinstance(ip, str) for ip in nic["ipv4"])
        assert nic["mac"] is None or isinstance(nic["mac"], str)
    lo = next(nic for nic in facts["interfaces"] if nic["name"] == "lo")
    assert "127.0.0.1" in lo["ipv4"]
    json.dumps(facts)  # JSON-ready


def test_node_facts_with_role_and_override():
    facts = node_facts("edge1", "edge", role="encoder", cpu_mhz_override=2400)
    assert facts["role"] == "encoder"
    assert (facts["cpu_mhz"], facts["cpu_mhz_source"]) == (2400.0, "override")


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "fast", True])
def test_invalid_override_raises_usage_error(bad):
    with pytest.raises(UsageError) as excinfo:
        node_facts("cloud1", "cloud", cpu_mhz_override=bad)
    message = str(excinfo.value)
    assert "\n" not in message
    assert repr(bad) in message and "--cpu-mhz must be a positive number of MHz" in message
    with pytest.raises(UsageError):
        detect_cpu_speed(bad)


def test_start_time_correction_gives_real_process_start_times():
    # create_time_ms rests on a whole-second boot time; corrected, it must
    # match the wall clock at which the process was forked.
    import subprocess
    import time

    from tracekit.procfs import read_stat
    from tracekit.collect.topology import start_time_correction_ms

    correction = start_time_correction_ms()
    assert -50 <= correction <= 1050
    before_ms = time.time() * 1000
    child = subprocess.Popen(["sleep", "5"])
    try:
        started_ms = read_stat(child.pid).create_time_ms + correction
    finally:
        child.kill()
        child.wait()
    assert abs(started_ms - before_ms) < 100
