"""A cgroup per task: ``(run, node, task) -> cgroups of its own -> its exact CPU time and memory peak``.

Inputs: the cgroup mounts (``/proc/self/mountinfo``) and this process's place in
them (``/proc/self/cgroup``). Outputs: ``TaskCgroups`` (what a worker can do
here, or why not; ``describe()`` for node.json) and per task a ``TaskCgroup``:
entered around the spawn, read once the task was waited for, then removed.
Every process a task starts is born in its cgroup, however short; the kernel
counts their CPU time to the nanosecond (v1) or microsecond (v2).

Which: cgroup v1 (the cpuacct, memory and pids hierarchies) where cpuacct is a
v1 hierarchy (hybrid machines keep their controllers there), else cgroup v2
(the unified hierarchy, most clusters today). How: the child moves itself
before its exec: the constant ``TRAMPOLINE`` script writes its PID into the
task's ``cgroup.procs`` files, goes to the task's working folder and execs
the task's argv, all passed as literal arguments (never in the script).
(Moving the spawning thread in and out instead, on v1, saved that exec but
charged the task with up to 14 ms of the worker's own work now and then:
the kernel settles a thread's CPU account at ticks and switches, not at a
move.) For the same reason the first fraction of a millisecond of the child
(spawn, exec of the shell, before its move) is usually charged outside: a
task's cgroup total is its rusage's less about 1 ms, plus what the task did
not wait for.
A v2 cgroup counts CPU time (``cpu.stat``) without any controller; memory and
pids are read where those controllers can be enabled for tracekit's subtree.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracekit import runfolder

# The v1 controllers a task's cgroup is made in; cpuacct is the one needed.
V1_CONTROLLERS = ("cpuacct", "memory", "pids")
# The v2 controllers tried for tracekit's subtree (the CPU time needs none).
V2_CONTROLLERS = ("memory", "pids")
UNIFIED = "unified"  # the v2 hierarchy's key in TaskCgroups.dirs
# Its arguments: the task's cgroup.procs files, "--", the task's working folder ("": stay), the task's argv. The shell moves itself into each cgroup, changes folder, then becomes the task.
# A failed move is not a lost task: it runs, uncounted, and the audit sees its cgroup fall short.
TRAMPOLINE = ('while [ "$1" != -- ]; do echo $$ 2>/dev/null > "$1"; shift; done; shift; '
              'if [ -n "$1" ]; then cd -P -- "$1" >/dev/null || exit 126; unset OLDPWD; fi; shift; exec "$@"')
SHELL = "/bin/sh"
# The cgroup a node's HTTP service container is made below, beside its task cgroups (a task's name ends in
# -<attempt>, so no task's can be this one); not a worker's leftover.
SERVICE_CGROUP = "service"
# An empty task cgroup older than this was left by a dead worker (a live one is empty only around its spawn).
STALE_AFTER_S = 600.0


@dataclass(frozen=True)
class Hierarchy:
    """One hierarchy: its controller (``unified`` for v2), where it is mounted, where this process sits in it."""

    controller: str
    mount: str
    own_path: str  # this process's cgroup in it, e.g. "/" or "/system.slice/x.service"

    @property
    def own_dir(self) -> Path:
        return Path(self.mount) / self.own_path.lstrip("/")


def _cgroup_mount_lines(mountinfo: str) -> list[tuple[str, str, set[str]]]:
    """mountinfo's cgroup mounts: (mount point, "cgroup" or "cgroup2", super options)."""
    found = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and tail[:1] in (["cgroup"], ["cgroup2"]):
            found.append((fields[4], tail[0], set(tail[2].split(",")) if len(tail) >= 3 else set()))
    return found


