"""The proc connector's messages, parsed from bytes captured on a real kernel (6.18, x86-64).

tests/data/procevents/captured.bin: length-prefixed datagrams as the socket gave them while
`sh -c '/bin/true; exit 3'` ran from a Python process (pid 31573) that then started a thread:
the listen answer, fork, exec, fork, exec, exit, exit, the thread's fork and exit.
"""

from __future__ import annotations

import struct
from pathlib import Path

from tracekit.collect.procevents import (
    EVENT_FILTER,
    MAX_FILTERED_PROCESSES,
    attach_filter,
    followed_filter,
    NLMSG_OVERRUN,
    ProcEvent,
    listen_request,
    parse_messages,
)

CAPTURED = Path(__file__).resolve().parent.parent / "data" / "procevents" / "captured.bin"


def datagrams() -> list[bytes]:
    data, found, offset = CAPTURED.read_bytes(), [], 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "little")
        found.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return found


def test_a_captured_fork_exec_exit_sequence_is_read_as_processes():
    events = [parse_messages(datagram) for datagram in datagrams()]
    assert all(overrun is False for _, overrun in events)
    assert [found for found, _ in events] == [
        [],  # the answer to the listen request
        [ProcEvent("fork", 31574, 31573, 33856838890996)],
        [ProcEvent("exec", 31574, 0, 33856839133575)],
        [ProcEvent("fork", 31575, 31574, 33856839913377)],
        [ProcEvent("exec", 31575, 0, 33856840282468)],
        [ProcEvent("exit", 31575, 0, 33856840928958)],
        [ProcEvent("exit", 31574, 0, 33856841041213)],
        [],  # a thread of 31573 started: no process
        [],  # ... and ended
    ]


def test_several_messages_in_one_datagram_are_all_read():
    grams = datagrams()
    found, _ = parse_messages(grams[1] + grams[7] + grams[2])
    assert [e.kind for e in found] == ["fork", "exec"]


def test_an_overrun_is_said_and_a_truncated_message_is_left_out():
    overrun = struct.pack("=IHHII", 16, NLMSG_OVERRUN, 0, 0, 0)
    fork = datagrams()[1]
    found, dropped = parse_messages(overrun + fork)
    assert dropped is True and [e.kind for e in found] == ["fork"]
    assert parse_messages(fork[:-8]) == ([], False)  # cut short: not framed
    assert parse_messages(b"") == ([], False)


def test_the_listen_request_is_what_the_kernel_expects():
    request = listen_request()
    length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", request)
    assert length == len(request) == 40 and kind == 3  # NLMSG_DONE
    assert struct.unpack_from("=IIIIHH", request, 16) == (1, 1, 0, 0, 4, 0)  # CN_IDX_PROC, CN_VAL_PROC, 4 bytes
    assert struct.unpack_from("=I", request, 36) == (1,)  # PROC_CN_MCAST_LISTEN
    assert struct.unpack_from("=I", listen_request(False), 36) == (2,)  # PROC_CN_MCAST_IGNORE


def run_classic_bpf(program, packet: bytes) -> int:
    """The kernel's classic BPF, for the instructions the filters use: the bytes it keeps (0: dropped).

    Absolute loads are big-endian and drop the packet when out of bounds, as in the kernel."""
    if isinstance(program, bytes):
        program = [struct.unpack_from("=HBBI", program, at) for at in range(0, len(program), 8)]
    a = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            if k + 4 > len(packet):
                return 0
            a = int.from_bytes(packet[k : k + 4], "big")
        elif code == 0x07:  # tax
            x = a
        elif code in (0x15, 0x1D):  # jeq #k / jeq x
            pc += jt if a == (k if code == 0x15 else x) else jf
        elif code == 0x05:  # ja +k
            pc += k
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"instruction {code:#x} not interpreted")


def test_the_kernel_side_filter_keeps_exactly_what_is_parsed():
    kept = [run_classic_bpf(EVENT_FILTER, datagram) != 0 for datagram in datagrams()]
    # the listen answer, fork, exec, fork, exec, exit, exit, the thread's fork and exit
    assert kept == [False, True, True, True, True, True, True, False, False]
    assert kept == [parse_messages(datagram)[0] != [] for datagram in datagrams()]


def test_the_kernel_side_filter_drops_other_kinds_of_event():
    fork = bytearray(datagrams()[1])
    for what in (0x4, 0x40, 0x80, 0x100, 0x200, 0x40000000):  # uid, gid, sid, ptrace, comm, coredump
        struct.pack_into("=I", fork, 36, what)
        assert run_classic_bpf(EVENT_FILTER, bytes(fork)) == 0


def test_the_filter_narrowed_to_followed_processes_keeps_their_events_and_their_children_s():
    # the listen answer, fork 31574 (of 31573), exec 31574, fork 31575 (of 31574), exec 31575, exit 31575,
    # exit 31574, the thread's fork and exit
    def kept(followed, any_exec):
        program = followed_filter(followed, any_exec)
        return [run_classic_bpf(program, datagram) != 0 for datagram in datagrams()]

    # Following the Python process: its child's fork and exit (the exit by its parent's fields), nothing of
    # the grandchild, whose parent the filter does not know.
    assert kept({31573}, False) == [False, True, False, False, False, False, True, False, False]
    # ... and any exec when a name may match.
    assert kept({31573}, True) == [False, True, True, False, True, False, True, False, False]
    # Following the child too: its exec, its child's fork and exit.
    assert kept({31573, 31574}, False) == [False, True, True, True, False, True, True, False, False]
    assert kept(set(), False) == [False] * 9
    assert followed_filter(range(MAX_FILTERED_PROCESSES + 1), False) is None  # too many to list: EVENT_FILTER


def test_the_kernel_takes_the_narrowed_filter_at_its_largest():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # any socket checks a classic BPF program
        assert attach_filter(sock, followed_filter(range(1, MAX_FILTERED_PROCESSES + 1), False))
        assert attach_filter(sock, followed_filter(range(1, MAX_FILTERED_PROCESSES + 1), True))
        assert attach_filter(sock, EVENT_FILTER)
