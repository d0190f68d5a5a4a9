"""The kernel's process events: ``netlink proc connector -> ProcEvent records``.

input:  the proc connector (NETLINK_CONNECTOR, CN_IDX_PROC): one multicast
        message per fork, exec and exit of every task of the machine
output: ``ProcEvent`` records (fork, exec, exit of processes; threads left out)

Listening needs CAP_NET_ADMIN (root) and a kernel with CONFIG_PROC_EVENTS;
``ProcEventSocket.open()`` raises ``EventsUnavailable`` with the reason
otherwise, and the collector polls /proc instead. The socket is non-blocking:
the collector drains it in its sleep between ticks (select with the next
tick's deadline as the timeout), so the events never hold up a tick. A
socket whose receive buffer overflowed (ENOBUFS: events were dropped) says
so through ``ProcEventSocket.overruns``: the collector then lists /proc once
to catch up.

The message layout (include/uapi/linux/netlink.h, connector.h, cn_proc.h):
nlmsghdr (16 bytes) | cn_msg (20 bytes) | proc_event: what u32, cpu u32,
timestamp_ns u64, then the event's data. Parsing is pure (``parse_messages``)
and tested with captured bytes.

Every event of the machine would wake the collector, threads' and uid/sid/
comm changes too. A socket filter (classic BPF, ``EVENT_FILTER``: any
kernel) lets through only what ``parse_messages`` keeps: process forks,
execs and process exits; the kernel drops the rest before it queues them.
(The proc connector's own event-type filter, kernel 6.6+, could not drop the
threads' forks and exits, which a busy JVM or Go program makes most of.)
Once the collector follows processes, ``follow()`` narrows the filter to
them (``followed_filter``): forks of a followed parent, exits of a followed
process or of a followed process's child, execs of followed processes (or
of any, when a name or command line may match). On a machine busy with other
work, each of its events would otherwise wake the collector (~10-40 us each).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import select
import socket
import struct
import time
from collections.abc import Collection
from typing import NamedTuple

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2

PROC_EVENT_NONE = 0x00000000  # the kernel's answer to a listen request
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT_HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_FORK = struct.Struct("=IIII")  # parent_pid, parent_tgid, child_pid, child_tgid
_EXEC = struct.Struct("=II")  # process_pid, process_tgid
_EXIT = struct.Struct("=IIII")  # process_pid, process_tgid, exit_code, exit_signal (then parent's, since 4.18)
_HEAD_SIZE = _NLMSGHDR.size + _CN_MSG.size
_MESSAGE_HEAD = struct.Struct("=IHHII" "IIIIHH")  # nlmsghdr, cn_msg

# How long the check at subscription waits for a child's own events.
PROBE_TIMEOUT_S = 2.0
# Receive buffer asked for: a burst of forks (a build) must not overflow it between two drains.
RECEIVE_BUFFER_BYTES = 4 << 20

SO_ATTACH_FILTER = 26


def _be32(value: int) -> int:
    """A u32 field of the message as a BPF absolute load sees it (big-endian) on this machine."""
    return int.from_bytes(struct.pack("=I", value), "big")


# Offsets of the fields the filter looks at, from the start of the datagram (one message per datagram).
_WHAT = _HEAD_SIZE  # proc_event.what
_BODY = _HEAD_SIZE + _EVENT_HEAD.size  # fork: parent_pid, parent_tgid, child_pid, child_tgid; exit: pid, tgid
# (code, jump if true, jump if false, k): accept (any non-zero length) a process's fork, exec or exit,
# drop everything else (a thread's fork or exit, uid, gid, sid, ptrace, comm, coredump, the listen answers).
_LD_ABS, _JEQ_K, _JEQ_X, _TAX, _RET = 0x20, 0x15, 0x1D, 0x07, 0x06
_ACCEPT, _DROP = 0xFFFFFFFF, 0
EVENT_FILTER = (
    (_LD_ABS, 0, 0, _WHAT),  # 0
    (_JEQ_K, 12, 0, _be32(PROC_EVENT_EXEC)),  # 1: -> 14 accept
    (_JEQ_K, 2, 0, _be32(PROC_EVENT_FORK)),  # 2: -> 5 fork
    (_JEQ_K, 5, 0, _be32(PROC_EVENT_EXIT)),  # 3: -> 9 exit
    (_RET, 0, 0, _DROP),  # 4
    # fork: of a process (child_pid == child_tgid), not of a thread
    (_LD_ABS, 0, 0, _BODY + 8),  # 5
    (_TAX, 0, 0, 0),  # 6
    (_LD_ABS, 0, 0, _BODY + 12),  # 7
    (_JEQ_X, 5, 4, 0),  # 8: -> 14 accept, 13 drop
    # exit: of a process (pid == tgid)
    (_LD_ABS, 0, 0, _BODY),  # 9
    (_TAX, 0, 0, 0),  # 10
    (_LD_ABS, 0, 0, _BODY + 4),  # 11
    (_JEQ_X, 1, 0, 0),  # 12: -> 14 accept, 13 drop
    (_RET, 0, 0, _DROP),  # 13
    (_RET, 0, 0, _ACCEPT),  # 14
)

# Narrowed to the followed processes (followed_filter): more than this many, and the program would pass
# the kernel's 4,096 instructions (8 per process): EVENT_FILTER then.
MAX_FILTERED_PROCESSES = 500
_JA = 0x05
_EXIT_PARENT_TGID = _BODY + 20  # exit: pid, tgid, exit_code, exit_signal, parent_pid, parent_tgid (4.18+; 0 before)


@functools.lru_cache(maxsize=4096)
def _accept_if(tgid: int) -> bytes:
    """``if A == tgid: accept``, packed: two instructions that jump only within themselves, so the same
    bytes serve anywhere in a program."""
    return _pack((_JEQ_K, 0, 1, tgid), (_RET, 0, 0, _ACCEPT))


def _pack(*program: tuple[int, int, int, int]) -> bytes:
    return b"".join(struct.pack("=HBBI", *op) for op in program)


def followed_filter(followed: Collection[int], any_exec: bool) -> bytes | None:
    """EVENT_FILTER narrowed to what a collector following ``followed`` (process ids) reads, packed: a fork
    whose parent is followed; an exit of a followed process, or of a child of one (the exit's parent fields:
    a child followed from its fork may end before the filter knows it); an exec of a followed process, or
    of any process with ``any_exec`` (a name or command line to match). None: too many to list."""
    if len(followed) > MAX_FILTERED_PROCESSES:
        return None
    listed = b"".join(_accept_if(_be32(tgid)) for tgid in sorted(followed))
    exec_block = _pack((_RET, 0, 0, _ACCEPT)) if any_exec else _pack((_LD_ABS, 0, 0, _BODY + 4)) + listed + _pack((_RET, 0, 0, _DROP))
    fork_block = _pack(
        (_LD_ABS, 0, 0, _BODY + 8), (_TAX, 0, 0, 0), (_LD_ABS, 0, 0, _BODY + 12),  # a process, not a thread
        (_JEQ_X, 1, 0, 0), (_RET, 0, 0, _DROP), (_LD_ABS, 0, 0, _BODY + 4),  # its parent's tgid
    ) + listed + _pack((_RET, 0, 0, _DROP))
    exit_block = _pack(
        (_LD_ABS, 0, 0, _BODY), (_TAX, 0, 0, 0), (_LD_ABS, 0, 0, _BODY + 4),  # a process, not a thread
        (_JEQ_X, 1, 0, 0), (_RET, 0, 0, _DROP),
    ) + listed + _pack((_LD_ABS, 0, 0, _EXIT_PARENT_TGID)) + listed + _pack((_RET, 0, 0, _DROP))
    exec_at = 8
    fork_at = exec_at + len(exec_block) // 8
    exit_at = fork_at + len(fork_block) // 8
    head = _pack(
        (_LD_ABS, 0, 0, _WHAT),  # 0
        (_JEQ_K, 3, 0, _be32(PROC_EVENT_EXEC)),  # 1: -> 5
        (_JEQ_K, 3, 0, _be32(PROC_EVENT_FORK)),  # 2: -> 6
        (_JEQ_K, 3, 0, _be32(PROC_EVENT_EXIT)),  # 3: -> 7
        (_RET, 0, 0, _DROP),  # 4
        (_JA, 0, 0, exec_at - 6),  # 5 (a jump's k counts from the next instruction)
        (_JA, 0, 0, fork_at - 7),  # 6
        (_JA, 0, 0, exit_at - 8),  # 7
    )
    return head + exec_block + fork_block + exit_block


class EventsUnavailable(Exception):
    """Process events cannot be had here (no privilege, no kernel support): poll /proc instead."""


class ProcEvent(NamedTuple):
    """One process event. For a fork, ``pid`` is the child and ``ppid`` the parent; for exec and
    exit, ``ppid`` is 0 (exit's parent fields are not in every kernel's message)."""

    kind: str  # "fork", "exec" or "exit"
    pid: int
    ppid: int
    timestamp_ns: int  # CLOCK_MONOTONIC of the event (ktime_get_ns)


def listen_request(listen: bool = True) -> bytes:
    """The message that starts (or stops) the kernel's multicast of process events to this socket."""
    op = struct.pack("=I", PROC_CN_MCAST_LISTEN if listen else PROC_CN_MCAST_IGNORE)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, 0) + cn