def _cgroup_mounts(mountinfo: str) -> tuple[dict[str, str], str | None]:
    """mountinfo's cgroup mounts: ({v1 controller: mount point}, the v2 mount point or None)."""
    v1: dict[str, str] = {}
    v2 = None
    for point, kind, options in _cgroup_mount_lines(mountinfo):
        if kind == "cgroup2":
            v2 = v2 or point
        else:
            for controller in options & set(V1_CONTROLLERS):
                v1.setdefault(controller, point)
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


def node_folder_name(node_id: str, run_folder: Path) -> str:
    """``<node>.<8 hex of the run folder>``: the folder of one worker's task cgroups in its run's."""
    return f"{node_id}.{hashlib.sha256(str(Path(run_folder).resolve()).encode()).hexdigest()[:8]}"


def _in_mount(folder: str, suffix: str, mounts: list[str]) -> bool:
    """``folder`` is itself (no link, no ..), ends with ``suffix`` and lies in one of ``mounts``."""
    return (os.path.realpath(folder) == folder and folder.endswith(suffix)
            and any(folder.startswith(m.rstrip("/") + "/") for m in mounts))  # fmt: skip


def cgroup_mount_points(mountinfo: str) -> list[str]:
    """Where cgroup hierarchies (v1 and v2) are mounted."""
    return [point for point, _kind, _options in _cgroup_mount_lines(mountinfo)]


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


def _own_hierarchies() -> tuple[dict[str, Hierarchy], Hierarchy | None]:
    """This process's v1 hierarchies and v2 one (v1_hierarchies, v2_hierarchy); OSError when unreadable."""
    mountinfo = Path("/proc/self/mountinfo").read_text()
    self_cgroup = Path("/proc/self/cgroup").read_text()
    return v1_hierarchies(mountinfo, self_cgroup), v2_hierarchy(mountinfo, self_cgroup)


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")


def cgroup_name(task_id: str, attempt: int) -> str:
    """The folder name of a task's cgroup: ``<task_id>-<attempt>`` where the id is a safe file name, else
    its safe characters and a hash of it (a task id is any text the workload gave)."""
    safe = _UNSAFE_IN_NAME.sub("_", task_id)[:80].lstrip(".") or "task"
    if safe != task_id:
        safe = f"{safe}.{hashlib.sha256(task_id.encode()).hexdigest()[:12]}"
    return f"{safe}-{attempt}"


