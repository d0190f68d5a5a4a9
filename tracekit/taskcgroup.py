"""A cgroup per task: ``(run, node, task) -> cgroups of its own -> its exact CPU time and memory peak``.

Inputs: the cgroup mounts (``/proc/self/mountinfo``) and this process's place in
them (``/proc/self/cgroup``). Outputs: ``TaskCgroups`` (what a worker can do
here, or why not; ``describe()`` for node.json) and per task a ``TaskCgroup``:
entered around the spawn, read once the task was waited for, then removed.
Every process a task starts is born in its cgroup, however short; the kernel
counts their CPU time to the nanosecond (v1) or microsecond (v2).

cgroup v1 (the cpuacct, memory and pids hierarchies; chosen where cpuacct is a
v1 hierarchy, as on hybrid machines, where the controllers live there): the
thread that spawns moves itself (its thread id, the ``tasks`` file) into the
task's cgroups, spawns and moves back, so the child is born in them.
cgroup v2 (the unified hierarchy, most clusters today): a domain cgroup takes
processes, not threads, so the child moves itself before its exec: the
constant ``TRAMPOLINE`` script writes its PID into the task's ``cgroup.procs``
and execs the task's argv, passed as literal arguments (never in the script).
A v2 cgroup counts CPU time (``cpu.stat``) without any controller; memory and
pids are read where those controllers can be enabled for tracekit's subtree.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The v1 controllers a task's cgroup is made in; cpuacct is the one needed.
V1_CONTROLLERS = ("cpuacct", "memory", "pids")
# The v2 controllers tried for tracekit's subtree (the CPU time needs none).
V2_CONTROLLERS = ("memory", "pids")
UNIFIED = "unified"  # the v2 hierarchy's key in TaskCgroups.dirs
# $0 is the task's cgroup.procs, "$@" the task's argv: the shell moves itself there, then becomes the task.
# A failed move is not a lost task: it runs, uncounted, and the audit sees its cgroup's total fall short.
TRAMPOLINE = 'echo $$ 2>/dev/null > "$0"; exec "$@"'
SHELL = "/bin/sh"
_NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Hierarchy:
    """One hierarchy: its controller (``unified`` for v2), where it is mounted, where this process sits in it."""

    controller: str
    mount: str
    own_path: str  # this process's cgroup in it, e.g. "/" or "/system.slice/x.service"

    @property
    def own_dir(self) -> Path:
        return Path(self.mount) / self.own_path.lstrip("/")


def _cgroup_mounts(mountinfo: str) -> tuple[dict[str, str], str | None]:
    """mountinfo's cgroup mounts: ({v1 controller: mount point}, the v2 mount point or None)."""
    v1: dict[str, str] = {}
    v2 = None
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail:
            continue
        if tail[0] == "cgroup2":
            v2 = v2 or fields[4]
        elif tail[0] == "cgroup" and len(tail) >= 3:
            for controller in set(tail[2].split(",")) & set(V1_CONTROLLERS):
                v1.setdefault(controller, fields[4])
    return v1, v2


def _own_paths(self_cgroup: str) -> dict[str, str]:
    """/proc/self/cgroup's lines: {v1 controller: path, UNIFIED: the v2 path}."""
    paths: dict[str, str] = {}
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and not parts[1]:
            paths[UNIFIED] = parts[2]
        for controller in filter(None, parts[1].split(",")):
            paths[controller] = parts[2]
    return paths


def v1_hierarchies(mountinfo: str, self_cgroup: str) -> dict[str, Hierarchy]:
    """The v1 hierarchies of V1_CONTROLLERS: mountinfo's cgroup mounts joined with /proc/self/cgroup's lines."""
    mounts, _ = _cgroup_mounts(mountinfo)
    paths = _own_paths(self_cgroup)
    return {c: Hierarchy(c, mounts[c], paths[c]) for c in V1_CONTROLLERS if c in mounts and c in paths}


def v2_hierarchy(mountinfo: str, self_cgroup: str) -> Hierarchy | None:
    """The unified (v2) hierarchy and this process's place in it, None when it is not mounted."""
    _, mount = _cgroup_mounts(mountinfo)
    own = _own_paths(self_cgroup).get(UNIFIED)
    return Hierarchy(UNIFIED, mount, own) if mount is not None and own is not None else None


