"""This kernel's cgroup hierarchies, mounted for the tests where nothing mounted them.

A machine with an init (systemd, or a container runtime) has its cgroups at
/sys/fs/cgroup; a bare chroot, such as the fresh-machine check's, has none,
though its kernel has them all. There the workers' tasks would run without a
cgroup of their own and the tests of that would have nothing to test: so,
in that case only, the cgroup2 hierarchy and the v1 hierarchies the kernel
still lets be mounted (cpuacct, memory, pids) are mounted where a machine
has them. The mounts stay for the whole session (several pytest workers use
them); they belong to the chroot's own mount namespace and end with it.
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
                           *((c, ("-t", "cgroup", "-o", c, "cgroup")) for c in ("cpuacct", "memory", "pids"))):  # fmt: skip
            (ROOT / name).mkdir(exist_ok=True)
            if _mount(*argv, str(ROOT / name)):
                mounted.append(name)
            else:  # bound to the other version on this kernel
                (ROOT / name).rmdir()
        return mounted