def parse_messages(data: bytes) -> tuple[list[ProcEvent], bool]:
    """The process events in one datagram, and whether the kernel said it had dropped some.

    Thread events (a fork whose child is not a group leader, exec and exit of
    a thread that is not its group's leader) are left out: a thread is no
    process. Events of other kinds (uid, comm, ...) are left out too.
    """
    if len(data) >= _HEAD_SIZE + _EVENT_HEAD.size:
        # The kernel sends one message per datagram: read in one go (this runs for every event of the machine).
        length, kind, _f, _s, _p, idx, val, *_ = _MESSAGE_HEAD.unpack_from(data)
        if length == len(data) and kind == NLMSG_DONE and idx == CN_IDX_PROC and val == CN_VAL_PROC:
            event = _parse_event(data, _HEAD_SIZE, length)
            return ([] if event is None else [event]), False
    events: list[ProcEvent] = []
    overrun = False
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break  # truncated or garbled: the rest cannot be framed
        if kind == NLMSG_OVERRUN:
            overrun = True
        elif kind == NLMSG_DONE and length >= _HEAD_SIZE + _EVENT_HEAD.size:
            idx, val, *_ = _CN_MSG.unpack_from(data, offset + _NLMSGHDR.size)
            if (idx, val) == (CN_IDX_PROC, CN_VAL_PROC):
                event = _parse_event(data, offset + _HEAD_SIZE, offset + length)
                if event is not None:
                    events.append(event)
        offset += (length + 3) & ~3  # NLMSG_ALIGN
    return events, overrun