class TaskCgroups:
    """Where a worker makes its tasks' cgroups (``<own cgroup>/tracekit/<run>/<node>.<mark>/``), or why it cannot."""

    def __init__(self, dirs: dict[str, Path], own: dict[str, Path], unavailable: str | None = None, version: int = 0):
        self.dirs = dirs  # controller (UNIFIED for v2) -> the run's and node's folder of task cgroups
        self.own = own  # controller -> this process's own cgroup (where a v1 thread goes back to)
        self.unavailable = unavailable
        self.version = version  # 1 or 2; 0 when unavailable

    @classmethod
    def detect(cls, run_id: str, node_id: str, run_folder: Path, version: int | None = None) -> TaskCgroups:
        """The task cgroups of ``run_folder``'s worker: ``.../tracekit/<run>/<node>.<8 hex of the folder>``.

        ``version``: 1 or 2 to insist on one (tests); by default v1 where cpuacct is a v1 hierarchy
        (a hybrid machine keeps its controllers there), else v2. The folder's mark keeps two workers
        apart that share a run and node id (tests on one machine); a restarted worker, with the same
        folder, finds its predecessor's leftovers.
        """
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
            self_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError as exc:
            return cls({}, {}, f"cannot read this process's cgroups ({exc.strerror})")
        mark = hashlib.sha256(str(Path(run_folder).resolve()).encode()).hexdigest()[:8]
        relative = Path("tracekit", run_id, f"{node_id}.{mark}")
        v1 = v1_hierarchies(mountinfo, self_cgroup) if version != 2 else {}
        if "cpuacct" in v1:
            return cls._v1(v1, relative)
        unified = v2_hierarchy(mountinfo, self_cgroup) if version != 1 else None
        if unified is not None:
            return cls._v2(unified, relative)
        wanted = {1: "no cgroup v1 cpuacct hierarchy", 2: "no cgroup v2 hierarchy"}.get(version or 0, "no cgroup hierarchy")
        return cls({}, {}, f"{wanted} is mounted: tasks are sampled, not accounted by cgroup")

    @classmethod
    def _v1(cls, hierarchies: dict[str, Hierarchy], relative: Path) -> TaskCgroups:
        dirs, own = {}, {}
        for controller, hierarchy in hierarchies.items():
            folder = hierarchy.own_dir / relative
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if controller == "cpuacct":
                    return cls({}, {}, f"cannot make cgroups in {folder} ({exc.strerror}): tasks are sampled, "
                                       "not accounted by cgroup")  # fmt: skip
                continue  # memory or pids: the CPU time is what matters most
            dirs[controller], own[controller] = folder, hierarchy.own_dir
        return cls(dirs, own, version=1)

    @classmethod
    def _v2(cls, hierarchy: Hierarchy, relative: Path) -> TaskCgroups:
        folder = hierarchy.own_dir / relative
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return cls({}, {}, f"cannot make cgroups in {folder} ({exc.strerror}): tasks are sampled, "
                               "not accounted by cgroup")  # fmt: skip
        # Memory and pids need their controllers enabled on every level from this process's own cgroup
        # down; its own refuses them while it holds processes (v2's rule), unless it is the root. Best effort.
        for controller in V2_CONTROLLERS:
            level = hierarchy.own_dir
            for part in ("", *relative.parts):
                level = level / part if part else level
                try:
                    _write(level / "cgroup.subtree_control", f"+{controller}")
                except OSError:
                    break
        return cls({UNIFIED: folder}, {UNIFIED: hierarchy.own_dir}, version=2)

    def readings(self) -> list[str]:
        """What a task's cgroup gives here: cpu, and memory/pids where their controllers are there."""
        if not self.dirs:
            return []
        if self.version == 1:
            return ["cpu", *(c for c in ("memory", "pids") if c in self.dirs)]
        enabled = _read_or_empty(self.dirs[UNIFIED] / "cgroup.subtree_control").split()
        return ["cpu", *(c for c in V2_CONTROLLERS if c in enabled)]

    def describe(self) -> dict[str, Any]:
        """For node.json: which cgroups tasks are born in and what they give, or why tasks have none."""
        if self.unavailable:
            return {"available": False, "why": self.unavailable}
        return {"available": True, "version": self.version, "readings": self.readings(),
                "folders": {controller: str(folder) for controller, folder in self.dirs.items()}}  # fmt: skip

    def task(self, name: str) -> TaskCgroup | None:
        return TaskCgroup(self, name) if self.dirs else None

    def close(self) -> None:
        """Remove the run's and node's folders when no task cgroup is left in them (a worker's end)."""
        for folder in self.dirs.values():
            for empty in (folder, folder.parent):  # <node>, then <run>; "tracekit" stays for the next run
                try:
                    empty.rmdir()
                except OSError:
                    break

    def leftovers(self) -> list[Path]:
        """Task cgroups of this run and node still there (of a worker that was killed)."""
        return sorted(p for folder in self.dirs.values() for p in folder.iterdir() if p.is_dir())

    def clear_leftovers(self, wait_s: float = 5.0) -> dict[str, list[int]]:
        """End what a killed worker's tasks left running in their cgroups, and remove those: {cgroup: pids killed}.

        Their tasks were handed to another attempt by the dispatcher, which runs in a cgroup of its own.
        """
        killed: dict[str, list[int]] = {}
        for folder in self.leftovers():
            pids = _pids_in(folder)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while _pids_in(folder) and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                folder.rmdir()
            except OSError:
                pass
            if pids:
                killed[str(folder)] = pids
        return killed


