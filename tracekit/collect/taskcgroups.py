"""Samples of the live task cgroups: ``task_cgroups.json + each task's cgroup -> cgroup.csv rows``.

input:  the worker's task_cgroups.json in the run folder (tracekit.taskcgroup: where its tasks'
        cgroups are, one folder per task and attempt, named by cgroup_name) and, on each tick, every task cgroup there
output: rows of cgroup.csv (CGROUP_CSV_COLUMNS): per tick and live task cgroup, its counters,
        cumulative since the task began (its whole process tree, however short-lived each)

The worker reads each cgroup once more after its task ended (its event's totals) and removes
it: the samples are the task's course, the event closes its books. A cgroup that goes between
the listing and the reading is simply not in that tick. Whatever the file says, only this run's
and node's folders in a mounted cgroup hierarchy are read.
"""

from __future__ import annotations

import os
from pathlib import Path

from tracekit import runfolder
from tracekit.taskcgroup import COUNTERS, CounterFiles, TaskCgroups, pids_below, pids_in, subfolders

# cgroup: the task cgroup's folder name (tracekit.taskcgroup.cgroup_name of its task id and attempt)
CGROUP_CSV_COLUMNS = ("ts_ms", "cgroup", *COUNTERS)


class TaskCgroupSampler:
    """Reads the run's and node's task cgroups on each tick, once the worker has said where they are."""

    def __init__(self, run_folder: Path, run_id: str, node_id: str):
        self.run_folder, self.run_id, self.node_id = Path(run_folder), run_id, node_id
        self._record = os.fspath(self.run_folder / runfolder.TASK_CGROUPS)
        self.version = 0
        self.folders: dict[str, Path] = {}
        self.why_not: str | None = None  # the worker's file is there but says no, or is not usable
        # Of the last tick: per task cgroup with cgroups below it (a container's), (its own processes: the
        # engine's client, registered as the task; the processes below: the container's and its monitor's).
        self.containers: list[tuple[list[int], list[int]]] = []
        # Per live task cgroup (by folder name): its kept counter files, its last counters, what is below
        # it (as in containers) and its row after ts_ms and name, all as of its last change.
        self._open: dict[str, CounterFiles] = {}
        self._last: dict[str, dict] = {}
        self._below: dict[str, tuple[list[int], list[int]] | None] = {}
        self._line_tail: dict[str, str] = {}

    def _load(self) -> None:
        """Take the worker's task_cgroups.json when it appears (the worker may start after the collector)."""
        try:
            os.stat(self._record)  # asked on every tick until it appears: one stat, nothing more
        except FileNotFoundError:
            return
        except OSError:
            pass  # recorded() says what is wrong with it
        found, self.why_not = TaskCgroups.recorded(self.run_folder, self.run_id, self.node_id)
        if found is not None:
            self.version, self.folders = found.version, found.dirs

    def rows(self, ts_ms: int) -> list[str]:
        """One CSV row per live task cgroup now."""
        if not self.folders:
            if self.why_not is None:
                self._load()
            if not self.folders:
                return []
        primary = self.folders.get("cpuacct") or self.folders.get("unified")
        try:
            names = sorted(entry.name for entry in os.scandir(primary) if entry.is_dir())
        except OSError:
            names = []  # the worker has not made it yet, or removed it at its end
        for name in self._open.keys() - set(names):
            self._forget(name)
        rows = []
        self.containers = []
        for name in names:
            try:
                files = self._open.get(name) or self._open.setdefault(
                    name, CounterFiles(self.version, {h: folder / name for h, folder in self.folders.items()}))
                counters = files.read()
            except (OSError, KeyError, ValueError):
                self._forget(name)
                continue  # gone since the listing
            if counters is not self._last.get(name):  # else nothing ran there: no new container either
                self._last[name] = counters
                self._below[name] = self._look_below(primary / name)
                self._line_tail[name] = ",".join("" if counters[c] is None else str(counters[c]) for c in COUNTERS)
            rows.append(f"{ts_ms},{name},{self._line_tail[name]}")  # a cgroup_name: no comma, no quote
            if self._below[name] is not None:
                self.containers.append(self._below[name])
        return rows

    def _forget(self, name: str) -> None:
        files = self._open.pop(name, None)
        if files is not None:
            files.close()
        for kept in (self._last, self._below, self._line_tail):
            kept.pop(name, None)

    def close(self) -> None:
        for name in list(self._open):
            self._forget(name)

    @staticmethod
    def _look_below(task: Path) -> tuple[list[int], list[int]] | None:
        """A task cgroup with cgroups below it (a container engine's): its own processes and theirs.

        A cgroup folder's link count is 2 plus its subfolders: one stat tells, no listing for a task on the
        host."""
        try:
            if os.stat(task).st_nlink <= 2:
                return None
        except OSError:
            return None  # gone since the listing
        below = [pid for sub in subfolders(task) for pid in pids_below(sub)]
        return (pids_in(task), below) if below else None
