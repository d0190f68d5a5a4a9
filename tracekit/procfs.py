"""Linux /proc readers: ``pid -> ProcStat / ProcSample``, and the host counters.

The collector's hot path. One ``/proc/<pid>/stat`` read gives identity (start
time), name, parent, CPU and RSS together, so each sample also proves it still
belongs to the same process (a reused PID has another start time). Units are
converted with the machine's real clock tick and page size.

Files read on every tick are opened once and re-read with
``os.pread(fd, size, 0)``: the kernel regenerates a /proc file's content on
each read from offset 0, and the open/close it saves (path walk, permission
check, seq_file set-up) was most of the cost. A kept ``/proc/<pid>/`` fd is
bound to that process, not to its number: once the process is reaped, reads
fail with ESRCH (``ProcessLookupError``), even after the PID is reused.
"""

from __future__ import annotations

import functools
import os
import time
from typing import NamedTuple

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_MS_PER_TICK = 1000.0 / CLK_TCK
_KB_PER_PAGE = PAGE_SIZE // 1024
_PF_KTHREAD = 0x00200000  # /proc/<pid>/stat flags: a kernel thread (it can never exec)
_READ_SIZE = 8192  # per-process files, opened per read: stat and io are < 1 kB, status ~1.5 kB
_PREAD_SIZE = 4096  # the same, kept open: a full buffer is read on to the end