class TaskCgroups:
    """Where a worker makes its tasks' cgroups (``<own cgroup>/tracekit/<run>/<node>.<mark>/``), or why it cannot."""

    def __init__(self, dirs: dict[str, Path], unavailable: str | None = None, version: int = 0,
                 mounts: dict[str, Path] | None = None):  # fmt: skip
        self.dirs = dirs  # controller (UNIFIED for v2) -> the run's and node's folder of task cgroups
        self.unavailable = unavailable
        self.version = version  # 1 or 2; 0 when unavailable
        self.mounts = mounts or {}  # controller -> where its hierarchy is mounted (a worker's: detect)
        self._mount_points: list[str] | None = None  # every cgroup mount (_everywhere), read when first needed

    @classmethod
    def detect(cls, run_id: str, node_id: str, run_folder: Path, version: int | None = None) -> TaskCgroups:
        """The task cgroups of ``run_folder``'s worker: ``.../tracekit/<run>/<node>.<8 hex of the folder>``.

        ``version``: 1 or 2 to insist on one (tests); by default v1 where cpuacct is a v1 hierarchy
        (a hybrid machine keeps its controllers there), else v2. The folder's mark keeps two workers
        apart that share a run and node id (tests on one machine); a restarted worker, with the same
        folder, finds its predecessor's leftovers.
        """
        try:
            v1, unified = _own_hierarchies()
        except OSError as exc:
            return cls({}, f"cannot read this process's cgroups ({exc.strerror})")
        relative = Path("tracekit", run_id, node_folder_name(node_id, run_folder))
        if "cpuacct" in v1 and version != 2:
            return cls._v1(v1, relative)
        if unified is not None and version != 1:
            return cls._v2(unified, relative)
        wanted = {1: "no cgroup v1 cpuacct hierarchy", 2: "no cgroup v2 hierarchy"}.get(version or 0, "no cgroup hierarchy")
        return cls({}, f"{wanted} is mounted: tasks are sampled, not accounted by cgroup")

    @classmethod
    def _v1(cls, hierarchies: dict[str, Hierarchy], relative: Path) -> TaskCgroups:
        """One path in every hierarchy, below this process's cpuacct cgroup: a container engine takes one
        path as a container's cgroup parent, in all hierarchies (this process's memory cgroup may lie
        elsewhere, e.g. a sandbox's limit; the task's cgroups are then beside it, not in it)."""
        anchor = hierarchies["cpuacct"].own_path.lstrip("/")
        dirs, mounts = {}, {}
        for controller, hierarchy in hierarchies.items():
            folder = Path(hierarchy.mount) / anchor / relative
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if controller == "cpuacct":
                    return cls({}, f"cannot make cgroups in {folder} ({exc.strerror}): tasks are sampled, "
                                       "not accounted by cgroup")  # fmt: skip
                continue  # memory or pids: the CPU time is what matters most
            dirs[controller], mounts[controller] = folder, Path(hierarchy.mount)
        return cls(dirs, version=1, mounts=mounts)

    @classmethod
    def _v2(cls, hierarchy: Hierarchy, relative: Path) -> TaskCgroups:
        folder = hierarchy.own_dir / relative
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return cls({}, f"cannot make cgroups in {folder} ({exc.strerror}): tasks are sampled, "
                               "not accounted by cgroup")  # fmt: skip
        _enable_v2_controllers(hierarchy.own_dir, relative)
        return cls({UNIFIED: folder}, version=2, mounts={UNIFIED: Path(hierarchy.mount)})

    @classmethod
    def recorded(cls, run_folder: Path, run_id: str, node_id: str | None = None) -> tuple[TaskCgroups | None, str | None]:
        """The task cgroups a worker of ``run_folder`` recorded in its task_cgroups.json: (them, None), or
        (None, why not); (None, None) while there is no such file. Only this run's and node's folders in a
        mounted cgroup hierarchy are taken: the file is in the run folder, which tasks can write."""
        record = Path(run_folder) / runfolder.TASK_CGROUPS
        try:
            described = json.loads(record.read_bytes())
        except FileNotFoundError:
            return None, None
        except ValueError:
            return None, f"{record.name} is not valid JSON"
        if not isinstance(described, dict) or not described.get("available"):
            return None, "the worker's tasks have no cgroups of their own"
        node = node_id if node_id is not None else described.get("node")
        found = cls.of_record(described.get("folders"), described.get("version"), run_id, node, record.parent)
        if found is None:
            return None, f"{record.name} names no task cgroups of run {run_id} and node {node}"
        return found, None

    @classmethod
    def of_record(cls, folders: Any, version: Any, run_id: str, node: Any, run_folder: Path) -> TaskCgroups | None:
        """The node folders a record names ({controller: folder}, as ``describe()`` gives them), when they are
        this run's and node's in a mounted cgroup hierarchy (no link, no ..); else None. A record lies in the
        run folder, which tasks can write: nothing else is ever read or removed."""
        suffix = f"/tracekit/{run_id}/{node_folder_name(node, run_folder)}" if isinstance(node, str) else None
        try:
            mounts = cgroup_mount_points(Path("/proc/self/mountinfo").read_text())
        except OSError:
            mounts = []
        if (version not in (1, 2) or not isinstance(folders, dict) or not folders or suffix is None
                or not all(isinstance(f, str) and _in_mount(f, suffix, mounts) for f in folders.values())):  # fmt: skip
            return None
        dirs = {name: Path(f) for name, f in folders.items()}
        found = {name: max((m for m in mounts if f.startswith(m.rstrip("/") + "/")), key=len) for name, f in folders.items()}
        return cls(dirs, version=version, mounts={name: Path(m) for name, m in found.items()})

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
        """Remove the run's and node's folders when no task cgroup is left in them (a worker's end), in the
        hierarchies a container engine made them in too."""
        for folder in self._everywhere():
            for empty in (folder, folder.parent):  # <node>, then <run>; "tracekit" stays for the next run
                try:
                    empty.rmdir()
                except OSError:
                    break

    def _everywhere(self) -> list[Path]:
        """The node's folder in every mounted hierarchy where it is: a container engine makes a
        container's cgroup parent (the task's path) in all of them, not only in those tasks use."""
        reference = self.reference()
        if reference is None:
            return list(self.dirs.values())
        controller, mount = reference
        relative = self.dirs[controller].relative_to(mount)
        if self._mount_points is None:  # read once: each container task's removal asks again
            try:
                self._mount_points = cgroup_mount_points(Path("/proc/self/mountinfo").read_text())
            except OSError:
                self._mount_points = []
        others = [Path(point) / relative for point in self._mount_points]
        return list(dict.fromkeys([*self.dirs.values(), *(f for f in others if f.is_dir())]))

    def reference(self) -> tuple[str, Path] | None:
        """The hierarchy whose path a container engine is given (cpuacct on v1, the unified one on v2), and
        where it is mounted; None when not known (TaskCgroups.recorded)."""
        for controller in ("cpuacct", UNIFIED):
            if controller in self.dirs and controller in self.mounts:
                return controller, self.mounts[controller]
        return None

    def leftovers(self) -> list[Path]:
        """Task cgroups of this run and node still there (of a worker that was killed)."""
        return sorted(task for folder in self._everywhere() for task in subfolders(folder) if task.name != SERVICE_CGROUP)

    def clear_leftovers(self, wait_s: float = 5.0) -> dict[str, list[int]]:
        """End what a killed worker's tasks left running in their cgroups, and remove those: {cgroup: pids killed}.

        Their tasks were handed to another attempt by the dispatcher, which runs in a cgroup of its own.
        """
        killed: dict[str, list[int]] = {}
        for folder in self.leftovers():
            pids = pids_below(folder)  # a container's are in cgroups of its own below the task's
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while pids_below(folder) and time.monotonic() < deadline:
                time.sleep(0.05)
            _remove_tree(folder)
            if pids:
                killed[str(folder)] = pids
        return killed


