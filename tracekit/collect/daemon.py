"""The collector daemon: ``CollectorConfig -> raw files in logs/<RUN_ID>/``.

One daemon per node and run. It holds an exclusive lock on the run's pidfile
for its whole life, which makes ``start`` idempotent (a second start finds the
lock taken and reports the running collector) and ``status`` exact (a stale
pidfile has no lock). It samples on a fixed monotonic grid: tick k is due at
t0 + k * interval, so delays never accumulate; each sample carries the wall
clock time at which it was really taken. SIGTERM and SIGINT end the loop with
a final sample and a flush.

Writes: node.json, host.csv, host_cpus.csv, host_net.csv, proc.csv,
cgroup.csv (a worker's live task cgroups), processes.jsonl, collector.jsonl,
collector.log, collector.pid (see tracekit.runfolder).
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import resource
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tracekit import __version__, detach, runfolder
from tracekit.cpuset import check_usable, format_cpu_list, keep_on, usable_cpus
from tracekit.collect.host import HOST_CPUS_CSV_COLUMNS, HOST_CSV_COLUMNS, HOST_NET_CSV_COLUMNS, HostSampler, self_usage
from tracekit.collect.process import PROC_CSV_COLUMNS, ProcessTracker
from tracekit.collect.procevents import EventsUnavailable, ProcEventSocket
from tracekit.collect.taskcgroups import CGROUP_CSV_COLUMNS, TaskCgroupSampler
from tracekit.collect.topology import node_facts, validate_cpu_mhz
from tracekit.errors import CollectorError, UsageError
from tracekit.filelog import close_file_logger, file_logger
from tracekit.jsonl import LineWriter

MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 3_600_000
SELF_USAGE_EVERY_TICKS = 10  # cumulative, so sparse records lose nothing
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
# Which processes a name or command-line match may follow: every one on the
# machine, or only those marked with this node's id (nodes sharing a machine).
SCOPES = ("machine", "node")


def compile_regex(pattern: str | None, flag: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(
            f"{flag} {pattern!r} is not a valid regular expression ({exc}); "
            "quote it for the shell, e.g. {flag} '^ffmpeg$|^ffprobe$'".replace("{flag}", flag)
        ) from None


@dataclass(frozen=True)
class CollectorConfig:
    """Everything one collector needs; validated on creation."""

    run_id: str
    node_id: str = field(default_factory=runfolder.default_node_id)
    stage: str = "cloud"
    interval_ms: int = 1000
    match_name: str | None = None
    match_cmdline: str | None = None
    pid_dir: Path | None = None  # None: the run folder's pids/
    host: bool = True
    logs_dir: Path = field(default_factory=runfolder.logs_dir)
    cpu_mhz: float | None = None
    role: str | None = None
    scope: str = "machine"
    cpus: tuple[int, ...] | None = None  # the node's own CPUs (tracekit.cpuset); None: whatever it may use
    process_events: bool = True  # False: discover processes by polling /proc even where events can be had

    def __post_init__(self) -> None:
        runfolder.validate_run_id(self.run_id)
        runfolder.validate_name(self.node_id, "--node-id")
        runfolder.validate_name(self.stage, "--stage")
        if not MIN_INTERVAL_MS <= self.interval_ms <= MAX_INTERVAL_MS:
            raise UsageError(
                f"--interval-ms {self.interval_ms} is out of range: use {MIN_INTERVAL_MS} "
                f"to {MAX_INTERVAL_MS} ms (100 ms = 10 samples per second)"
            )
        compile_regex(self.match_name, "--match")
        compile_regex(self.match_cmdline, "--match-cmdline")
        validate_cpu_mhz(self.cpu_mhz)
        if self.scope not in SCOPES:
            raise UsageError(f"--scope {self.scope!r} is not one of {', '.join(SCOPES)}")
        if self.cpus is not None:
            check_usable(self.cpus)  # here, before 'start' detaches a daemon that would only log it

    @property
    def node_scope(self) -> str | None:
        """The node id a matched process must be marked with, or None (any process of the machine)."""
        return self.node_id if self.scope == "node" else None

    def scope_record(self) -> dict:
        """What node.json says about the processes this collector may follow."""
        marker = (None if self.node_scope is None
                  else f"{runfolder.NODE_ID_ENV}={self.node_scope} {runfolder.RUN_ID_ENV}={self.run_id}")  # fmt: skip
        return {"process_scope": self.scope, "process_marker": marker}

    @property
    def run_folder(self) -> Path:
        return Path(self.logs_dir) / self.run_id

    @property
    def effective_pid_dir(self) -> Path:
        return self.pid_dir if self.pid_dir is not None else self.run_folder / runfolder.PID_DIR

    def to_argv(self) -> list[str]:
        """The ``tracekit collect run`` arguments that rebuild this config."""
        argv = [
            "--run-id", self.run_id,
            "--node-id", self.node_id,
            "--stage", self.stage,
            "--interval-ms", str(self.interval_ms),
            "--logs-dir", str(self.logs_dir),
            "--pid-dir", str(self.effective_pid_dir),
        ]  # fmt: skip
        if self.match_name is not None:
            argv += ["--match", self.match_name]
        if self.match_cmdline is not None:
            argv += ["--match-cmdline", self.match_cmdline]
        if not self.host:
            argv.append("--no-host")
        if self.cpu_mhz is not None:
            argv += ["--cpu-mhz", repr(self.cpu_mhz)]
        if self.role is not None:
            argv += ["--role", self.role]
        if self.scope != "machine":
            argv += ["--scope", self.scope]
        if self.cpus is not None:
            argv += ["--cpus", format_cpu_list(self.cpus)]
        if not self.process_events:
            argv.append("--no-process-events")
        return argv


@dataclass(frozen=True)
class CollectorStatus:
    run_folder: Path
    running: bool
    pid: int | None  # of the running collector, or of the stale pidfile
    last_record: dict | None = None  # the newest line of collector.jsonl

    def describe(self) -> str:
        if self.running:
            text = f"collector for {self.run_folder} is running (pid {self.pid})"
            if self.last_record and self.last_record.get("event") == "self":
                text += (
                    f", {self.last_record.get('ticks', 0)} samples, "
                    f"{self.last_record.get('processes_tracked', 0)} processes tracked"
                )
            return text
        if self.pid is not None:
            return f"no collector running for {self.run_folder} (stale pidfile of pid {self.pid})"
        return f"no collector running for {self.run_folder}"


# -- status / start / stop ----------------------------------------------------


def _last_line(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            tail = f.read().splitlines()
    except OSError:
        return None
    for raw in reversed(tail):
        try:
            return json.loads(raw)
        except ValueError:
            continue
    return None


def collector_status(run_id: str, logs_dir: Path | str | None = None) -> CollectorStatus:
    folder = runfolder.run_dir(run_id, logs_dir)
    pidfile = folder / runfolder.COLLECTOR_PIDFILE
    running = detach.read_pidfile(pidfile)
    if running is None:
        return CollectorStatus(folder, running=False, pid=detach.pidfile_pid(pidfile))
    return CollectorStatus(folder, running=True, pid=running.pid, last_record=_last_line(folder / runfolder.COLLECTOR_EVENTS))


def refuse_an_earlier_session(config: CollectorConfig) -> None:
    """A run folder whose collector was stopped (its stop record written) holds that run's collection: a new
    collector there would add a second session to it unasked (a run id reused by mistake). Refused, saying
    what to do. One that died (no stop record) may be started again: its run goes on after the crash."""
    folder = config.run_folder
    last = _last_line(folder / runfolder.COLLECTOR_EVENTS)
    if last is not None and last.get("event") == "stop" and detach.read_pidfile(folder / runfolder.COLLECTOR_PIDFILE) is None:
        raise CollectorError(f"{folder} already holds a collection of run {config.run_id} (its collector was "
                             "stopped): give another --run-id, or --append to add this session to it")  # fmt: skip


def start_collector(config: CollectorConfig, append: bool = False) -> tuple[CollectorStatus, bool]:
    """Start a detached collector; return (status, started_now).

    Idempotent: if a collector already runs for the run, it is reported and
    no second one is started. A run folder whose collector ran and ended is
    refused unless ``append`` (refuse_an_earlier_session).
    """
    if not append:
        refuse_an_earlier_session(config)
    folder = runfolder.ensure_writable_dir(config.run_folder, "run folder")
    _, started = detach.start_detached(
        [sys.executable, "-m", "tracekit", "collect", "run", "--detached", *config.to_argv()],
        folder / runfolder.COLLECTOR_PIDFILE, folder / runfolder.COLLECTOR_LOG, f"collector for run {config.run_id}",
        registers_itself=True, error=CollectorError,
    )  # fmt: skip
    return collector_status(config.run_id, config.logs_dir), started


@dataclass(frozen=True)
class StopResult:
    was_running: bool
    pid: int | None
    summary: dict | None  # the collector's final record
    message: str
    died: bool = False  # it had ended without its final record (killed): its samples stop at its last flush


def stop_collector(
    run_id: str, logs_dir: Path | str | None = None, timeout_s: float = STOP_TIMEOUT_S
) -> StopResult:
    """Stop the run's collector (final sample, flush). Idempotent."""
    status = collector_status(run_id, logs_dir)
    stopped = detach.stop_detached(
        status.run_folder / runfolder.COLLECTOR_PIDFILE, f"collector of run {run_id}", timeout_s,
        error=CollectorError, killed_note="; samples up to its last flush are kept",
    )  # fmt: skip
    if stopped is None:
        last = _last_line(status.run_folder / runfolder.COLLECTOR_EVENTS)
        if last is not None and last.get("event") != "stop":  # it started, and never wrote its stop record
            return StopResult(False, status.pid, None, (
                f"collector of run {run_id} had died before this stop (killed?): its samples end at its last "
                f"flush; see {status.run_folder / runfolder.COLLECTOR_LOG}"), died=True)  # fmt: skip
        return StopResult(False, status.pid, None, status.describe() + "; nothing to stop")
    status = CollectorStatus(status.run_folder, running=False, pid=stopped.pid)
    summary = _last_line(status.run_folder / runfolder.COLLECTOR_EVENTS)
    if summary is None or summary.get("event") != "stop":
        return StopResult(True, status.pid, None, f"collector pid {status.pid} stopped")
    message = (
        f"collector pid {status.pid} stopped: {summary['ticks']} samples, "
        f"{summary['processes_tracked']} processes tracked -> {status.run_folder}"
    )
    if summary["processes_tracked"] == 0:
        message += (
            "\nwarning: no process was tracked in this run: check --match/--match-cmdline, "
            "or run the tasks through 'tracekit wrap' with the same --run-id"
        )
    return StopResult(True, status.pid, summary, message)