@functools.cache
def boot_time_ms() -> int:
    """When this machine booted (read once, at first use: not at import)."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return int(line.split()[1]) * 1000
    raise OSError("no btime in /proc/stat")


class ProcStat(NamedTuple):
    """What /proc/<pid>/stat says about a process."""

    pid: int
    comm: str
    state: str  # R, S, D, Z (zombie: exited, not yet reaped), ...
    ppid: int
    create_time_ms: int  # epoch ms, same value for every reader (boot time + start ticks)
    cpu_user_ms: float  # cumulative, this process's threads only
    cpu_system_ms: float
    num_threads: int
    rss_kb: int
    kernel_thread: bool = False  # kernel threads never exec, so their name never changes


class ProcSample(NamedTuple):
    """One tick of a followed process: the proc.csv values (None: unreadable)."""

    create_time_ms: int  # as in ProcStat: the caller checks it is still the same process
    cpu_user_ms: float
    cpu_system_ms: float
    rss_kb: int
    num_threads: int
    read_bytes: int | None
    write_bytes: int | None
    ctx_voluntary: int | None
    ctx_involuntary: int | None
    # Exact where the kernel gives it: see exact_cpu_ns().
    cpu_ns: int = 0
    run_delay_ns: int | None = None  # the main thread's wait on a run queue (schedstat), None without schedstat
    children_cpu_ns: int = 0  # cutime + cstime: every reaped child's whole CPU (exact in the kernel, shown in ticks)


_NS_PER_TICK = 1_000_000_000 // CLK_TCK


def exact_cpu_ns(utime_ticks: int, stime_ticks: int, schedstat: bytes | None) -> tuple[int, int | None]:
    """A process's cumulative CPU in ns, and its main thread's run-queue wait (None: no schedstat).

    /proc/<pid>/stat's utime + stime is the whole thread group's CPU (the dead
    threads' too), exact in the kernel but shown in clock ticks, each cut down
    to a whole tick (10 ms); schedstat's first field is the main thread's
    CPU in ns, exact, but of that thread alone. Their larger value is never
    above the process's CPU and is exact for a single-threaded process; both
    only grow, so it does too.
    """
    ticks_ns = (utime_ticks + stime_ticks) * _NS_PER_TICK
    if not schedstat:
        return ticks_ns, None
    fields = schedstat.split()
    return max(ticks_ns, int(fields[0])), int(fields[1])


class ProcCounters(NamedTuple):
    """Counters from /proc/<pid>/io and /proc/<pid>/status (None when unreadable)."""

    read_bytes: int | None
    write_bytes: int | None
    ctx_voluntary: int | None
    ctx_involuntary: int | None


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, _READ_SIZE)
    finally:
        os.close(fd)


def _pread_all(fd: int) -> bytes:
    """The whole content of a kept /proc file, from offset 0.

    seq_file hands out at most about a page of records per read, so a short
    read is not the end: read on until an empty read.
    """
    data = os.pread(fd, 65536, 0)
    chunk = data
    while chunk:
        chunk = os.pread(fd, 65536, len(data))
        data += chunk
    return data


def _pread(fd: int) -> bytes:
    """The content of a kept per-process file (one read unless it fills the buffer)."""
    data = os.pread(fd, _PREAD_SIZE, 0)
    return data if len(data) < _PREAD_SIZE else _pread_all(fd)


def parse_stat(pid: int, data: bytes) -> ProcStat:
    """Parse the content of /proc/<pid>/stat."""
    # comm may hold spaces and parentheses: it ends at the LAST ')'.
    open_paren = data.index(b"(")
    close_paren = data.rindex(b")")
    comm = data[open_paren + 1 : close_paren].decode(errors="replace")
    fields = data[close_paren + 2 :].split()
    # fields[0] is field 3 (state) of proc(5); ProcessFiles.sample() reads the same ones.
    return ProcStat(
        pid=pid,
        comm=comm,
        state=fields[0].decode(),
        ppid=int(fields[1]),
        create_time_ms=boot_time_ms() + round(int(fields[19]) * _MS_PER_TICK),
        cpu_user_ms=int(fields[11]) * _MS_PER_TICK,
        cpu_system_ms=int(fields[12]) * _MS_PER_TICK,
        num_threads=int(fields[17]),
        rss_kb=int(fields[21]) * _KB_PER_PAGE,
        kernel_thread=bool(int(fields[6]) & _PF_KTHREAD),
    )


def read_stat(pid: int) -> ProcStat:
    """Parse /proc/<pid>/stat; raises OSError (FileNotFoundError, ...) if gone."""
    return parse_stat(pid, _read(f"/proc/{pid}/stat"))


def _int_after(data: bytes, key: bytes) -> int | None:
    """The number after ``key`` (which starts with a newline) up to the end of its line."""
    at = data.find(key)
    if at < 0:
        return None
    start = at + len(key)
    end = data.find(b"\n", start)
    return int(data[start:end] if end >= 0 else data[start:])  # int() skips the tab/spaces


# Keys start with a newline: "write_bytes:" is also the tail of
# "cancelled_write_bytes:", "voluntary_ctxt_switches:" of "nonvoluntary_...".
def _io_bytes(io: bytes) -> tuple[int | None, int | None]:
    return _int_after(io, b"\nread_bytes:"), _int_after(io, b"\nwrite_bytes:")


def _ctx_switches(status: bytes) -> tuple[int | None, int | None]:
    return (
        _int_after(status, b"\nvoluntary_ctxt_switches:"),
        _int_after(status, b"\nnonvoluntary_ctxt_switches:"),
    )


def read_counters(pid: int) -> ProcCounters:
    """I/O bytes and context switches; fields the caller may not read are None."""
    try:
        read_bytes, write_bytes = _io_bytes(_read(f"/proc/{pid}/io"))
    except PermissionError:
        read_bytes = write_bytes = None
    return ProcCounters(read_bytes, write_bytes, *_ctx_switches(_read(f"/proc/{pid}/status")))


def read_sample(pid: int) -> ProcSample:
    """``ProcessFiles(pid).sample()`` without keeping files open."""
    try:
        schedstat = _read(f"/proc/{pid}/schedstat")
    except FileNotFoundError:  # gone, or a kernel without CONFIG_SCHED_INFO: the stat read says which
        schedstat = None
    data = _read(f"/proc/{pid}/stat")
    stat = parse_stat(pid, data)
    fields = data[data.rindex(b")") + 2 :].split()
    counters = read_counters(pid)
    cpu_ns, run_delay_ns = exact_cpu_ns(int(fields[11]), int(fields[12]), schedstat)
    return ProcSample(
        stat.create_time_ms, stat.cpu_user_ms, stat.cpu_system_ms, stat.rss_kb, stat.num_threads, *counters,
        cpu_ns, run_delay_ns, (int(fields[13]) + int(fields[14])) * _NS_PER_TICK,
    )  # fmt: skip


class ProcessFiles:
    """The per-tick files of one process, opened once and re-read with pread.

    Raises OSError on creation if the process is gone; ``sample()`` raises
    ProcessLookupError (or another OSError) once it has been reaped.
    ``close()`` when done with the process: the collector must not leak fds.
    """

    FDS = 4  # fds one instance holds (at most)

    # A sleeping process's stat is read again at least this often: its RSS can shrink while it sleeps
    # (the kernel reclaims its pages), the one value in it that can change without the process running.
    STAT_REFRESH_S = 5.0

    __slots__ = ("pid", "_stat_fd", "_status_fd", "_io_fd", "_schedstat_fd", "_ctx", "_ctx_valid_while",
                 "_io", "_io_valid_while", "_last_stat", "_last", "_stat_read_at")

    def __init__(self, pid: int):
        self.pid = pid
        self._stat_fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        self._status_fd = self._io_fd = self._schedstat_fd = -1
        # The last context switch counts read from status, and the schedstat
        # line under which they still hold (None: read status again).
        self._ctx: tuple[int | None, int | None] = (None, None)
        self._ctx_valid_while: bytes | None = None
        # Likewise the I/O byte counts (io), which are the whole thread group's: kept only while
        # the process has one thread. And the last stat content and sample, returned again as is
        # while nothing in them can have changed.
        self._io: tuple[int | None, int | None] = (None, None)
        self._io_valid_while: bytes | None = None
        self._last_stat: bytes | None = None
        self._last: ProcSample | None = None
        self._stat_read_at = 0.0  # time.monotonic() of the last stat read
        try:
            self._status_fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
            self._open_io()
            try:
                self._schedstat_fd = os.open(f"/proc/{pid}/schedstat", os.O_RDONLY)
            except FileNotFoundError:  # kernel without CONFIG_SCHED_INFO: status every tick
                pass
        except BaseException:
            self.close()
            raise

    def _open_io(self) -> None:
        try:
            self._io_fd = os.open(f"/proc/{self.pid}/io", os.O_RDONLY)
        except PermissionError:  # another user's process: io stays None, retried next read
            self._io_fd = -1

    def sample(self) -> ProcSample:
        """Same values and errors as ``read_sample(pid)``.

        Runs for every followed process on every tick, so it reads and
        parses as little as it can: the known layouts of io and of the end
        of status are split once, the general key search is the fallback.

        status, the costliest file by far, is only read for its context
        switch counts, which are the main thread's alone (as is schedstat);
        they are re-read unless provably unchanged: schedstat's "times
        switched in" grows on every switch-in, and a switch-out needs the
        thread to be on a CPU (which also grows its run time). So if the
        thread was not running ('R') when the counts were read, and schedstat
        (run time, wait time, times switched in) has not changed since just
        before, it has not been switched in or out since: the counts a read
        would give are the same.

        io is skipped on the same proof when the process had a single thread
        then: its I/O counters move only while one of its threads runs (the
        kernel counts read_bytes when the running task submits the read,
        write_bytes when it dirties a page), and a new thread needs the
        only one to run to be created. With several threads, schedstat (the
        main thread's) proves nothing about the others: io is read.

        When stat's content is the same as at the last sample too (a
        sleeping process: the common case), every value is: the last sample
        is returned again, nothing parsed. On the same proof stat is not
        even read (one pread per sleeping process and tick), except every
        STAT_REFRESH_S for the RSS, which reclaim can lower meanwhile.
        """
        schedstat = os.pread(self._schedstat_fd, 256, 0) if self._schedstat_fd >= 0 else None
        now = time.monotonic()
        if schedstat is not None and schedstat == self._io_valid_while and now - self._stat_read_at < self.STAT_REFRESH_S:
            return self._last  # type: ignore[return-value]  # _io_valid_while is set with _last
        stat = _pread(self._stat_fd)
        self._stat_read_at = now
        unchanged = schedstat is not None and schedstat == self._ctx_valid_while
        if unchanged and schedstat == self._io_valid_while and stat == self._last_stat:
            return self._last  # type: ignore[return-value]  # set with _last_stat
        fields = stat[stat.rindex(b")") + 2 :].split(None, 22)  # as in parse_stat(); up to rss ([21])
        if schedstat is None or schedstat != self._io_valid_while:
            self._io = self._read_io()
        if not unchanged:
            status = _pread(self._status_fd)
            # ... voluntary_ctxt_switches: N nonvoluntary_ctxt_switches: N (the last lines)
            words = status[status.rfind(b"\nvoluntary_ctxt_switches:") :].split()
            if len(words) == 4 and words[2] == b"nonvoluntary_ctxt_switches:":
                self._ctx = (int(words[1]), int(words[3]))
            else:
                self._ctx = _ctx_switches(status)
        # fields[0] is the state, read between schedstat and the other files: not
        # running then, so any later switch shows in schedstat.
        running = fields[0] == b"R" or schedstat == b"0 0 0\n"  # 0 0 0: schedstat is off
        num_threads = int(fields[17])
        self._ctx_valid_while = None if running else schedstat
        self._io_valid_while = None if running or num_threads != 1 or self._io_fd < 0 else schedstat
        ctx_voluntary, ctx_involuntary = self._ctx
        read_bytes, write_bytes = self._io
        utime, stime = int(fields[11]), int(fields[12])
        cpu_ns, run_delay_ns = exact_cpu_ns(utime, stime, schedstat)
        self._last_stat = stat
        self._last = ProcSample(
            boot_time_ms() + round(int(fields[19]) * _MS_PER_TICK),
            utime * _MS_PER_TICK,
            stime * _MS_PER_TICK,
            int(fields[21]) * _KB_PER_PAGE,
            num_threads,
            read_bytes,
            write_bytes,
            ctx_voluntary,
            ctx_involuntary,
            cpu_ns,
            run_delay_ns,
            (int(fields[13]) + int(fields[14])) * _NS_PER_TICK,
        )
        return self._last

    def _read_io(self) -> tuple[int | None, int | None]:
        """read_bytes and write_bytes from io (None, None: not readable)."""
        if self._io_fd < 0:
            self._open_io()
            if self._io_fd < 0:
                return None, None
        try:
            io = _pread(self._io_fd)
        except PermissionError:  # checked on each read too (e.g. after a setuid exec)
            return None, None
        # rchar: N wchar: N syscr: N syscw: N read_bytes: N write_bytes: N ...
        words = io.split(None, 12)
        if words[8:9] == [b"read_bytes:"] and words[10:11] == [b"write_bytes:"]:
            return int(words[9]), int(words[11])
        return _io_bytes(io)

    def close(self) -> None:
        for fd in (self._stat_fd, self._status_fd, self._io_fd, self._schedstat_fd):
            if fd >= 0:
                os.close(fd)
        self._stat_fd = self._status_fd = self._io_fd = self._schedstat_fd = -1


def _read_to_end(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = b""
        while chunk := os.read(fd, 65536):  # argv and the environment can be long
            data += chunk
    finally:
        os.close(fd)
    return data


def read_cmdline(pid: int) -> list[str]:
    """The argv of a process ([] for kernel threads and zombies)."""
    return [arg.decode(errors="replace") for arg in _read_to_end(f"/proc/{pid}/cmdline").split(b"\0") if arg]


def environ_value(environ: bytes, name: str) -> str | None:
    """The value of ``name`` in the content of /proc/<pid>/environ (None: not set)."""
    prefix = name.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def read_environ(pid: int) -> bytes:
    """The environment the process was started (exec'd) with, as /proc/<pid>/environ holds it.

    Empty for kernel threads and zombies, and for a moment while a process
    execs: a vfork or posix_spawn parent resumes before the kernel has set
    up the new environment. Raises OSError when gone or not readable
    (another user's process).
    """
    return _read_to_end(f"/proc/{pid}/environ")


def has_exited(pid: int) -> bool:
    """True when the process is gone or a zombie (exited, not yet reaped)."""
    try:
        return read_stat(pid).state == "Z"
    except OSError:
        return True


def list_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def self_rss_kb() -> int:
    """Current RSS of this process (what psutil's memory_info().rss reads)."""
    return int(_read("/proc/self/statm").split()[1]) * _KB_PER_PAGE


class KeptFile:
    """One system-wide /proc file (stat, meminfo, net/dev, ...), kept open."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)

    def read(self) -> bytes:
        return _pread_all(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def forks_since_boot(proc_stat: bytes) -> int | None:
    """The ``processes`` line of /proc/stat: every fork/clone since boot.

    A counter that never goes back, unlike PIDs: while it stays the same, no
    process (or thread) has been created.
    """
    return _int_after(proc_stat, b"\nprocesses ")


def cpu_ticks_per_core(proc_stat: bytes, only: frozenset[int] | None = None) -> list[tuple[int, list[int]]]:
    """Per CPU (the ``cpuN`` lines of /proc/stat, or those of the CPUs in ``only``): its number and
    user, nice, system, idle, iowait, irq, softirq, steal in clock ticks (0 where the kernel has fewer)."""
    cores = []
    for line in proc_stat.split(b"\n")[1:]:  # [0] is the all-CPU line
        if not line.startswith(b"cpu"):
            break
        fields = line.split()
        number = int(fields[0][3:])
        if only is not None and number not in only:
            continue
        ticks = [int(value) for value in fields[1:9]]
        ticks += [0] * (8 - len(ticks))
        cores.append((number, ticks))
    return cores


def meminfo_kb(meminfo: bytes, names: tuple[bytes, ...]) -> dict[bytes, int | None]:
    """Selected /proc/meminfo fields in kB (None when missing)."""
    data = b"\n" + meminfo  # every key, the first one too, follows a newline
    values: dict[bytes, int | None] = {}
    for name in names:
        key = b"\n" + name + b":"
        at = data.find(key)
        if at < 0:
            values[name] = None
            continue
        start = at + len(key)
        end = data.find(b"\n", start)
        value = data[start:end] if end >= 0 else data[start:]
        values[name] = int(value.split()[0])  # "   16281204 kB"
    return values


def net_dev(content: bytes) -> dict[str, tuple[int, ...]]:
    """/proc/net/dev per interface: (rx_bytes, tx_bytes, rx_packets,
    tx_packets, rx_errors, tx_errors, rx_dropped, tx_dropped)."""
    nics = {}
    for line in content.split(b"\n")[2:]:  # two header lines
        colon = line.rfind(b":")
        if colon <= 0:
            continue
        f = line[colon + 1 :].split()
        nics[line[:colon].strip().decode()] = (
            int(f[0]), int(f[8]), int(f[1]), int(f[9]), int(f[2]), int(f[10]), int(f[3]), int(f[11])
        )  # fmt: skip
    return nics


class WholeDisks:
    """Which /proc/diskstats names are whole disks: those in /sys/block.

    psutil's rule for ``disk_io_counters(perdisk=False)``: partitions
    (sda1, nvme0n1p1) are left out, since their disk already counts them;
    every /sys/block device counts (loop, zram, dm-* included). Cached per
    name: a name does not change kind.
    """

    def __init__(self) -> None:
        self._known: dict[bytes, bool] = {}

    def __call__(self, name: bytes) -> bool:
        whole = self._known.get(name)
        if whole is None:
            path = b"/sys/block/" + name.replace(b"/", b"!")
            whole = self._known[name] = os.access(path, os.F_OK)
        return whole


def disk_stats(content: bytes, is_whole_disk: WholeDisks) -> dict[str, tuple[int, ...]]:
    """/proc/diskstats per whole disk: (read_count, write_count, read_bytes,
    write_bytes, busy_ms); sectors are 512 bytes whatever the device's, busy_ms
    is io_ticks (time with I/O in flight)."""
    disks = {}
    for line in content.split(b"\n"):
        f = line.split()
        # major minor name, then 11 fields (more since 4.18 and 5.5); the
        # 4-field partition lines of old kernels are not whole disks anyway.
        if len(f) < 14 or not is_whole_disk(f[2]):
            continue
        disks[f[2].decode()] = (int(f[3]), int(f[7]), int(f[5]) * 512, int(f[9]) * 512, int(f[12]))
    return disks