class TaskCgroup:
    """One task's cgroups: ``with cgroup:`` around its spawn of ``cgroup.argv(argv)``; ``totals()``; ``remove()``."""

    def __init__(self, owner: TaskCgroups, name: str):
        self.owner = owner
        self.name = name
        self.dirs = {controller: folder / name for controller, folder in owner.dirs.items()}

    def engine_parent(self) -> str | None:
        """The task's cgroup as a container engine's ``--cgroup-parent`` (its path from the hierarchy's root,
        the same in every v1 hierarchy: TaskCgroups._v1); None when not known."""
        reference = self.owner.reference()
        if reference is None:
            return None
        controller, mount = reference
        return "/" + str(self.dirs[controller].relative_to(mount))

    def make(self) -> None:
        """Make the task's cgroups (before its spawn; OSError when they cannot be made).

        The node's folder is made again when gone (another worker's start removes idle empty ones).
        """
        for hierarchy, folder in self.dirs.items():
            if not folder.parent.is_dir():
                folder.parent.mkdir(parents=True, exist_ok=True)
                if hierarchy == UNIFIED:
                    own = folder.parents[3]  # <own>/tracekit/<run>/<node>.<mark>/<task>
                    _enable_v2_controllers(own, folder.parent.relative_to(own))
            folder.mkdir(exist_ok=True)

    def trampoline(self, argv: list[str], cwd: str | None = None) -> list[str]:
        """``argv`` behind TRAMPOLINE: the child moves itself into the task's cgroups, goes to ``cwd``, execs ``argv``."""
        procs = [str(folder / "cgroup.procs") for folder in self.dirs.values()]
        # Absolute: a relative folder would be looked for along a CDPATH, and "-" be the previous folder.
        return [SHELL, "-c", TRAMPOLINE, "tracekit-task", *procs, "--", os.path.abspath(cwd) if cwd else "", *argv]

    def totals(self) -> dict[str, Any]:
        """What the task's cgroups counted, for its event: exact CPU ms with its user/system split, memory peak."""
        counters = read_counters(self.owner.version, self.dirs)
        totals: dict[str, Any] = {
            "cgroup_cpu_ms": counters["cpu_us"] / 1000,
            "cgroup_cpu_user_ms": counters["cpu_user_us"] / 1000,
            "cgroup_cpu_system_ms": counters["cpu_system_us"] / 1000,
        }
        if counters["memory_peak_bytes"] is not None:
            totals["cgroup_memory_peak_bytes"] = counters["memory_peak_bytes"]
        return totals

    def wait_empty(self, timeout_s: float) -> bool:
        """Wait until no process is left in the task's cgroups (a container engine's monitor ends after the
        client): True when empty."""
        folder = next(iter(self.dirs.values()))
        deadline = time.monotonic() + timeout_s
        while pids_below(folder):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def remove(self, everywhere: bool = False) -> list[str]:
        """Remove the task's cgroups, and what a container engine made below them (conmon's); the ones still
        holding a process (it outlived the task) are named. ``everywhere``: in every mounted hierarchy (a
        container engine makes the task's path in all of them)."""
        kept = []
        for folder in self.dirs.values():
            kept += _remove_tree(folder)
        if everywhere:
            for folder in self.owner._everywhere():
                if folder not in self.owner.dirs.values():
                    _remove_tree(folder / self.name)  # no accounting there: nothing to report
        return kept


