"""This kernel's cgroup hierarchies, mounted for the tests where nothing mounted them.

A machine with an init (systemd, or a container runtime) has its cgroups at
/sys/fs/cgroup; a bare chroot, such as the fresh-machine check's, has none,
though its kernel has them all. There the workers' tasks would run without a
cgroup of their own and the tests of that would have nothing to test: so,
in that case only, the cgroup2 hierarchy and every v1 hierarchy the kernel
has (/proc/cgroups: the controllers bound to v1 on this kernel; an OCI
runtime wants them all, devices and freezer too) are mounted where a hybrid
machine has them. The mounts stay for the whole session (several pytest
workers use them); they belong to the chroot's own mount namespace and end
with it.
"""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

from tracekit.taskcgroup import cgroup_mount_points

ROOT = Path("/sys/fs/cgroup")
LOCK = Path("/tmp/tracekit-tests-cgroupfs.lock")


def cgroups_mounted() -> bool:
    return bool(cgroup_mount_points(Path("/proc/self/mountinfo").read_text()))


def _mount(*argv: str) -> bool:
    return subprocess.run(["mount", *argv], capture_output=True).returncode == 0


def v1_controllers() -> list[str]:
    """The controllers this kernel has bound to v1 hierarchies (/proc/cgroups: a hierarchy id other than 0)."""
    found = []
    for line in Path("/proc/cgroups").read_text().splitlines()[1:]:
        name, hierarchy, _count, enabled = line.split()
        if hierarchy != "0" and enabled == "1":
            found.append(name)
    return found or ["cpuacct", "memory", "pids"]


def ensure_mounted() -> list[str]:
    """Mount the hierarchies when none is (see the module's doc); return what was mounted here."""
    if cgroups_mounted():
        return []
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest's workers start together
        if cgroups_mounted():
            return []
        if not _mount("-t", "tmpfs", "-o", "mode=755,nosuid,nodev,noexec", "cgroup-root", str(ROOT)):
            return []
        mounted = []
        for name, argv in (("unified", ("-t", "cgroup2", "cgroup2")),
                           *((c, ("-t", "cgroup", "-o", c, "cgroup")) for c in v1_controllers())):  # fmt: skip
            (ROOT / name).mkdir(exist_ok=True)
            if _mount(*argv, str(ROOT / name)):
                mounted.append(name)
            else:  # bound to the other version on this kernel
                (ROOT / name).rmdir()
        return mounted
