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

import json
import os
from pathlib import Path

from tracekit import runfolder
from tracekit.taskcgroup import COUNTERS, cgroup_mount_points, node_folder_name, read_counters

# cgroup: the task cgroup's folder name (tracekit.taskcgroup.cgroup_name of its task id and attempt)
CGROUP_CSV_COLUMNS = ("ts_ms", "cgroup", *COUNTERS)


class TaskCgroupSampler:
    """Reads the run's and node's task cgroups on each tick, once the worker has said where they are."""

    def __init__(self, run_folder: Path, run_id: str, node_id: str):
        self.record = Path(run_folder) / runfolder.TASK_CGROUPS
        self.run_id, self.node_id = run_id, node_id
        self.version = 0
        self.folders: dict[str, Path] = {}
        self.why_not: str | None = None  # the worker's file is there but says no, or is not usable

    def _load(self) -> None:
        """Take the worker's task_cgroups.json when it appears (the worker may start after the collector)."""
        try:
            described = json.loads(self.record.read_bytes())
        except FileNotFoundError:
            return
        except ValueError:
            self.why_not = f"{self.record.name} is not valid JSON"
            return
        if not isinstance(described, dict) or not described.get("available"):
            self.why_not = "the worker's tasks have no cgroups of their own"
            return
        folders = described.get("folders")
        if described.get("version") not in (1, 2) or not isinstance(folders, dict) or not folders or not all(
                isinstance(f, str) and self._ours(f) for f in folders.values()):  # fmt: skip
            self.why_not = f"{self.record.name} names no task cgroups of run {self.run_id} and node {self.node_id}"
            return
        self.version, self.folders = described["version"], {name: Path(f) for name, f in folders.items()}

    def _ours(self, folder: str) -> bool:
        """A folder of this run's and node's task cgroups in a mounted cgroup hierarchy (the file is in the
        run folder, which tasks can write: it must not send the collector reading anything else)."""
        real = os.path.realpath(folder)
        suffix = f"/tracekit/{self.run_id}/{node_folder_name(self.node_id, self.record.parent)}"
        try:
            mounts = cgroup_mount_points(Path("/proc/self/mountinfo").read_text())
        except OSError:
            return False
        return real == folder and real.endswith(suffix) and any(real.startswith(m.rstrip("/") + "/") for m in mounts)

    def rows(self, ts_ms: int) -> list[str]:
        """One CSV row per live task cgroup now."""
        if not self.folders:
            if self.why_not is None:
                self._load()
            if not self.folders:
                return []
        primary = self.folders.get("cpuacct") or self.folders.get("unified")
        try:
            names = [entry.name for entry in os.scandir(primary) if entry.is_dir()]
        except OSError:
            return []  # the worker has not made it yet, or removed it at its end
        rows = []
        for name in sorted(names):
            try:
                counters = read_counters(self.version, {h: folder / name for h, folder in self.folders.items()})
            except (OSError, KeyError, ValueError):
                continue  # gone since the listing
            values = ("" if counters[c] is None else str(counters[c]) for c in COUNTERS)
            rows.append(",".join((str(ts_ms), name, *values)))  # a cgroup_name: no comma, no quote
        return rows
