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

Discovery by the kernel's process events (tracekit.collect.procevents),
where they can be had: a child of a followed process is followed from its
fork, a process that execs into a match from its exec, a registered one as
soon as its registration appears (an inotify watch of the PID folder), each
with a first sample then; and an exit event gives a followed process a last
sample, read from its zombie while its parent has not reaped it yet. /proc
is then listed only at start, after the kernel dropped events, and every
RELIST_WITH_EVENTS_S as a safety net. Without events (no privilege, no
kernel support, ``--no-process-events``) discovery polls /proc at each tick,
and a process shorter than an interval may be missed.

Node scope: where several nodes share one machine (the local inventory,
loopback SSH nodes), a collector of one node must not follow another node's
processes. Everything Tracekit starts for a node carries the node id in its
environment (``TRACEKIT_NODE_ID``, set by the worker, the dispatcher and
``wrap``); with a node scope, a process matched by name or command line is
followed only when its environment (``/proc/<pid>/environ``, read once per
matching process) names this node. Registered processes (the node's own PID
folder) and descendants of followed ones are the node's by construction.
"""

from __future__ import annotations

import enum
import math
import os
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from tracekit import procfs as _procfs
from tracekit import runfolder
from tracekit.collect.cgroup import read_cgroup
from tracekit.collect.dirwatch import DirWatch
from tracekit.collect.procevents import ProcEventSocket
from tracekit.registration import ProcessKey, read_registration
from tracekit.taskcgroup import SHELL, TRAMPOLINE

# A freshly forked child still has its parent's name until it calls exec; a
# process that did not match at first sight is looked at again while young.
RECHECK_NAME_WINDOW_MS = 10_000

# /proc and the PID folder are listed only when they may have changed, and at
# least this often anyway, in case a change went unseen.
RELIST_AT_LEAST_EVERY_S = 5.0
# With process events, /proc is listed only as a safety net (and after dropped events).
RELIST_WITH_EVENTS_S = 60.0
# A PID folder mtime this much older than its listing cannot hide a later change.
_MTIME_SETTLED_NS = 2_000_000_000

# Fds left free for everything but kept /proc files (output files, /proc
# reads during discovery, the PID folder listing).
FD_RESERVE = 256

# runc's stages inside a new container ("runc:[0:PARENT]" ... "runc:[2:INIT]"), before it execs the command.
_RUNTIME_INIT = "runc:["

# comm is cut at 15 characters by the kernel; then match argv[0] as well.
_COMM_MAX = 15


# proc.csv columns, in order (schemas/raw/proc_sample.schema.json describes them;
# an empty field is null: the counter could not be read).
PROC_CSV_COLUMNS = (
    "ts_ms", "pid", "create_time_ms", "cpu_user_ms", "cpu_system_ms", "rss_kb",
    "num_threads", "read_bytes", "write_bytes", "ctx_voluntary", "ctx_involuntary",
    "cpu_ns", "run_delay_ns", "children_unseen_cpu_ns",
)  # fmt: skip


@dataclass
class TrackedProcess:
    key: ProcessKey
    comm: str
    ppid: int
    reason: str  # "name", "cmdline", "registered", "descendant" or "cgroup" (in a task's container)
    task_id: str | None  # from the wrapper's registration, inherited by descendants
    cmdline: list[str]
    recorded: bool = True  # False: followed from its fork, its processes.jsonl line not written yet
    exec_seen: bool = False  # an exec event since it was followed: name and command line to read again
    deferred: bool = False  # its line once held back: its command line read empty, in the middle of its exec
    # CPU accounting of ended children (ns; see ProcessTracker._account):
    own_ns: int = 0  # its own CPU at its last sample
    children_ns: int = 0  # the kernel's CPU of its reaped children at its last sample
    ended_children_ns: int = 0  # what the rows of its followed children that ended showed, in all
    unseen_ns: int = 0  # its reaped children's CPU that no row of theirs showed (the children_unseen_cpu_ns column)
    # Its last sample and its proc.csv row after ts_ms and pid: a sleeping process's sample is the same
    # object tick after tick (ProcessFiles.sample), and so is its row's tail.
    last_sample: _procfs.ProcSample | None = None
    last_row_tail: str = ""

    def shown_ns(self) -> int:
        """The CPU that the rows of this process and of its followed descendants show."""
        return self.own_ns + self.unseen_ns + self.ended_children_ns

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


class _Verdict(enum.Enum):
    """Why _classify follows no process."""

    NO_MATCH = "no match"  # may still exec into a match while young
    OTHER_NODE = "other node"  # matched, but another node's (or unmarked, with a node scope)
    OTHER_RUN = "other run"  # matched, this node's mark, another run's (a concurrent run with the same node id)


@dataclass
class _Unmatched:
    create_time_ms: int
    ppid: int
    foreign: _Verdict | None = None  # matched, another node's or run's: counted once, however often looked at


class ProcessTracker:
    """Finds the processes to follow and samples them, one tick at a time.

    Keeps each followed process's /proc files open between ticks (up to an
    fd budget): ``close()`` when done, and processes that exit are closed as
    soon as they are noticed.
    """

    def __init__(
        self,
        match_name: re.Pattern[str] | None = None,
        match_cmdline: re.Pattern[str] | None = None,
        pid_dir: Path | None = None,
        exclude_pids: frozenset[int] = frozenset(),
        node_scope: str | None = None,
        run_scope: str | None = None,
        events: ProcEventSocket | None = None,
    ):
        self.match_name = match_name
        self.match_cmdline = match_cmdline
        self.pid_dir = pid_dir
        self.exclude_pids = exclude_pids
        # None: every matching process of the machine; else only those marked with this node id
        # (and, with run_scope, with this run id: a concurrent run may use the same node id).
        self.node_scope = node_scope
        self.run_scope = run_scope
        self.other_nodes_total = 0  # matching processes left alone: another node's (or unmarked)
        self.other_runs_total = 0  # ... this node's mark, another run's
        self.tracked: dict[int, TrackedProcess] = {}
        # sample_rows' order, kept while the followed set stays the same: (pid, process, its kept files) by
        # start time (parents before children), and the indexes of that list by PID (proc.csv's order).
        self._order: list[tuple[int, TrackedProcess, _procfs.ProcessFiles | None]] | None = None
        self._pid_order: list[int] = []
        self._unmatched: dict[int, _Unmatched] = {}
        self._young_unmatched: set[int] = set()  # looked at again each tick (may still exec)
        self._seen_registrations: set[str] = set()
        self.notices: list[str] = []  # harmless oddities, for the collector's log
        self.tracked_total = 0
        self._files: dict[int, _procfs.ProcessFiles] = {}  # kept open, per followed pid
        self._max_kept = _kept_files_budget()
        # The last /proc listing: which PIDs, the fork counter just before it, when.
        self._proc_stat = _procfs.KeptFile("/proc/stat")
        self._listed_pids: set[int] = set()
        self._forks_at_listing: int | None = None
        self._trust_forks = True
        self._listed_at = -math.inf  # time.monotonic()
        # The last PID folder listing: the folder's stat stamp, when.
        self._pid_dir_stamp: tuple[int, int, int] | None = None
        self._pid_dir_listed_at = -math.inf
        # Process events (None: polling), and the PID folder's inotify watch that goes with them.
        self.events = events
        self.watch: DirWatch | None = None
        self._watch_unavailable = False  # inotify refused a watch of the existing folder: read it each tick
        self._overruns_seen = 0
        self._trampolines: dict[int, str] = {}  # pid -> its registration, waiting for the task's exec
        # The followed processes whose children were not read yet (followed from their fork event while the
        # kernel's filter is narrowed: read at a tick, _narrow).
        self._children_unread: set[int] = set()
        # Followed processes whose line waits: read in the middle of their exec (a command line not there yet),
        # written at their exec event, their exit or the next tick, whichever comes first (_first_samples).
        self._unsettled: dict[int, TrackedProcess] = {}
        self._any_exec = self.match_name is not None or self.match_cmdline is not None  # a name may match at an exec
        self.exit_samples = 0  # last samples read from a zombie at its exit event
        self.exits_unread = 0  # followed processes reaped before their exit event was read

    @property
    def discovery(self) -> str:
        return "events" if self.events is not None else "polling"

    def close(self) -> None:
        """Close every kept /proc file; call once done with the tracker."""
        for files in self._files.values():
            files.close()
        self._files.clear()
        self._proc_stat.close()
        if self.events is not None:
            self.events.close()
        if self.watch is not None:
            self.watch.close()
            self.watch = None

    # -- discovery -----------------------------------------------------------

    def refresh(self, now_ms: int) -> list[TrackedProcess]:
        """Update the set of followed processes; return those new this tick."""
        # With events, exec events say when a name changes: no young process is looked at again each tick.
        candidates = set(self._young_unmatched) if self.events is None else set()
        live = self._list_pids_if_changed() if self.events is None else self._list_pids_if_due()
        if live is not None:
            for pid in self.tracked.keys() - live:
                self._drop(pid)
            for pid in self._unmatched.keys() - live:
                del self._unmatched[pid]
            self._young_unmatched &= live
            candidates &= live
            candidates |= live - self.tracked.keys() - self._unmatched.keys() - self.exclude_pids

        if self.watch is None:
            # The watch first: a registration written while the folder is read then fires it.
            self._keep_watch()
            registrations = self._read_registrations()
        elif self._trampolines:
            # A registered task still in its trampoline when its registration was read: its exec event may
            # have come before the kernel's filter knew it (and been dropped). Looked at on each tick, too.
            registrations = self._read_registrations(force=True)
        else:
            registrations = []  # each one fires the watch: on_registrations follows it at once
        return self._settled() + self._narrow(self._consider(candidates, now_ms, registrations), at_tick=True)

    def _settled(self) -> list[TrackedProcess]:
        """The processes whose line waited since the last tick (_first_samples): recorded now, as they are."""
        if not self._unsettled:
            return []
        waiting, self._unsettled = self._unsettled, {}
        settled = []
        for pid, process in sorted(waiting.items()):
            if process.recorded:
                continue
            if self.tracked.get(pid) is process:
                self._reread_identity(process)
            process.recorded = True  # (one gone since, unseen by an exit event: as it was last read)
            settled.append(process)
        return settled

    def _consider(
        self, candidates: set[int], now_ms: int, new: list[TrackedProcess], exec_seen: bool = False
    ) -> list[TrackedProcess]:
        """Classify these PIDs; ``new`` (followed just now) with those followed from now on, and
        their descendants. ``exec_seen``: an exec event named them, so they are judged again
        however old they are."""
        for pid in sorted(candidates):  # parents (usually lower PIDs) first: stable reasons
            if pid in self.tracked:  # registered just now
                continue
            known = self._unmatched.get(pid)
            if not exec_seen and known is not None and now_ms - known.create_time_ms > RECHECK_NAME_WINDOW_MS:
                self._young_unmatched.discard(pid)
                continue
            try:
                stat = _procfs.read_stat(pid)
            except OSError:
                self._forget_unmatched(pid)  # gone
                continue
            found = self._classify(stat)
            if isinstance(found, _Verdict):
                foreign = found if found is not _Verdict.NO_MATCH else None
                counted = known is not None and known.foreign is found and known.create_time_ms == stat.create_time_ms
                if foreign is _Verdict.OTHER_NODE and not counted:
                    self.other_nodes_total += 1
                elif foreign is _Verdict.OTHER_RUN and not counted:
                    self.other_runs_total += 1
                self._unmatched[pid] = _Unmatched(stat.create_time_ms, stat.ppid, foreign)
                # Kernel threads never exec: their name is final. A young process may
                # still exec, whatever it was judged: a fork of an unmarked parent whose
                # command line matches (`tracekit serve --command -- ... app.py`) is
                # "another node's" until it execs the service with this node's marker.
                young = now_ms - stat.create_time_ms <= RECHECK_NAME_WINDOW_MS
                if not stat.kernel_thread and young:
                    self._young_unmatched.add(pid)
                else:
                    self._young_unmatched.discard(pid)
            else:
                self._forget_unmatched(pid)
                new.append(found)
        if new:
            # Descendants: children of followed processes, to a fixed point (a
            # newly followed process may already have children of its own).
            # Only a newly followed process can make an unmatched one a descendant.
            self._adopt_descendants(new)
        return new

    def _list_pids_if_due(self) -> set[int] | None:
        """With events: the live PIDs at start, after the kernel dropped events, and every RELIST_WITH_EVENTS_S."""
        assert self.events is not None
        now = time.monotonic()
        if self.events.overruns == self._overruns_seen and now - self._listed_at < RELIST_WITH_EVENTS_S:
            return None
        if self.events.overruns != self._overruns_seen:
            self.notices.append("the kernel dropped process events (receive buffer full): /proc listed to catch up")
            self._overruns_seen = self.events.overruns
        live = set(_procfs.list_pids())
        self._listed_pids, self._listed_at = live, now
        return live

    # -- process events --------------------------------------------------------

    def on_events(self, now_ms: int) -> tuple[list[TrackedProcess], list[str]]:
        """Take the process events waiting now: the processes followed from now on, and proc.csv
        rows (a first sample of each new process, a last one of each followed process that ended)."""
        assert self.events is not None
        execs: set[int] = set()  # exec'd, not followed: judged again, whatever their age
        execed: list[TrackedProcess] = []  # exec'd, followed and recorded already
        new: list[TrackedProcess] = []  # followed as children at their fork
        rows: list[str] = []
        for event in self.events.read():
            pid = event.pid
            if pid in self.exclude_pids:
                continue
            if event.kind == "fork":
                parent = self.tracked.get(event.ppid)
                if parent is None:
                    # A fork has its parent's name, command line and environment: judged as its parent
                    # was, until it execs (its exec event). Nothing to read for the machine's other forks.
                    continue
                try:
                    stat = _procfs.read_stat(pid)
                except OSError:
                    continue  # ended already: its parent's children counters have its CPU
                self._forget_unmatched(pid)
                child = self._track(stat, "descendant", parent.task_id)
                child.recorded = False
                new.append(child)
                if self.events.narrowed:
                    self._children_unread.add(pid)  # read at the next tick (_narrow)
            elif event.kind == "exec":
                process = self.tracked.get(pid)
                if process is not None:
                    process.exec_seen = True
                    if process.recorded:
                        execed.append(process)
                    elif self._unsettled.pop(pid, None) is not None:  # its exec done: its line written now
                        new.append(process)
                elif pid in self._trampolines:
                    self._seen_registrations.discard(self._trampolines.pop(pid))
                    new.extend(self._read_registrations(force=True))
                else:
                    execs.add(pid)
            else:  # exit
                execs.discard(pid)
                self._forget_unmatched(pid)
                self._trampolines.pop(pid, None)
                process = self.tracked.get(pid)
                if process is not None:
                    identity = (process.comm, process.cmdline)
                    waited = self._unsettled.pop(pid, None) is not None
                    row = self._last_sample(pid, process, now_ms)
                    if row is not None:
                        rows.append(row)
                    if waited:  # its line waited: written now, as its zombie says
                        new.append(process)
                    elif process.recorded and (process.comm, process.cmdline) != identity:
                        new.append(process)  # exec'd and ended within these events: its line written again
        for process in execed:
            # Its line may say what it was before the exec (runc's init, a shell's fork): written again
            # as it is now (parse keeps a process's last line), but only if that changed: a scan may
            # have found it after its exec, before this event was read.
            if self.tracked.get(process.key.pid) is process and self._reread_identity(process):
                new.append(process)
        if execs:
            new = self._consider(execs - self.tracked.keys(), now_ms, new, exec_seen=True)
        if not new and not rows:
            return new, rows  # the common case: another process of the machine forked, exec'd or ended
        return self._first_samples(self._narrow(new), now_ms, rows)

    def on_registrations(self, now_ms: int) -> tuple[list[TrackedProcess], list[str]]:
        """The PID folder changed (its watch fired): follow what was registered, with a first sample."""
        if self.watch is not None:
            self.watch.drain()
            if self.watch.gone:  # the folder was removed or replaced: watched again from the next tick
                self.watch.close()
                self.watch = None
        return self._first_samples(self._narrow(self._read_registrations(force=True)), now_ms, [])

    def _narrow(self, new: list[TrackedProcess], at_tick: bool = False) -> list[TrackedProcess]:
        """With events: the kernel's filter narrowed to the followed processes (and the registered ones
        still to exec), so that the machine's other forks and exits do not wake the collector. Returns
        ``new`` with the children of its processes that forked before the filter knew their parent.

        Between ticks the filter only grows (one attach for a batch of events); it shrinks at a tick
        (``at_tick``): a departed process's ids let a few events through meanwhile, and a loop of short
        processes costs one attach each, not two. The children of a process followed from its fork event
        are read at the next tick (most such processes are gone by then, and a child's exit comes anyway:
        its parent is in the filter); those of a process found otherwise, at once."""
        if self.events is None:
            return new
        wanted = self.tracked.keys() | self._trampolines.keys()
        filtered = self.events.followed  # what the filter lets through now (empty: not narrowed)
        already = not at_tick and wanted <= filtered  # it lets these processes' events through: no attach
        if not already and not self.events.follow(wanted if at_tick else wanted | filtered, self._any_exec):
            self._children_unread.clear()  # not narrowed: every fork comes
            return new
        if at_tick and self._children_unread:
            unread, self._children_unread = self._children_unread, set()
            for pid in unread:
                process = self.tracked.get(pid)
                if process is not None:
                    new.extend(self._missed_children(process))
        checked = 0
        while checked < len(new):
            batch, checked = new[checked:], len(new)
            for process in batch:
                if self.tracked.get(process.key.pid) is not process:
                    continue
                if at_tick or process.key.pid not in self._children_unread:
                    new.extend(self._missed_children(process))
            if checked < len(new) and not self.events.follow(self.tracked.keys() | self.events.followed, self._any_exec):
                break
        return new

    def _missed_children(self, parent: TrackedProcess) -> list[TrackedProcess]:
        """Its children not followed yet (its main thread's: /proc/PID/task/PID/children)."""
        pid = parent.key.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children", "rb") as listing:
                children = [int(child) for child in listing.read().split()]
        except (OSError, ValueError):
            return []
        found = []
        for child in children:
            if child in self.tracked or child in self.exclude_pids:
                continue
            try:
                stat = _procfs.read_stat(child)
            except OSError:
                continue
            if stat.ppid != pid or stat.comm.startswith(_RUNTIME_INIT):
                continue  # reparented since, or a container's command a moment before its exec (its cgroup says)
            self._forget_unmatched(child)
            found.append(self._track(stat, "descendant", parent.task_id))
        return found

    def _first_samples(self, new: list[TrackedProcess], now_ms: int, rows: list[str]) -> tuple[list[TrackedProcess], list[str]]:
        """Each new process (to record, once), and a first row of those still alive after ``rows``."""
        first, recorded = [], []
        for process in new:
            pid = process.key.pid
            alive = self.tracked.get(pid) is process  # else: ended within these events, sampled then
            if alive and (process.exec_seen or not process.recorded):
                self._reread_identity(process)
            if alive and not process.cmdline and not process.deferred:
                # Read in the middle of its exec (its new name, no command line yet): its line waits for its
                # exec event, its exit or the next tick, so that it is written once, whole. Once only: a
                # process may have no command line at all.
                process.deferred, process.recorded = True, False
                self._unsettled[pid] = process
            else:
                process.recorded = True
                recorded.append(process)
            if alive:
                row = self._sample_row(pid, process, now_ms)
                if row is not None:
                    first.append(row)
        rows += first
        rows.sort(key=lambda row: int(row.split(",", 2)[1]))  # one time stamp: in PID order, as a tick's
        return recorded, rows

    def _last_sample(self, pid: int, process: TrackedProcess, now_ms: int) -> str | None:
        """The row of a followed process at its exit event (its zombie's counters), if still readable."""
        if process.exec_seen or not process.recorded:
            self._reread_identity(process)
        row = self._sample_row(pid, process, now_ms)
        if row is None:
            self.exits_unread += 1
        else:
            self.exit_samples += 1
        self._drop(pid)
        return row

    def _reread_identity(self, process: TrackedProcess) -> bool:
        """Name and command line again: followed at its fork, it may have exec'd since. Whether they changed."""
        process.exec_seen = False
        before = (process.comm, process.cmdline)
        try:
            stat = _procfs.read_stat(process.key.pid)
            if stat.create_time_ms == process.key.create_time_ms:
                process.comm = stat.comm
                process.cmdline = _procfs.read_cmdline(process.key.pid) or process.cmdline
        except OSError:
            pass  # gone: what was read at its fork stays
        return (process.comm, process.cmdline) != before

    def _keep_watch(self) -> None:
        """With events, an inotify watch of the PID folder, made once the folder exists (and again after
        it was removed or replaced: on_registrations drops a watch whose folder went)."""
        if self.events is None or self.pid_dir is None or self._watch_unavailable:
            return
        try:
            # Made here if no wrapper made it yet: else the first registration, written before the folder
            # can be watched, would be read only at the next tick, a short task gone by then.
            self.pid_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            return  # not (yet) makeable: read each tick meanwhile
        self.watch = DirWatch.open(self.pid_dir)
        # No inotify here (or the folder went again at once): read each tick, as when polling.
        self._watch_unavailable = self.watch is None and self.pid_dir.is_dir()

    def _list_pids_if_changed(self) -> set[int] | None:
        """The live PIDs, or None when none can have appeared since the last listing.

        Listing /proc and looking at each new PID is most of discovery's cost.
        The kernel's fork counter tells whether any process (or thread) was
        created since: it only grows, unlike PIDs, which are reused. /proc is
        listed anyway at least every RELIST_AT_LEAST_EVERY_S; should that find a
        PID the counter missed (a /proc that fakes it), the counter is ignored.
        """
        try:
            forks = _procfs.forks_since_boot(self._proc_stat.read())
        except (OSError, ValueError):
            forks = None
        now = time.monotonic()
        unchanged = self._trust_forks and forks is not None and forks == self._forks_at_listing
        if unchanged and now - self._listed_at < RELIST_AT_LEAST_EVERY_S:
            return None
        live = set(_procfs.list_pids())
        if unchanged and live - self._listed_pids:
            self._trust_forks = False
            self.notices.append("the fork counter of /proc/stat missed new processes: listing /proc every tick")
        self._listed_pids, self._forks_at_listing, self._listed_at = live, forks, now
        return live

    def _forget_unmatched(self, pid: int) -> None:
        self._unmatched.pop(pid, None)
        self._young_unmatched.discard(pid)

    def _adopt_descendants(self, new: list[TrackedProcess]) -> None:
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
                if stat.create_time_ms != known.create_time_ms or stat.comm.startswith(_RUNTIME_INIT):
                    continue
                self._forget_unmatched(pid)
                new.append(self._track(stat, "descendant", parent.task_id))
                grew = True

    def _classify(self, stat: _procfs.ProcStat) -> TrackedProcess | _Verdict:
        """The process, followed from now on; or why not (no match, another node's)."""
        parent = self.tracked.get(stat.ppid)
        if parent is not None:
            if stat.comm.startswith(_RUNTIME_INIT):
                return _Verdict.NO_MATCH  # a container's command a moment before its exec: looked at again
            return self._track(stat, "descendant", parent.task_id)
        cmdline = None
        if self.match_name is not None and self._name_matches(stat):
            reason = "name"
        elif self.match_cmdline is not None:
            try:
                cmdline = _procfs.read_cmdline(stat.pid)
            except OSError:
                return _Verdict.NO_MATCH
            if not self.match_cmdline.search(" ".join(cmdline)):
                return _Verdict.NO_MATCH
            reason = "cmdline"
        else:
            return _Verdict.NO_MATCH
        verdict = self._scope_verdict(stat.pid)
        if verdict is not None:
            return verdict
        return self._track(stat, reason, None, cmdline)

    def _scope_verdict(self, pid: int) -> _Verdict | None:
        """None when this matching process is this node's run's (always, without a node scope)."""
        if self.node_scope is None:
            return None
        try:
            environ = _procfs.read_environ(pid)
        except PermissionError:
            environ = None  # another user's: not known to be ours
        except OSError:
            return _Verdict.NO_MATCH  # gone: forgotten at the next listing
        if environ == b"":
            return _Verdict.NO_MATCH  # still exec'ing (or an empty environment): looked at again while young
        if environ is None or _procfs.environ_value(environ, runfolder.NODE_ID_ENV) != self.node_scope:
            return _Verdict.OTHER_NODE
        if self.run_scope is not None and _procfs.environ_value(environ, runfolder.RUN_ID_ENV) != self.run_scope:
            return _Verdict.OTHER_RUN
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

    def _pid_dir_names(self, force: bool = False) -> list[str] | None:
        """The PID folder's entries, or None when it has not changed since the last listing.

        A stat of the folder is cheaper than listing it. A change within the
        file system's timestamp granularity of the listing can leave the mtime
        as it was, so an unchanged stamp is trusted only when the mtime is well
        older than the listing; and the folder is listed at least every
        RELIST_AT_LEAST_EVERY_S anyway.
        """
        assert self.pid_dir is not None
        now = time.monotonic()
        try:
            st = os.stat(self.pid_dir)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if not force and stamp == self._pid_dir_stamp and now - self._pid_dir_listed_at < RELIST_AT_LEAST_EVERY_S:
                return None
            names = os.listdir(self.pid_dir)
        except FileNotFoundError:
            self._pid_dir_stamp = None
            return []
        settled = time.time_ns() - st.st_mtime_ns > _MTIME_SETTLED_NS
        self._pid_dir_stamp = stamp if settled else None
        self._pid_dir_listed_at = now
        return names

    def _read_registrations(self, force: bool = False) -> list[TrackedProcess]:
        if self.pid_dir is None:
            return []
        names = self._pid_dir_names(force)
        if names is None:
            return []
        self._seen_registrations.intersection_update(names)  # forget removed entries
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
            try:
                cmdline = _procfs.read_cmdline(stat.pid)
            except OSError:
                cmdline = []
            if cmdline[:3] == [SHELL, "-c", TRAMPOLINE]:
                # Still the task cgroup's trampoline, a moment before it execs the task: its name and
                # command line would be the shell's. Looked at again on the next tick (or at its exec event).
                self._seen_registrations.discard(name)
                self._trampolines[entry.pid] = name
                continue
            self._forget_unmatched(entry.pid)
            found.append(self._track(stat, "registered", entry.task_id, cmdline))
        return found

    def adopt(self, pids: list[int], task_id: str | None) -> list[TrackedProcess]:
        """Follow ``pids``, found in a task's cgroup below its own (a container's: the engine's monitor
        starts them, not the task's registered process), as ``task_id``'s; those new here are returned."""
        found = []
        for pid in pids:
            known = self.tracked.get(pid)
            if known is not None and known.task_id is None and task_id is not None:
                known.task_id = task_id  # followed by its name (at its exec): the task's all the same; its line
                found.append(known)  # is written again with the task (parse keeps a process's last line)
            if known is not None or pid in self.exclude_pids:
                continue
            try:
                stat = _procfs.read_stat(pid)
            except OSError:
                continue  # gone since the cgroup's listing
            if stat.comm.startswith(_RUNTIME_INIT):
                continue  # the OCI runtime's init, about to exec the container's command: looked at next tick
            self._forget_unmatched(pid)
            found.append(self._track(stat, "cgroup", task_id))
        return self._narrow(found)

    def task_of(self, pids: list[int]) -> str | None:
        """The task id of the first followed process among ``pids`` that has one."""
        for pid in pids:
            process = self.tracked.get(pid)
            if process is not None and process.task_id is not None:
                return process.task_id
        return None

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
        self._drop(stat.pid)  # an earlier process with this PID, if still listed
        self.tracked[stat.pid] = process
        self._order = None
        self.tracked_total += 1
        if len(self._files) < self._max_kept:
            try:
                # Opened after the stat read: if the PID was reused in between,
                # the first sample sees another start time and drops it.
                self._files[stat.pid] = _procfs.ProcessFiles(stat.pid)
            except OSError:
                pass  # gone already: the next sample finds out
        return process

    def _drop(self, pid: int) -> None:
        """Stop following ``pid`` (exited, or its PID reused) and close its files."""
        process = self.tracked.pop(pid, None)
        self._order = None
        if process is not None:
            parent = self.tracked.get(process.ppid)
            if parent is not None and parent.key.create_time_ms <= process.key.create_time_ms:
                # Its parent's children counters take its whole CPU once it is reaped: what its rows
                # showed of it is no longer unseen there.
                parent.ended_children_ns += process.shown_ns()
        files = self._files.pop(pid, None)
        if files is not None:
            files.close()

    # -- sampling ------------------------------------------------------------

    def sample_rows(self, ts_ms: int) -> list[str]:
        """One ``proc.csv`` row per live followed process (cumulative counters).

        Formatted by hand: this runs for every process on every tick. In PID
        order, so that proc.csv is in the trace's (ts, pid) order and parse
        need not move its rows.
        """
        # Parents read before their children (by start time), and each one's unseen children's CPU worked
        # out once every read is done: a child reaped before its parent's read is then known to have
        # ended (its own read failed), one reaped after it is in neither: never counted twice.
        if self._order is None:  # the followed set changed since the last tick
            by_start = sorted(self.tracked.values(), key=lambda p: p.key.create_time_ms)
            self._order = [(p.key.pid, p, self._files.get(p.key.pid)) for p in by_start]
            self._pid_order = sorted(range(len(by_start)), key=lambda i: by_start[i].key.pid)
        order, by_pid = self._order, self._pid_order
        samples = []
        for pid, process, files in order:
            try:
                sample = _procfs.read_sample(pid) if files is None else files.sample()
            except OSError:
                sample = None
            if sample is None or sample.create_time_ms != process.key.create_time_ms:
                self._drop(pid)  # exited (or its PID was reused) since refresh
                sample = None
            samples.append(sample)
        format_row = self._format_row
        return [format_row(ts_ms, order[i][0], order[i][1], samples[i]) for i in by_pid if samples[i] is not None]

    def _sample_row(self, pid: int, process: TrackedProcess, ts_ms: int) -> str | None:
        """The proc.csv row of one followed process now; None when it is gone (or its PID reused)."""
        sample = self._read_sample(pid, process)
        return None if sample is None else self._format_row(ts_ms, pid, process, sample)

    def _read_sample(self, pid: int, process: TrackedProcess) -> _procfs.ProcSample | None:
        files = self._files.get(pid)
        try:
            s = _procfs.read_sample(pid) if files is None else files.sample()
        except OSError:
            return None
        return s if s.create_time_ms == process.key.create_time_ms else None

    def _format_row(self, ts_ms: int, pid: int, process: TrackedProcess, s: _procfs.ProcSample) -> str:
        if s is process.last_sample:
            # The same counters: _account would change nothing (its values only grow, and the ended
            # children's CPU it subtracts only grows too), so neither would the row after ts_ms and pid.
            return f"{ts_ms},{pid},{process.last_row_tail}"
        self._account(process, s)
        process.last_sample = s
        # An empty field is None: that counter could not be read.
        process.last_row_tail = tail = (
            f"{s.create_time_ms},{s.cpu_user_ms:.0f},{s.cpu_system_ms:.0f},"
            f"{s.rss_kb},{s.num_threads},{'' if s.read_bytes is None else s.read_bytes},"
            f"{'' if s.write_bytes is None else s.write_bytes},"
            f"{'' if s.ctx_voluntary is None else s.ctx_voluntary},"
            f"{'' if s.ctx_involuntary is None else s.ctx_involuntary},"
            f"{process.own_ns},{'' if s.run_delay_ns is None else s.run_delay_ns},{process.unseen_ns}"
        )
        return f"{ts_ms},{pid},{tail}"

    @staticmethod
    def _account(process: TrackedProcess, s: _procfs.ProcSample) -> None:
        """Its own CPU, and the CPU of its reaped children that their rows did not show.

        A short child often ends and is reaped before any sample (or before its
        last one) could read it, and its CPU would be lost; but a parent's
        children counters (cutime + cstime) take each reaped child's whole CPU,
        its own reaped children's included, exact in the kernel. What they hold
        beyond what the ended children's rows showed is the unseen part, shown
        on the parent's row. Kept from going down: a child reaped but not yet
        known to have ended shows in both for a moment (the counters are cut
        to clock ticks, too). Orphans (reaped by another process) are not counted.
        """
        process.own_ns = max(process.own_ns, s.cpu_ns)
        process.children_ns = s.children_cpu_ns
        process.unseen_ns = max(process.unseen_ns, s.children_cpu_ns - process.ended_children_ns)


def _kept_files_budget() -> int:
    """How many processes may keep their /proc files open, leaving
    FD_RESERVE fds of the soft RLIMIT_NOFILE for everything else."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(0, soft - FD_RESERVE) // _procfs.ProcessFiles.FDS