def _enable_v2_controllers(own: Path, relative: Path) -> None:
    """Memory and pids for task cgroups below ``own/relative``: enabled on every level from ``own``, whose
    processes make it refuse them (v2's rule), unless it is the root. Best effort."""
    levels = [own, *(own / Path(*relative.parts[: depth + 1]) for depth in range(len(relative.parts)))]
    for controller in V2_CONTROLLERS:
        for level in levels:
            try:
                _write(level / "cgroup.subtree_control", f"+{controller}")
            except OSError:
                break


def remove_stale(older_than_s: float = STALE_AFTER_S) -> list[str]:
    """Remove what dead workers left under this process's ``tracekit/`` cgroups, of any run: empty task
    cgroups, node and run folders untouched for ``older_than_s`` (a live task's cgroup is empty only
    around its spawn; a live worker idle that long makes its node folder again). What still holds a
    process or a cgroup is left alone. Returns the task cgroups removed."""
    try:
        v1, unified = _own_hierarchies()
    except OSError:
        return []
    owns = [h.own_dir for h in (*v1.values(), *([unified] if unified is not None else []))]
    if "cpuacct" in v1:  # where TaskCgroups._v1 makes them, in every hierarchy (a container engine's too)
        anchor = v1["cpuacct"].own_path.lstrip("/")
        try:
            points = cgroup_mount_points(Path("/proc/self/mountinfo").read_text())
        except OSError:
            points = []
        owns += [Path(point) / anchor for point in points]
    roots = [own / "tracekit" for own in dict.fromkeys(owns)]
    removed, now = [], time.time()
    for root in roots:
        for run in subfolders(root):
            for node in subfolders(run):
                for task in subfolders(node):
                    if _idle_for(task, now) >= older_than_s and not pids_below(task) and not _remove_tree(task):
                        removed.append(str(task))
                if _idle_for(node, now) >= older_than_s:
                    _try_rmdir(node)
            if _idle_for(run, now) >= older_than_s:
                _try_rmdir(run)
    return removed