# -- the daemon loop ------------------------------------------------------------


class _Stop:
    """Turns SIGTERM/SIGINT into a flag plus a byte on a wakeup pipe."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.requested = signal.Signals(signum).name

    def sleep(self, seconds: float) -> None:
        """Sleep, returning early when a stop signal arrives."""
        if seconds > 0 and self.requested is None:
            select.select([self.read_fd], [], [], seconds)

    def sleep_serving(self, until: float, handlers: dict[int, Callable[[], None]]) -> None:
        """Sleep until ``until`` (time.monotonic()), calling ``handlers[fd]()`` whenever that fd turns
        readable (the process events, the PID folder's watch); return early when a stop signal arrives.

        The events are taken in the collector's own thread, between ticks: no lock around the
        tracker, and a tick is never held up (events wait in the socket's buffer meanwhile).
        """
        poller = select.poll()  # poll, not select: the fds may be above FD_SETSIZE
        poller.register(self.read_fd, select.POLLIN)
        for fd in handlers:
            poller.register(fd, select.POLLIN)
        while self.requested is None:
            left = until - time.monotonic()
            if left <= 0:
                return
            # Each event taken as it comes, not in timed batches: a child of a few ms is followed (and
            # recorded) only if its fork is read while it lives; batching every 20 ms left most of the
            # 500 children of a shell loop unrecorded (their CPU stayed in their parent's counters).
            for fd, _mask in poller.poll(max(1, math.ceil(left * 1000))):
                handler = handlers.get(fd)
                if handler is not None:
                    handler()


def next_due(due: float, now: float, interval_s: float) -> tuple[float, int]:
    """The next grid point after ``due``, and how many grid points are skipped.

    The grid is fixed (t0 + k * interval), so a late tick does not shift the
    ticks after it. A tick less than an interval late is taken at once; when
    whole grid points have already passed (machine suspended, overloaded),
    they are skipped rather than fired as a burst of catch-up samples.
    """
    due += interval_s
    missed = max(0, math.floor((now - due) / interval_s))
    return due + missed * interval_s, missed


def _allow_more_open_files(at_most: int = 65_536) -> None:
    """Raise the soft RLIMIT_NOFILE towards the hard one.

    Each followed process keeps its /proc files open (3 fds), which makes a
    sample far cheaper; with a low soft limit (often 1024) only the first few
    hundred processes could. Safe here: the only fd given to select() is the
    wakeup pipe, opened first, so it stays below FD_SETSIZE.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = at_most if hard == resource.RLIM_INFINITY else min(hard, at_most)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass  # keep the soft limit: fewer processes keep their files open


def _csv_writer(path: Path, columns: tuple[str, ...]) -> LineWriter:
    """An appender of CSV rows; the header first when the file is new."""
    writer = LineWriter(path)
    if writer.at_start:
        writer.write_line(",".join(columns))
    return writer


class _Sampler:
    """One collector's outputs and counts: ``tick`` writes a sample of the host and every followed process."""

    def __init__(self, config: CollectorConfig, folder: Path, log) -> None:
        self.config, self.log = config, log
        events, self.why_polling = None, None
        if not config.process_events:
            self.why_polling = "process events turned off (--no-process-events)"
        else:
            try:
                events = ProcEventSocket.open()
            except EventsUnavailable as exc:
                self.why_polling = str(exc)
        self.tracker = ProcessTracker(
            match_name=compile_regex(config.match_name, "--match"),
            match_cmdline=compile_regex(config.match_cmdline, "--match-cmdline"),
            pid_dir=config.effective_pid_dir,
            exclude_pids=frozenset({os.getpid()}),
            node_scope=config.node_scope,
            run_scope=config.run_id if config.node_scope is not None else None,
            events=events,
        )
        facts = node_facts(config.node_id, config.stage, config.role, config.cpu_mhz, config.cpus is not None)
        facts.update(config.scope_record())
        facts["process_discovery"] = self.discovery_record()
        (folder / runfolder.NODE_FACTS).write_text(json.dumps(facts, indent=2) + "\n")
        self.host_sampler = HostSampler(usable_cpus()) if config.host else None
        self.host_outs = [
            _csv_writer(folder / runfolder.HOST_SAMPLES, HOST_CSV_COLUMNS),
            _csv_writer(folder / runfolder.HOST_CPU_SAMPLES, HOST_CPUS_CSV_COLUMNS),
            _csv_writer(folder / runfolder.HOST_NET_SAMPLES, HOST_NET_CSV_COLUMNS),
        ] if config.host else []  # fmt: skip
        self.proc_out = _csv_writer(folder / runfolder.PROC_SAMPLES, PROC_CSV_COLUMNS)
        # A worker's tasks in cgroups of their own (tracekit.taskcgroup): every live one each tick.
        self.cgroups = TaskCgroupSampler(folder, config.run_id, config.node_id)
        self.cgroup_out = _csv_writer(folder / runfolder.CGROUP_SAMPLES, CGROUP_CSV_COLUMNS)
        self.processes_out = LineWriter(folder / runfolder.PROCESSES)
        self.events_out = LineWriter(folder / runfolder.COLLECTOR_EVENTS)
        self.writers = (*self.host_outs, self.proc_out, self.cgroup_out, self.processes_out, self.events_out)
        self.counts = {"ticks": 0, "skipped_ticks": 0}

    def discovery_record(self) -> dict:
        """How processes are found (node.json): the kernel's process events, or polling /proc and why."""
        return {"mode": self.tracker.discovery, "why_polling": self.why_polling}

    def handlers(self) -> dict[int, Callable[[], None]]:
        """What to do, between ticks, when the process events or the PID folder's watch turn readable."""
        tracker = self.tracker
        found = {}
        if tracker.events is not None:
            found[tracker.events.fileno()] = lambda: self._write_found(*tracker.on_events(int(time.time() * 1000)))
        if tracker.watch is not None:
            found[tracker.watch.fileno()] = lambda: self._write_found(*tracker.on_registrations(int(time.time() * 1000)))
        return found

    def _write_found(self, new: list, rows: list[str]) -> None:
        for process in new:
            self.processes_out.write(process.record(int(time.time() * 1000)))
        if rows:
            self.proc_out.write_line("\n".join(rows))

    def record(self, event: str, ts_ms: int) -> dict:
        return {
            "ts_ms": ts_ms,
            "event": event,
            "pid": os.getpid(),
            "node": self.config.node_id,
            **self.counts,
            "processes_tracked": self.tracker.tracked_total,
            "processes_of_other_nodes": self.tracker.other_nodes_total,
            "processes_of_other_runs": self.tracker.other_runs_total,
            "exit_samples": self.tracker.exit_samples,
            "exits_unread": self.tracker.exits_unread,
            **self_usage(),
        }

    def begin(self, folder: Path) -> None:
        config = self.config
        self.events_out.write({
            **self.record("start", int(time.time() * 1000)),
            "version": __version__,
            "interval_ms": config.interval_ms,
            "match": config.match_name,
            "match_cmdline": config.match_cmdline,
            "pid_dir": str(config.effective_pid_dir),
            "host": config.host,
            **config.scope_record(),
        })  # fmt: skip
        self.events_out.flush()
        self.log.info(
            "collector started: run=%s node=%s interval=%d ms match=%r match_cmdline=%r scope=%s pid_dir=%s host=%s -> %s",
            config.run_id, config.node_id, config.interval_ms, config.match_name, config.match_cmdline,
            config.scope_record()["process_marker"] or "machine", config.effective_pid_dir, config.host, folder,
        )  # fmt: skip
        if self.why_polling is None:
            self.log.info("processes found by the kernel's process events (netlink proc connector)")
        else:
            self.log.info("processes found by polling /proc each tick (a process shorter than an interval may be "
                          "missed): %s", self.why_polling)  # fmt: skip

    def tick(self) -> None:
        ts_ms = int(time.time() * 1000)
        tracker = self.tracker
        for process in tracker.refresh(ts_ms):
            self.processes_out.write(process.record(ts_ms))
        rows = self.cgroups.rows(ts_ms)
        if rows:
            self.cgroup_out.write_line("\n".join(rows))
        for own, below in self.cgroups.containers:  # a container's processes: the task's, by their cgroup
            for process in tracker.adopt(below, tracker.task_of(own)):
                self.processes_out.write(process.record(ts_ms))
        rows = tracker.sample_rows(ts_ms)
        if rows:
            self.proc_out.write_line("\n".join(rows))  # one call: this runs on every tick
        if self.host_sampler is not None:
            sample = self.host_sampler.sample(ts_ms)
            host_out, cpus_out, net_out = self.host_outs
            host_out.write_line(sample.host_row())
            for out, rows in ((cpus_out, sample.cpu_rows()), (net_out, sample.net_rows())):
                if rows:
                    out.write_line("\n".join(rows))
        for notice in tracker.notices:
            self.log.info("notice: %s", notice)
        tracker.notices.clear()
        self.counts["ticks"] += 1
        if self.counts["ticks"] % SELF_USAGE_EVERY_TICKS == 0:
            self.events_out.write(self.record("self", ts_ms))
        for writer in self.writers:
            writer.flush()

    def finish(self, reason: str) -> dict:
        """The stop record, every file closed; the final record."""
        final = {**self.record("stop", int(time.time() * 1000)), "reason": reason}
        self.events_out.write(final)
        for writer in self.writers:
            writer.close()
        self.tracker.close()
        self.cgroups.close()
        if self.host_sampler is not None:
            self.host_sampler.close()
        config, tracked = self.config, self.tracker.tracked_total
        if tracked == 0:
            self.log.warning("no process was tracked in this run (match=%r, pid dir %s)", config.match_name, config.effective_pid_dir)
        self.log.info("collector stopped (%s): %d samples, %d processes tracked", reason, self.counts["ticks"], tracked)
        return final


def run_collector(config: CollectorConfig, stop_after_s: float | None = None, log_to_stderr: bool = False) -> dict:
    """Sample until SIGTERM/SIGINT (or ``stop_after_s``); return the final record."""
    # Handlers first: 'start' returns once the pidfile names this process, and a
    # stop requested right then must still end in a final sample and a flush.
    stop = _Stop()
    folder = runfolder.ensure_writable_dir(config.run_folder, "run folder")
    pidfile = folder / runfolder.COLLECTOR_PIDFILE
    with detach.hold_pidfile(pidfile, f"a collector of run {config.run_id}", CollectorError, announce_now=False) as announce:
        log = file_logger(folder / runfolder.COLLECTOR_LOG, log_to_stderr)
        if config.cpus is not None:
            keep_on(config.cpus)  # the node's CPUs: node.json and the host samples are theirs
        _allow_more_open_files()
        sampler = _Sampler(config, folder, log)
        sampler.begin(folder)
        # Ready: its start record written and its process events subscribed. 'start' returns from now on,
        # so that what is started after it is seen (and collector.jsonl is there to read).
        announce()
        # Everything allocated so far lives as long as the process: keep it out of
        # the garbage collector's full passes, and out of the ~20 ms it otherwise
        # spends on it at interpreter exit.
        gc.freeze()
        interval_s = config.interval_ms / 1000.0
        started = due = time.monotonic()
        try:
            while stop.requested is None:
                sampler.tick()
                if stop_after_s is not None and time.monotonic() - started >= stop_after_s:
                    break
                now = time.monotonic()
                due, missed = next_due(due, now, interval_s)
                sampler.counts["skipped_ticks"] += missed
                stop.sleep_serving(due, sampler.handlers())
            sampler.tick()  # the final sample: counters as of the stop
        finally:
            final = sampler.finish(stop.requested or "duration")
            close_file_logger(log)
    return final
