"""Golden tests: full /proc/<pid>/cgroup contents -> the expected CgroupInfo."""

from __future__ import annotations

import os

import pytest

from tracekit.collect.cgroup import CgroupInfo, parse_cgroup, read_cgroup

DOCKER = "2b2be4203d5c083f10d73eb279b98731a8d55a5a2859f42da961811b15f3203f"
K8S = "949547b477f3d9bceb743e634bfd37c3dc432ac1cce7a0ac6cff826f2e327764"
CRIO = "23993dab54fe67d0de69ebfed2828c0e9714ba610fdd3d9bb473bb83b3ff481b"
PODMAN = "2b7261c5bb541def61d35901d211a2291a19fae78070310f3669e8b33049b1e8"
POD_UID = "0e54f087-2d08-49d8-908c-67fe74d23090"
POD_UID_SYSTEMD = POD_UID.replace("-", "_")  # systemd slice names cannot hold "-"


def _v1(path: str, systemd_path: str | None = None, unified: str | None = None) -> str:
    """A cgroup v1 file with the 12 controllers of a typical Ubuntu/CentOS host."""
    controllers = ["pids", "hugetlb", "net_cls,net_prio", "memory", "devices", "cpuset",
                   "freezer", "blkio", "perf_event", "cpu,cpuacct", "rdma"]
    lines = [f"{12 - i}:{c}:{'/' if c == 'rdma' else path}" for i, c in enumerate(controllers)]
    lines.append(f"1:name=systemd:{systemd_path or path}")
    if unified is not None:
        lines.append(f"0::{unified}")
    return "\n".join(lines) + "\n"


THIS_SANDBOX = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/68e4dc9c74ba874597bb9148cfa88cf1
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""

