"""Parse /proc/<pid>/cgroup: ``text -> CgroupInfo(path, container_id, runtime, systemd_unit)``.

Each line of the file is ``hierarchy-ID:controller-list:cgroup-path``; cgroup v2
has the single line ``0::/path`` and hybrid hosts show both kinds. The parser
picks one path to report, then recognises the container runtime (if any) from
the path names that docker, containerd, cri-o, podman and lxc create, and the
systemd unit the process runs in. Pure string work apart from ``read_cgroup``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_HEX64 = r"(?P<id>[0-9a-f]{64})"
_END = r"(?=/|$)"  # the id must fill a whole path component

# One regex per runtime, tried in this order on each path; the first match wins.
# Monitor processes ("crio-conmon-<id>.scope", "libpod-conmon-<id>.scope") are
# deliberately left unmatched: conmon runs next to the container, not in it, so
# it gets container_id None and runtime None. Plain containerd/nerdctl paths
# ("/<namespace>/<64hex>", e.g. "/default/<id>") are too ambiguous and skipped.
_RUNTIME_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # docker: cgroupfs driver "/docker/<id>", systemd driver "/system.slice/docker-<id>.scope"
    ("docker", re.compile(rf"(?:^|/)docker[-/]{_HEX64}(?:\.scope)?{_END}")),
    # cri-o: "crio-<id>.scope" (systemd driver) or ".../pod<uid>/crio-<id>" (cgroupfs)
    ("cri-o", re.compile(rf"(?:^|/)crio-{_HEX64}(?:\.scope)?{_END}")),
    # podman: "libpod-<id>.scope", rootful or rootless, optionally ".../container" below it
    ("podman", re.compile(rf"(?:^|/)libpod-{_HEX64}(?:\.scope)?{_END}")),
    # containerd CRI with systemd driver: "cri-containerd-<id>.scope", or
    # "/system.slice/containerd.service/kubepods-...slice:cri-containerd:<id>"
    ("containerd", re.compile(rf"cri-containerd[-:]{_HEX64}(?:\.scope)?{_END}")),
    # Kubernetes cgroupfs driver: "/kubepods[/burstable|/besteffort]/pod<uid>/<id>".
    # A bare id here is what containerd creates (dockershim is gone since k8s 1.24).
    ("containerd", re.compile(
        rf"(?:^|/)kubepods(?:/(?:burstable|besteffort))?/pod[0-9a-f_-]+/{_HEX64}{_END}")),
    # lxc: "/lxc/<name>" (v1) or "/lxc.payload.<name>" (lxc >= 4); the id is the name
    ("lxc", re.compile(r"(?:^|/)lxc(?:/|\.payload\.)(?P<id>[^/]+)")),
]

_UNIT_SUFFIXES = (".scope", ".service")  # .slice is a grouping, not a unit a process runs in


class CgroupInfo(NamedTuple):
    """Where a process sits in the cgroup tree, and what that says about it."""

    path: str | None  # the chosen cgroup path, None if the file had no lines
    container_id: str | None  # usually 64 hex chars; the container name for lxc
    runtime: str | None  # "docker", "containerd", "cri-o", "podman", "lxc"
    systemd_unit: str | None  # e.g. "session-3.scope", "nginx.service"


_EMPTY = CgroupInfo(None, None, None, None)


def parse_cgroup(text: str) -> CgroupInfo:
    """Parse the content of /proc/<pid>/cgroup."""
    v2_path: str | None = None
    v1_lines: list[tuple[list[str], str]] = []  # (controllers, path) in file order
    for line in text.splitlines():
        parts = line.strip().split(":", 2)  # paths may contain ":" (cri-containerd)
        if len(parts) != 3:
            continue
        hierarchy_id, controllers, path = parts
        if hierarchy_id == "0" and not controllers:
            v2_path = path
        else:
            v1_lines.append((controllers.split(","), path))

    chosen = _choose_path(v2_path, v1_lines)
    if chosen is None:
        return _EMPTY
    # Look in the chosen path first, then every other line, for a container id.
    candidates = [chosen] + [p for _, p in v1_lines] + ([v2_path] if v2_path else [])
    container_id, runtime = _find_container(candidates)
    return CgroupInfo(chosen, container_id, runtime, _systemd_unit(chosen))


def _choose_path(v2_path: str | None, v1_lines: list[tuple[list[str], str]]) -> str | None:
    # On hybrid hosts "0::/" says nothing; a more specific v1 path is better.
    if v2_path is not None and (v2_path != "/" or not v1_lines):
        return v2_path
    if not v1_lines:
        return None
    for wanted in ("name=systemd", "cpu"):  # "cpu" also matches "cpu,cpuacct"
        for controllers, path in v1_lines:
            if wanted in controllers:
                return path
    return v1_lines[0][1]


def _find_container(paths: list[str]) -> tuple[str | None, str | None]:
    for path in paths:
        for runtime, pattern in _RUNTIME_PATTERNS:
            match = pattern.search(path)
            if match:
                return match.group("id"), runtime
    return None, None


def _systemd_unit(path: str) -> str | None:
    # Walk up from the leaf: podman v2 puts the process in ".../libpod-<id>.scope/container".
    for component in reversed(path.split("/")):
        if component.endswith(_UNIT_SUFFIXES):
            return component
    return None


def read_cgroup(pid: int) -> CgroupInfo:
    """Parse /proc/<pid>/cgroup; all None if it cannot be read (gone, no permission)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            return parse_cgroup(f.read())
    except OSError:
        return _EMPTY