def _parse_event(data: bytes, start: int, end: int) -> ProcEvent | None:
    what, _cpu, timestamp_ns = _EVENT_HEAD.unpack_from(data, start)
    body = start + _EVENT_HEAD.size
    if what == PROC_EVENT_FORK and end - body >= _FORK.size:
        parent_pid, parent_tgid, child_pid, child_tgid = _FORK.unpack_from(data, body)
        if child_pid != child_tgid:
            return None  # a new thread
        return ProcEvent("fork", child_tgid, parent_tgid, timestamp_ns)
    if what == PROC_EVENT_EXEC and end - body >= _EXEC.size:
        pid, tgid = _EXEC.unpack_from(data, body)
        # A thread that execs becomes its group's leader: the process (tgid) is what changed.
        return ProcEvent("exec", tgid, 0, timestamp_ns)
    if what == PROC_EVENT_EXIT and end - body >= _EXIT.size:
        pid, tgid, _code, _signal = _EXIT.unpack_from(data, body)
        if pid != tgid:
            return None  # a thread ended, its process lives on
        return ProcEvent("exit", tgid, 0, timestamp_ns)
    return None


class ProcEventSocket:
    """A non-blocking proc connector socket; ``fileno()`` for select, ``read()`` to drain it."""

    def __init__(self, sock: socket.socket, filtered: bool = False):
        self._sock = sock
        self.overruns = 0  # times the kernel dropped events (the receive buffer was full)
        self.filtered = filtered  # True: the kernel drops the events parse_messages would leave out
        self.narrowed = False  # True: ... and those of processes not followed (followed_filter)
        self._following: tuple[frozenset[int], bool] | None = None

    @property
    def followed(self) -> frozenset[int]:
        """The processes the narrowed filter lets through (empty when not narrowed)."""
        return self._following[0] if self.narrowed and self._following else frozenset()

    def follow(self, followed: Collection[int], any_exec: bool) -> bool:
        """Narrow the kernel's filter to these processes (followed_filter), when they changed; whether it
        is narrowed now (False: too many, or the kernel refused; EVENT_FILTER's events then)."""
        if not self.filtered:
            return False
        key = (frozenset(followed), any_exec)
        if key == self._following:
            return self.narrowed
        self._following = key
        program = followed_filter(key[0], any_exec)
        self.narrowed = program is not None and attach_filter(self._sock, program)
        if not self.narrowed:
            attach_filter(self._sock, EVENT_FILTER)
        return self.narrowed

    @classmethod
    def open(cls) -> ProcEventSocket:
        """Subscribe to the machine's process events; raises EventsUnavailable with the reason."""
        namespace = own_namespace()
        if namespace is not None:
            raise EventsUnavailable(f"the kernel sends process events only to the machine's own PID and user "
                                    f"namespaces, and this collector runs in a {namespace} namespace of its own "
                                    "(e.g. a container)")  # fmt: skip
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except (OSError, AttributeError) as exc:  # EPROTONOSUPPORT: no connector in this kernel
            raise EventsUnavailable(f"no netlink connector socket ({_reason(exc)})") from None
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
                # SO_RCVBUFFORCE (33) passes net.core.rmem_max with CAP_NET_ADMIN; without, keep the above.
                sock.setsockopt(socket.SOL_SOCKET, 33, RECEIVE_BUFFER_BYTES)
            except OSError:
                pass
            filtered = attach_filter(sock, EVENT_FILTER)  # before the first event can be queued
            sock.bind((0, CN_IDX_PROC))  # EPERM without CAP_NET_ADMIN
            sock.send(listen_request())
        except OSError as exc:
            sock.close()
            raise EventsUnavailable(f"cannot listen to the kernel's process events ({_reason(exc)})") from None
        sock.setblocking(False)
        found = cls(sock, filtered)
        try:
            found._probe()
        except EventsUnavailable:
            found.close()
            raise
        return found

    def _probe(self, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        """Start a child and wait for its events, with its PID as this process sees it. The kernel takes a
        listen request from a PID or user namespace other than the machine's without a word and sends
        nothing (or PIDs of the machine's namespace): a collector in a container, or a fresh-machine
        chroot, would wait for events that never come and miss every process."""
        child = os.posix_spawn("/bin/true", ["/bin/true"], {})
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                select.select([self._sock], [], [], max(0.0, deadline - time.monotonic()))
                if any(event.pid == child for event in self.read()):
                    return
        finally:
            os.waitpid(child, 0)
        raise EventsUnavailable("the kernel sends this collector no process events with its PIDs (it runs in a "
                                "PID or user namespace of its own, e.g. a container: the connector serves only "
                                "the machine's)")  # fmt: skip

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[ProcEvent]:
        """Every event waiting now (never blocks); an overflow counts in ``overruns``."""
        events: list[ProcEvent] = []
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return events
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # events were dropped: the caller catches up from /proc
                    self.overruns += 1
                    continue
                raise
            found, overrun = parse_messages(data)
            events.extend(found)
            self.overruns += overrun

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            try:
                self._sock.send(listen_request(False))
            except OSError:
                pass
            self._sock.close()


# The machine's initial namespaces have fixed inode numbers (include/linux/proc_ns.h).
_INIT_NAMESPACE_INODES = {"pid": 0xEFFFFFFC, "user": 0xEFFFFFFD}


def own_namespace() -> str | None:
    """"pid" or "user" when this process runs in such a namespace other than the machine's initial one
    (where the kernel sends no process events), else None (or when it cannot be told: the probe decides)."""
    for kind, inode in _INIT_NAMESPACE_INODES.items():
        try:
            if os.stat(f"/proc/self/ns/{kind}").st_ino != inode:
                return kind
        except OSError:
            continue
    return None


def attach_filter(sock: socket.socket, program: tuple[tuple[int, int, int, int], ...] | bytes) -> bool:
    """Attach a classic BPF program (SO_ATTACH_FILTER; instructions, or packed); False where the kernel
    refuses it (then everything is read, and parse_messages leaves out the same events)."""
    packed = program if isinstance(program, bytes) else _pack(*program)
    code = ctypes.create_string_buffer(packed, len(packed))
    fprog = struct.pack("@HP", len(packed) // 8, ctypes.addressof(code))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {os.strerror(exc.errno)}"
    return str(exc)
