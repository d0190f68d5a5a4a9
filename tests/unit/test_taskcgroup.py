"""Where a worker makes its tasks' cgroups: golden /proc/self/mountinfo and /proc/self/cgroup texts."""

from __future__ import annotations

import re
from pathlib import Path

from tracekit.taskcgroup import TRAMPOLINE, Hierarchy, TaskCgroups, cgroup_name, v1_hierarchies, v2_hierarchy

# This machine's kind: cgroup v1 hierarchies (cpu and cpuacct apart) beside an empty v2 one.
HYBRID_MOUNTINFO = """\
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
34 30 0:30 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu
35 30 0:31 / /sys/fs/cgroup/cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
37 30 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
"""
HYBRID_CGROUP = "8:pids:/\n4:memory:/process_api/67b5\n2:cpuacct:/\n1:cpu:/\n0::/\n"

# Debian 11 / Ubuntu 20.04 with systemd: cpu and cpuacct co-mounted, the process in a service's cgroup.
SYSTEMD_V1_MOUNTINFO = """\
25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
28 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:6 - cgroup cgroup rw,xattr,name=systemd
32 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
33 25 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
"""
SYSTEMD_V1_CGROUP = ("11:memory:/system.slice/tracekit-worker.service\n"
                     "4:cpu,cpuacct:/system.slice/tracekit-worker.service\n"
                     "1:name=systemd:/system.slice/tracekit-worker.service\n")  # fmt: skip

# A pure cgroup v2 machine (Debian 12 and most clusters with systemd): no v1 hierarchy at all.
V2_MOUNTINFO = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
V2_CGROUP = "0::/user.slice/user-1000.slice/session-3.scope\n"


def test_a_hybrid_machine_gives_the_three_hierarchies_with_this_process_s_place_in_each():
    found = v1_hierarchies(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    assert found == {
        "cpuacct": Hierarchy("cpuacct", "/sys/fs/cgroup/cpuacct", "/"),
        "memory": Hierarchy("memory", "/sys/fs/cgroup/memory", "/process_api/67b5"),
        "pids": Hierarchy("pids", "/sys/fs/cgroup/pids", "/"),
    }
    assert found["memory"].own_dir == Path("/sys/fs/cgroup/memory/process_api/67b5")


def test_co_mounted_controllers_and_a_service_s_cgroup():
    found = v1_hierarchies(SYSTEMD_V1_MOUNTINFO, SYSTEMD_V1_CGROUP)
    assert set(found) == {"cpuacct", "memory"}  # no pids hierarchy mounted: none made there
    assert found["cpuacct"].own_dir == Path("/sys/fs/cgroup/cpu,cpuacct/system.slice/tracekit-worker.service")


def test_a_cgroup_v2_machine_has_no_v1_hierarchy():
    assert v1_hierarchies(V2_MOUNTINFO, V2_CGROUP) == {}


def test_the_v2_hierarchy_and_this_process_s_place_in_it():
    assert v2_hierarchy(V2_MOUNTINFO, V2_CGROUP) == Hierarchy(
        "unified", "/sys/fs/cgroup", "/user.slice/user-1000.slice/session-3.scope")
    # A hybrid machine's unified hierarchy is there too; the v1 cpuacct beside it is chosen (TaskCgroups.detect).
    assert v2_hierarchy(HYBRID_MOUNTINFO, HYBRID_CGROUP) == Hierarchy("unified", "/sys/fs/cgroup/unified", "/")
    assert v2_hierarchy(SYSTEMD_V1_MOUNTINFO, SYSTEMD_V1_CGROUP) is None  # legacy: no v2 at all


def test_the_trampoline_is_constant_and_takes_the_cgroups_and_the_argv_as_literal_arguments(tmp_path):
    argv = ["ffmpeg", "-i", "$(reboot)", "; rm -rf /", '"$0"', "--"]
    v2 = TaskCgroups({"unified": tmp_path / "u"}, version=2).task("t1-1")
    assert v2.trampoline(argv, "/work dir") == [
        "/bin/sh", "-c", TRAMPOLINE, "tracekit-task", str(tmp_path / "u" / "t1-1" / "cgroup.procs"), "--", "/work dir", *argv]
    v1 = TaskCgroups({"cpuacct": tmp_path / "a", "memory": tmp_path / "m"}, version=1).task("t1-1")
    assert v1.trampoline(argv) == ["/bin/sh", "-c", TRAMPOLINE, "tracekit-task", str(tmp_path / "a" / "t1-1" / "cgroup.procs"),
                                   str(tmp_path / "m" / "t1-1" / "cgroup.procs"), "--", "", *argv]  # fmt: skip
    assert "$@" in TRAMPOLINE and "ffmpeg" not in TRAMPOLINE  # the script never holds a value


def test_a_task_cgroup_s_name_is_a_safe_folder_name_whatever_the_task_id():
    assert cgroup_name("t00001-clip", 2) == "t00001-clip-2"
    odd = cgroup_name("../a b/ç,\"x", 1)
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*-1", odd) and "/" not in odd and not odd.startswith(".")
    assert cgroup_name("a b", 1) != cgroup_name("a_b", 1)  # told apart by the hash
    assert all(not cgroup_name(odd, 1).startswith(".") for odd in (".", "..", ".hidden", ""))
    assert len(cgroup_name("x" * 500, 1)) < 100