class TaskCgroup:
    """One task's cgroups: ``with cgroup:`` around its spawn of ``cgroup.argv(argv)``; ``totals()``; ``remove()``."""

    def __init__(self, owner: TaskCgroups, name: str):
        self.owner = owner
        self.dirs = {controller: folder / name for controller, folder in owner.dirs.items()}

    def argv(self, argv: list[str]) -> list[str]:
        """What to spawn: the argv itself (v1: born in this thread's cgroups), or it behind TRAMPOLINE (v2)."""
        if self.owner.version == 2:
            return [SHELL, "-c", TRAMPOLINE, str(self.dirs[UNIFIED] / "cgroup.procs"), *argv]
        return argv

    def __enter__(self) -> TaskCgroup:
        entered = []
        try:
            for controller, folder in self.dirs.items():
                folder.mkdir(exist_ok=True)
                if self.owner.version == 1:
                    _write(folder / "tasks", str(threading.get_native_id()))
                    entered.append(controller)
        except OSError:
            self._back(entered)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.owner.version == 1:
            self._back(list(self.dirs))

    def _back(self, controllers: list[str]) -> None:
        tid = str(threading.get_native_id())
        for controller in controllers:
            _write(self.owner.own[controller] / "tasks", tid)

    def totals(self) -> dict[str, Any]:
        """What the task's cgroups counted: exact CPU ms with its user/system split, memory peak where read."""
        if self.owner.version == 2:
            return self._v2_totals()
        cpuacct = self.dirs["cpuacct"]
        usage_ms = int(_read(cpuacct / "cpuacct.usage")) / _NS_PER_MS
        ticks = dict(line.split() for line in _read(cpuacct / "cpuacct.stat").splitlines() if line.strip())
        user, system = int(ticks.get("user", 0)), int(ticks.get("system", 0))
        user_share = user / (user + system) if user + system else 1.0  # ticks split the exact total
        totals: dict[str, Any] = {
            "cgroup_cpu_ms": round(usage_ms, 3),
            "cgroup_cpu_user_ms": round(usage_ms * user_share, 3),
            "cgroup_cpu_system_ms": round(usage_ms * (1 - user_share), 3),
        }
        if "memory" in self.dirs:
            totals["cgroup_memory_peak_bytes"] = int(_read(self.dirs["memory"] / "memory.max_usage_in_bytes"))
        return totals

    def _v2_totals(self) -> dict[str, Any]:
        folder = self.dirs[UNIFIED]
        stat = dict(line.split() for line in _read(folder / "cpu.stat").splitlines() if line.strip())
        totals: dict[str, Any] = {
            "cgroup_cpu_ms": int(stat["usage_usec"]) / 1000,
            "cgroup_cpu_user_ms": int(stat["user_usec"]) / 1000,
            "cgroup_cpu_system_ms": int(stat["system_usec"]) / 1000,
        }
        peak = _read_or_empty(folder / "memory.peak").strip()  # memory controller on, kernel >= 5.19
        if peak.isdigit():
            totals["cgroup_memory_peak_bytes"] = int(peak)
        return totals

    def remove(self) -> list[str]:
        """Remove the task's cgroups; the ones still holding a process (it outlived the task) are named."""
        kept = []
        for folder in self.dirs.values():
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                kept.append(str(folder))
        return kept


def _pids_in(folder: Path) -> list[int]:
    try:
        return [int(line) for line in _read(folder / "cgroup.procs").split()]
    except (OSError, ValueError):
        return []


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: Path) -> str:
    with open(path) as file:
        return file.read()


def _read_or_empty(path: Path) -> str:
    try:
        return _read(path)
    except OSError:
        return ""