def _idle_for(folder: Path, now: float) -> float:
    """Seconds since the folder last changed (a cgroup made or removed in it); 0 when gone."""
    try:
        return now - folder.stat().st_mtime
    except OSError:
        return 0.0


def subfolders(folder: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(folder) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _try_rmdir(folder: Path) -> bool:
    try:
        folder.rmdir()
        return True
    except OSError:
        return False  # busy: in use, or not empty


# What a task cgroup's counters give (read_counters), in the order of the collector's cgroup.csv after its
# first columns; CPU in microseconds (v1 counts nanoseconds, v2 microseconds), None where not readable.
COUNTERS = ("cpu_us", "cpu_user_us", "cpu_system_us", "memory_bytes", "memory_peak_bytes", "pids",
            "io_read_bytes", "io_write_bytes")  # fmt: skip


# The files read_counters reads, by version: (hierarchy, file); the first one holds the CPU counter.
COUNTER_FILES = {
    1: (("cpuacct", "cpuacct.usage"), ("cpuacct", "cpuacct.stat"), ("memory", "memory.usage_in_bytes"),
        ("memory", "memory.max_usage_in_bytes"), ("pids", "pids.current")),
    2: ((UNIFIED, "cpu.stat"), (UNIFIED, "io.stat"), (UNIFIED, "memory.current"), (UNIFIED, "memory.peak"),
        (UNIFIED, "pids.current")),
}  # fmt: skip


def read_counters(version: int, dirs: dict[str, Path]) -> dict[str, int | None]:
    """A task cgroup's counters now: ``dirs`` is {hierarchy: its folder} (TaskCgroup.dirs). Raises OSError
    when its CPU counter cannot be read (the cgroup is gone)."""
    (cpu_hierarchy, cpu_file), *others = COUNTER_FILES[version]
    texts = {cpu_file: _read(dirs[cpu_hierarchy] / cpu_file)}
    for hierarchy, name in others:
        texts[name] = _read_or_empty(dirs[hierarchy] / name) if hierarchy in dirs else ""
    return counters_of(version, texts)


def counters_of(version: int, texts: dict[str, str]) -> dict[str, int | None]:
    """The counters from the contents of a task cgroup's COUNTER_FILES ("" where one is not readable)."""
    if version == 2:
        stat = _fields(texts["cpu.stat"])
        io = _io_bytes(texts["io.stat"])
        user = min(stat["user_usec"], stat["usage_usec"])  # the kernel's split can be a microsecond off its sum
        return {"cpu_us": stat["usage_usec"], "cpu_user_us": user, "cpu_system_us": stat["usage_usec"] - user,
                "memory_bytes": _int_or_none(texts["memory.current"]), "memory_peak_bytes": _int_or_none(texts["memory.peak"]),
                "pids": _int_or_none(texts["pids.current"]), "io_read_bytes": io[0], "io_write_bytes": io[1]}  # fmt: skip
    usage_ns = int(texts["cpuacct.usage"])  # exact: the scheduler's runtime
    # The split is sampled at ticks (cpuacct.stat; usage_user/usage_sys are the same ticks in ns and need
    # not add up to usage): it divides the exact total, as rusage's split does.
    ticks = _fields(texts["cpuacct.stat"])
    user, system = ticks.get("user", 0), ticks.get("system", 0)
    user_ns = round(usage_ns * user / (user + system)) if user + system else usage_ns
    return {"cpu_us": usage_ns // 1000, "cpu_user_us": user_ns // 1000, "cpu_system_us": (usage_ns - user_ns) // 1000,
            "memory_bytes": _int_or_none(texts["memory.usage_in_bytes"]),
            "memory_peak_bytes": _int_or_none(texts["memory.max_usage_in_bytes"]),
            "pids": _int_or_none(texts["pids.current"]), "io_read_bytes": None, "io_write_bytes": None}  # fmt: skip


class CounterFiles:
    """A task cgroup's COUNTER_FILES, opened once and re-read with pread: the collector reads every live
    task cgroup on every tick. ``close()`` when done.

    An idle cgroup costs two reads: while its CPU counter and memory use have not moved since the last
    read, nothing else can have (a peak needs the use to rise, a new process or I/O needs one of its
    processes to run), and the last counters are returned again (the same object). v2's io.stat is read
    on every tick all the same: write-back charges it while the cgroup's processes sleep. Everything is
    read again at least every REFRESH_S.
    """

    REFRESH_S = 5.0

    def __init__(self, version: int, dirs: dict[str, Path]):
        self.version = version
        self._fds: dict[str, int] = {}
        try:
            for index, (hierarchy, name) in enumerate(COUNTER_FILES[version]):
                try:
                    self._fds[name] = os.open(dirs[hierarchy] / name, os.O_RDONLY | os.O_CLOEXEC)
                except (OSError, KeyError):
                    if index == 0:
                        raise OSError(f"no {name} in {dirs.get(hierarchy)}") from None
        except BaseException:
            self.close()
            raise
        self._cpu_file = COUNTER_FILES[version][0][1]
        self._memory_file = COUNTER_FILES[version][2][1]
        self._still: tuple[bytes, ...] | None = None  # what proved the last counters unchanged
        self._last: dict[str, int | None] | None = None
        self._read_at = 0.0

    def read(self) -> dict[str, int | None]:
        """The counters now (as read_counters gives them); OSError once the cgroup is gone."""
        cpu = os.pread(self._fds[self._cpu_file], 4096, 0)
        if not cpu:
            raise OSError(f"{self._cpu_file} reads empty: the cgroup is gone")
        memory = self._pread(self._memory_file)
        still = (cpu, memory, self._pread("io.stat")) if self.version == 2 else (cpu, memory)
        now = time.monotonic()
        if still == self._still and now - self._read_at < self.REFRESH_S:
            return self._last  # type: ignore[return-value]  # set with _still
        texts = dict(zip((self._cpu_file, self._memory_file, "io.stat"), still))
        texts.update({name: self._pread(name) for _hierarchy, name in COUNTER_FILES[self.version] if name not in texts})
        self._last = counters_of(self.version, {name: text.decode() for name, text in texts.items()})
        self._still, self._read_at = still, now
        return self._last

    def _pread(self, name: str) -> bytes:
        fd = self._fds.get(name)
        if fd is None:
            return b""
        try:
            return os.pread(fd, 4096, 0)
        except OSError:
            return b""

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}


def _fields(text: str) -> dict[str, int]:
    """``name value`` lines (cpu.stat, cpuacct.stat) as numbers."""
    return {name: int(value) for name, value in (line.split()[:2] for line in text.splitlines() if line.strip())}


def _io_bytes(text: str) -> tuple[int | None, int | None]:
    """io.stat's rbytes and wbytes summed over its devices (None, None: no io controller)."""
    if not text.strip():
        return None, None
    read = write = 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            name, _, value = field.partition("=")
            read += int(value) if name == "rbytes" else 0
            write += int(value) if name == "wbytes" else 0
    return read, write


def _int_or_none(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _remove_tree(folder: Path) -> list[str]:
    """rmdir ``folder`` and its subfolders, deepest first; the folders left (they hold a process)."""
    kept = []
    for sub in subfolders(folder):
        kept += _remove_tree(sub)
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        kept.append(str(folder))
    return kept


def pids_below(folder: Path) -> list[int]:
    """The processes in ``folder`` and its subfolders."""
    return [*pids_in(folder), *(pid for sub in subfolders(folder) for pid in pids_below(sub))]


def pids_in(folder: Path) -> list[int]:
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