CASES = [
    pytest.param(
        THIS_SANDBOX, CgroupInfo("/", None, None, None), id="sandbox-v1-process_api-not-a-container"),
    pytest.param(
        "", CgroupInfo(None, None, None, None), id="empty"),
    pytest.param(
        _v1(f"/docker/{DOCKER}"),
        CgroupInfo(f"/docker/{DOCKER}", DOCKER, "docker", None), id="docker-v1-cgroupfs"),
    pytest.param(
        # Hybrid host: the unified line is not "/", so it is the chosen path (the
        # documented rule), and the docker id is still found on the v1 lines.
        _v1(f"/docker/{DOCKER}", unified="/system.slice/containerd.service"),
        CgroupInfo("/system.slice/containerd.service", DOCKER, "docker", "containerd.service"),
        id="docker-v1-hybrid-unified-not-root"),
    pytest.param(
        _v1(f"/system.slice/docker-{DOCKER}.scope", unified="/"),
        CgroupInfo(f"/system.slice/docker-{DOCKER}.scope", DOCKER, "docker", f"docker-{DOCKER}.scope"),
        id="docker-v1-systemd-driver-hybrid-root"),
    pytest.param(
        f"0::/system.slice/docker-{DOCKER}.scope\n",
        CgroupInfo(f"/system.slice/docker-{DOCKER}.scope", DOCKER, "docker", f"docker-{DOCKER}.scope"),
        id="docker-v2-systemd-driver-host-view"),
    pytest.param(
        # Inside a container with a private cgroup namespace (v2 default) nothing leaks.
        "0::/\n", CgroupInfo("/", None, None, None), id="docker-v2-private-cgroupns"),
    pytest.param(
        _v1(f"/kubepods/burstable/pod{POD_UID}/{K8S}"),
        CgroupInfo(f"/kubepods/burstable/pod{POD_UID}/{K8S}", K8S, "containerd", None),
        id="k8s-v1-cgroupfs-burstable"),
    pytest.param(
        _v1(f"/kubepods/besteffort/pod{POD_UID}/{K8S}"),
        CgroupInfo(f"/kubepods/besteffort/pod{POD_UID}/{K8S}", K8S, "containerd", None),
        id="k8s-v1-cgroupfs-besteffort"),
    pytest.param(
        f"0::/kubepods/pod{POD_UID}/{K8S}\n",
        CgroupInfo(f"/kubepods/pod{POD_UID}/{K8S}", K8S, "containerd", None),
        id="k8s-v2-cgroupfs-guaranteed"),
    pytest.param(
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID_SYSTEMD}.slice"
        f"/cri-containerd-{K8S}.scope\n",
        CgroupInfo(
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID_SYSTEMD}.slice"
            f"/cri-containerd-{K8S}.scope",
            K8S, "containerd", f"cri-containerd-{K8S}.scope"),
        id="k8s-v2-systemd-cri-containerd"),
    pytest.param(
        # The container's own cgroup is not a unit; the enclosing containerd.service is.
        _v1(f"/system.slice/containerd.service/kubepods-besteffort-pod{POD_UID_SYSTEMD}.slice"
            f":cri-containerd:{K8S}"),
        CgroupInfo(
            f"/system.slice/containerd.service/kubepods-besteffort-pod{POD_UID_SYSTEMD}.slice"
            f":cri-containerd:{K8S}",
            K8S, "containerd", "containerd.service"),
        id="k8s-v1-containerd-service-colon-form"),
    pytest.param(
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID_SYSTEMD}.slice"
        f"/crio-{CRIO}.scope\n",
        CgroupInfo(
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID_SYSTEMD}.slice"
            f"/crio-{CRIO}.scope",
            CRIO, "cri-o", f"crio-{CRIO}.scope"),
        id="crio-v2-systemd"),
    pytest.param(
        # conmon monitors the container from outside it: not the container.
        _v1(f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID_SYSTEMD}.slice"
            f"/crio-conmon-{CRIO}.scope"),
        CgroupInfo(
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID_SYSTEMD}.slice"
            f"/crio-conmon-{CRIO}.scope",
            None, None, f"crio-conmon-{CRIO}.scope"),
        id="crio-conmon-v1-not-the-container"),
    pytest.param(
        _v1(f"/machine.slice/libpod-{PODMAN}.scope"),
        CgroupInfo(f"/machine.slice/libpod-{PODMAN}.scope", PODMAN, "podman", f"libpod-{PODMAN}.scope"),
        id="podman-v1-rootful"),
    pytest.param(
        f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{PODMAN}.scope\n",
        CgroupInfo(
            f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{PODMAN}.scope",
            PODMAN, "podman", f"libpod-{PODMAN}.scope"),
        id="podman-v2-rootless"),
    pytest.param(
        f"0::/machine.slice/libpod-{PODMAN}.scope/container\n",
        CgroupInfo(f"/machine.slice/libpod-{PODMAN}.scope/container", PODMAN, "podman",
                   f"libpod-{PODMAN}.scope"),
        id="podman-v2-nested-container"),
    pytest.param(
        f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-{PODMAN}.scope\n",
        CgroupInfo(
            f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-{PODMAN}.scope",
            None, None, f"libpod-conmon-{PODMAN}.scope"),
        id="podman-conmon-v2-not-the-container"),
    pytest.param(
        # A Tracekit task's container (podman --cgroup-manager cgroupfs --cgroup-parent <the task's cgroup>),
        # as read on a hybrid machine: the v1 hierarchies and the unified one alike.
        "".join(f"{i}:{c}:/tracekit/r1/cloud1.1a2b3c4d/t00000-1/libpod-{PODMAN}\n" for i, c in
                enumerate(("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"), 1))
        + f"9:name=systemd:/tracekit/r1/cloud1.1a2b3c4d/t00000-1/libpod-{PODMAN}\n"
        + f"0::/tracekit/r1/cloud1.1a2b3c4d/t00000-1/libpod-{PODMAN}\n",
        CgroupInfo(f"/tracekit/r1/cloud1.1a2b3c4d/t00000-1/libpod-{PODMAN}", PODMAN, "podman", None),
        id="podman-cgroupfs-below-a-tracekit-task"),
    pytest.param(
        _v1("/tracekit/r1/cloud1.1a2b3c4d/t00000-1/conmon"),
        CgroupInfo("/tracekit/r1/cloud1.1a2b3c4d/t00000-1/conmon", None, None, None),
        id="podman-cgroupfs-conmon-not-the-container"),
    pytest.param(
        _v1("/lxc/web01"), CgroupInfo("/lxc/web01", "web01", "lxc", None), id="lxc-v1"),
    pytest.param(
        "0::/lxc.payload.build-box\n",
        CgroupInfo("/lxc.payload.build-box", "build-box", "lxc", None), id="lxc-v2-payload"),
    pytest.param(
        _v1("/user.slice", systemd_path="/user.slice/user-1000.slice/session-3.scope", unified="/"),
        CgroupInfo("/user.slice/user-1000.slice/session-3.scope", None, None, "session-3.scope"),
        id="systemd-session-v1-hybrid"),
    pytest.param(
        "0::/system.slice/nginx.service\n",
        CgroupInfo("/system.slice/nginx.service", None, None, "nginx.service"), id="systemd-service-v2"),
    pytest.param(
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/"
        "app-gnome-firefox-4242.scope\n",
        CgroupInfo(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-4242.scope",
            None, None, "app-gnome-firefox-4242.scope"),
        id="systemd-desktop-app-v2"),
    pytest.param(
        # No name=systemd hierarchy: fall back to the cpu controller's path.
        "5:memory:/batch\n4:cpu,cpuacct:/jobs/render\n3:blkio:/\n",
        CgroupInfo("/jobs/render", None, None, None), id="v1-no-systemd-uses-cpu"),
    pytest.param(
        "0::/user.slice\n", CgroupInfo("/user.slice", None, None, None), id="v2-slice-is-not-a-unit"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_parse_cgroup(text: str, expected: CgroupInfo) -> None:
    assert parse_cgroup(text) == expected


def test_read_own_cgroup() -> None:
    info = read_cgroup(os.getpid())
    assert isinstance(info, CgroupInfo)
    assert info.path is not None


def test_read_missing_process_is_all_none() -> None:
    assert read_cgroup(2**22 + 7) == CgroupInfo(None, None, None, None)
