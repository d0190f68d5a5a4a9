"""Which processes the collector follows, and their samples.

input:  the live process table (/proc), the run's PID folder, name/cmdline
        regexes
output: ``TrackedProcess`` records (once per process, processes.jsonl) and
        proc.csv rows (per tick, CUMULATIVE counters, so a lost sample loses
        no CPU time; CSV because millions of them are read back by parse)

A process is identified by (pid, create_time_ms): a reused PID is a new
process. Processes are followed when their name or command line matches,
when a wrapper registered them in the PID folder, or when their parent is
followed (descendants).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tracekit.collect import _procfs
from tracekit.collect.cgroup import read_cgroup

# A freshly forked child still has its parent's name until it calls exec; a
# process that did not match at first sight is looked at again while young.
RECHECK_NAME_WINDOW_MS = 10_000

# comm is cut at 15 characters by the kernel; then match argv[0] as well.
_COMM_MAX = 15


# proc.csv columns, in order (schemas/raw/proc_sample.schema.json describes them;
# an empty field is null: the counter could not be read).
PROC_CSV_COLUMNS = (
    "ts_ms", "pid", "create_time_ms", "cpu_user_ms", "cpu_system_ms", "rss_kb",
    "num_threads", "read_bytes", "write_bytes", "ctx_voluntary", "ctx_involuntary",
)  # fmt: skip


class ProcessKey(NamedTuple):
    pid: int
    create_time_ms: int


@dataclass
class TrackedProcess:
    key: ProcessKey
    comm: str
    ppid: int
    reason: str  # "name", "cmdline", "registered" or "descendant"
    task_id: str | None  # from the wrapper's registration, inherited by descendants
    cmdline: list[str]

    def record(self, ts_ms: int) -> dict:
        """The ``processes.jsonl`` line: identity and everything constant."""
        cgroup = read_cgroup(self.key.pid)
        return {
            "ts_ms": ts_ms,
            "pid": self.key.pid,
            "create_time_ms": self.key.create_time_ms,
            "ppid": self.ppid,
            "comm": self.comm,
            "cmdline": self.cmdline,
            "reason": self.reason,
            "task_id": self.task_id,
            "cgroup": cgroup.path,
            "container_id": cgroup.container_id,
            "container_runtime": cgroup.runtime,
            "systemd_unit": cgroup.systemd_unit,
        }


@dataclass
class _Unmatched:
    create_time_ms: int
    ppid: int


class Registration(NamedTuple):
    """A PID folder entry written by ``tracekit wrap``."""

    pid: int
    create_time_ms: int
    task_id: str | None


def registration_name(pid: int, create_time_ms: int) -> str:
    return f"{pid}-{create_time_ms}.json"


def write_registration(pid_dir: Path, pid: int, create_time_ms: int, task_id: str | None) -> Path:
    """Register a process for the collector (atomic: write, then rename)."""
    pid_dir.mkdir(parents=True, exist_ok=True)
    final = pid_dir / registration_name(pid, create_time_ms)
    temporary = pid_dir / f".{final.name}.tmp"
    temporary.write_text(
        json.dumps({"pid": pid, "create_time_ms": create_time_ms, "task_id": task_id}) + "\n"
    )
    os.replace(temporary, final)
    return final


def read_registration(path: Path) -> Registration:
    data = json.loads(path.read_text())
    return Registration(int(data["pid"]), int(data["create_time_ms"]), data.get("task_id"))


class ProcessTracker:
    """Finds the processes to follow and samples them, one tick at a time."""

    def __init__(
        self,
        match_name: re.Pattern[str] | None = None,
        match_cmdline: re.Pattern[str] | None = None,
        pid_dir: Path | None = None,
        exclude_pids: frozenset[int] = frozenset(),
    ):
        self.match_name = match_name
        self.match_cmdline = match_cmdline
        self.pid_dir = pid_dir
        self.exclude_pids = exclude_pids
        self.tracked: dict[int, TrackedProcess] = {}
        self._unmatched: dict[int, _Unmatched] = {}
        self._seen_registrations: set[str] = set()
        self.notices: list[str] = []  # harmless oddities, for the collector's log
        self.tracked_total = 0

    # -- discovery -----------------------------------------------------------

    def refresh(self, now_ms: int) -> list[TrackedProcess]:
        """Update the set of followed processes; return those new this tick."""
        live = set(_procfs.list_pids())
        for pid in list(self.tracked):
            if pid not in live:
                del self.tracked[pid]
        for pid in list(self._unmatched):
            if pid not in live:
                del self._unmatched[pid]

        new: list[TrackedProcess] = []
        new.extend(self._read_registrations())
        for pid in sorted(live):  # parents (usually lower PIDs) first: stable reasons
            if pid in self.exclude_pids:
                continue
            if pid in self.tracked:
                continue
            known = self._unmatched.get(pid)
            if known is not None and now_ms - known.create_time_ms > RECHECK_NAME_WINDOW_MS:
                continue
            try:
                stat = _procfs.read_stat(pid)
            except OSError:
                continue
            if known is not None and known.create_time_ms != stat.create_time_ms:
                known = None  # the PID was reused
            found = self._classify(stat)
            if found is None:
                self._unmatched[pid] = _Unmatched(stat.create_time_ms, stat.ppid)
            else:
                self._unmatched.pop(pid, None)
                new.append(found)
        # Descendants: children of followed processes, to a fixed point (a
        # newly followed process may already have children of its own).
        grew = True
        while grew:
            grew = False
            for pid, known in list(self._unmatched.items()):
                parent = self.tracked.get(known.ppid)
                if parent is None:
                    continue
                try:
                    stat = _procfs.read_stat(pid)
                except OSError:
                    continue
                if stat.create_time_ms != known.create_time_ms:
                    continue
                del self._unmatched[pid]
                new.append(self._track(stat, "descendant", parent.task_id))
                grew = True
        return new

    def _classify(self, stat: _procfs.ProcStat) -> TrackedProcess | None:
        parent = self.tracked.get(stat.ppid)
        if parent is not None:
            return self._track(stat, "descendant", parent.task_id)
        if self.match_name is not None and self._name_matches(stat):
            return self._track(stat, "name", None)
        if self.match_cmdline is not None:
            try:
                cmdline = _procfs.read_cmdline(stat.pid)
            except OSError:
                return None
            if self.match_cmdline.search(" ".join(cmdline)):
                return self._track(stat, "cmdline", None, cmdline)
        return None

    def _name_matches(self, stat: _procfs.ProcStat) -> bool:
        assert self.match_name is not None
        if self.match_name.search(stat.comm):
            return True
        if len(stat.comm) >= _COMM_MAX:
            try:
                argv = _procfs.read_cmdline(stat.pid)
            except OSError:
                return False
            return bool(argv) and bool(self.match_name.search(os.path.basename(argv[0])))
        return False

    def _read_registrations(self) -> list[TrackedProcess]:
        if self.pid_dir is None:
            return []
        try:
            names = os.listdir(self.pid_dir)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if name in self._seen_registrations or not name.endswith(".json") or name[0] == ".":
                continue
            self._seen_registrations.add(name)
            path = self.pid_dir / name
            try:
                entry = read_registration(path)
            except (OSError, ValueError, KeyError) as exc:
                self.notices.append(f"ignoring unreadable PID folder entry {path}: {exc}")
                continue
            try:
                stat = _procfs.read_stat(entry.pid)
            except OSError:
                stat = None
            if stat is None or stat.create_time_ms != entry.create_time_ms:
                self.notices.append(
                    f"PID folder entry {path}: process {entry.pid} has already exited; "
                    "its invocation keeps its exit totals from the wrapper"
                )
                continue
            current = self.tracked.get(entry.pid)
            if current is not None and current.key.create_time_ms == stat.create_time_ms:
                # Already followed by a regex or as a descendant: add the task.
                current.task_id = current.task_id or entry.task_id
                continue
            self._unmatched.pop(entry.pid, None)
            found.append(self._track(stat, "registered", entry.task_id))
        return found

    def _track(
        self,
        stat: _procfs.ProcStat,
        reason: str,
        task_id: str | None,
        cmdline: list[str] | None = None,
    ) -> TrackedProcess:
        if cmdline is None:
            try:
                cmdline = _procfs.read_cmdline(stat.pid)
            except OSError:
                cmdline = []
        process = TrackedProcess(
            key=ProcessKey(stat.pid, stat.create_time_ms),
            comm=stat.comm,
            ppid=stat.ppid,
            reason=reason,
            task_id=task_id,
            cmdline=cmdline,
        )
        self.tracked[stat.pid] = process
        self.tracked_total += 1
        return process

    # -- sampling ------------------------------------------------------------

    def sample_rows(self, ts_ms: int) -> list[str]:
        """One ``proc.csv`` row per live followed process (cumulative counters).

        Formatted by hand: this runs for every process on every tick.
        """
        rows = []
        for pid, process in list(self.tracked.items()):
            try:
                stat = _procfs.read_stat(pid)
                if stat.create_time_ms != process.key.create_time_ms:
                    raise ProcessLookupError
                counters = _procfs.read_counters(pid)
            except OSError:
                del self.tracked[pid]  # exited (or its PID was reused) since refresh
                continue
            rows.append(
                f"{ts_ms},{pid},{stat.create_time_ms},{stat.cpu_user_ms:.0f},{stat.cpu_system_ms:.0f},"
                f"{stat.rss_kb},{stat.num_threads},{_csv_int(counters.read_bytes)},"
                f"{_csv_int(counters.write_bytes)},{_csv_int(counters.ctx_voluntary)},"
                f"{_csv_int(counters.ctx_involuntary)}"
            )
        return rows


def _csv_int(value: int | None) -> str:
    return "" if value is None else str(value)


def process_identity(pid: int) -> ProcessKey:
    """(pid, create_time_ms) of a live process, as the collector computes it."""
    return ProcessKey(pid, _procfs.read_stat(pid).create_time_ms)
