"""The /proc readers against live processes (their own names, parents, start times)."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.helpers import wait_until
from tracekit import procfs as _procfs


def test_stat_of_self_agrees_with_psutil():
    me = psutil.Process()
    stat = _procfs.read_stat(os.getpid())
    assert stat.ppid == os.getppid()
    assert stat.create_time_ms == round(me.create_time() * 1000)
    assert stat.num_threads == me.num_threads()
    assert stat.cpu_user_ms == pytest.approx(me.cpu_times().user * 1000, abs=50)
    assert stat.rss_kb == pytest.approx(me.memory_info().rss / 1024, rel=0.2)


def test_comm_with_spaces_and_parentheses(tmp_path):
    link = tmp_path / "odd) (name"
    link.symlink_to(shutil.which("sleep"))
    child = subprocess.Popen([str(link), "30"])
    try:
        # exec closes the CLOEXEC pipe that Popen waits on a moment before the
        # kernel renames the task, and sets the new argv a moment after: poll
        # for both.
        expected = ("odd) (name", [str(link), "30"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (_procfs.read_stat(child.pid).comm, _procfs.read_cmdline(child.pid)) == expected:
                break
            time.sleep(0.001)
        assert _procfs.read_stat(child.pid).comm == "odd) (name"
        assert _procfs.read_cmdline(child.pid) == [str(link), "30"]
    finally:
        child.kill()
        child.wait()


def test_gone_process_raises_oserror():
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(OSError):
        _procfs.read_stat(child.pid)


def test_counters_of_self():
    counters = _procfs.read_counters(os.getpid())
    assert counters.ctx_voluntary is not None and counters.ctx_voluntary >= 0
    assert counters.read_bytes is not None


def test_list_pids_contains_self():
    assert os.getpid() in _procfs.list_pids()


# -- kept files (the per-tick path) ------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def sleeper():
    """A process settled in its sleep: its counters no longer move."""
    child = subprocess.Popen(["sleep", "60"])
    deadline = time.monotonic() + 10
    previous = None
    while time.monotonic() < deadline:
        stat = _procfs.read_stat(child.pid)
        current = _procfs.read_sample(child.pid)
        if stat.comm == "sleep" and stat.state == "S" and current == previous:
            break
        previous = current
        time.sleep(0.02)
    yield child
    child.kill()
    child.wait()


def test_kept_files_sample_what_fresh_reads_give(sleeper):
    files = _procfs.ProcessFiles(sleeper.pid)
    try:
        for _ in range(3):  # re-read from offset 0 each time
            assert files.sample() == _procfs.read_sample(sleeper.pid)
        sample = files.sample()
    finally:
        files.close()
    stat = _procfs.read_stat(sleeper.pid)
    counters = _procfs.read_counters(sleeper.pid)
    assert sample.create_time_ms == stat.create_time_ms
    assert (sample.cpu_user_ms, sample.cpu_system_ms) == (stat.cpu_user_ms, stat.cpu_system_ms)
    assert (sample.rss_kb, sample.num_threads) == (stat.rss_kb, stat.num_threads)
    assert sample[5:9] == tuple(counters)
    ctx = psutil.Process(sleeper.pid).num_ctx_switches()
    assert (sample.ctx_voluntary, sample.ctx_involuntary) == (ctx.voluntary, ctx.involuntary)
    io = psutil.Process(sleeper.pid).io_counters()
    assert (sample.read_bytes, sample.write_bytes) == (io.read_bytes, io.write_bytes)


def test_kept_files_of_self_follow_changes():
    files = _procfs.ProcessFiles(os.getpid())
    try:
        before = files.sample()
        data = os.urandom(1 << 20)
        sum(data)
        after = files.sample()
    finally:
        files.close()
    assert after.create_time_ms == before.create_time_ms
    assert after.cpu_user_ms + after.cpu_system_ms >= before.cpu_user_ms + before.cpu_system_ms
    assert after.ctx_voluntary is not None and after.ctx_voluntary >= before.ctx_voluntary


def test_kept_files_fail_once_the_process_is_reaped():
    child = subprocess.Popen(["sleep", "60"])
    files = _procfs.ProcessFiles(child.pid)
    try:
        child.kill()
        deadline = time.monotonic() + 10
        while _procfs.read_stat(child.pid).state != "Z" and time.monotonic() < deadline:
            time.sleep(0.001)
        files.sample()  # a zombie still reads, as with fresh opens
        child.wait()
        with pytest.raises(ProcessLookupError):
            files.sample()
    finally:
        files.close()


def _fork_with_pid(pid: int) -> subprocess.Popen | None:
    """A sleep process with exactly this PID (needs root: /proc/sys/kernel/ns_last_pid)."""
    for _ in range(200):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(pid - 1))
        except OSError:
            return None
        candidate = subprocess.Popen(["sleep", "60"])
        if candidate.pid == pid:
            return candidate
        candidate.kill()
        candidate.wait()
    return None


def test_kept_files_do_not_follow_a_reused_pid():
    first = subprocess.Popen(["sleep", "60"])
    files = _procfs.ProcessFiles(first.pid)
    try:
        first.kill()
        first.wait()
        second = _fork_with_pid(first.pid)
        if second is None:
            pytest.skip("cannot get the same PID twice here (needs root)")
        try:
            assert _procfs.read_stat(first.pid).comm  # the PID is live again...
            with pytest.raises(ProcessLookupError):
                files.sample()  # ...but not for the kept files of the first process
        finally:
            second.kill()
            second.wait()
    finally:
        files.close()


def test_kept_files_close_their_fds(sleeper):
    before = _open_fds()
    many = [_procfs.ProcessFiles(sleeper.pid) for _ in range(20)]
    assert _open_fds() == before + 20 * _procfs.ProcessFiles.FDS
    for files in many:
        files.close()
        files.close()  # twice is harmless
    assert _open_fds() == before


def test_kept_files_of_a_gone_process_raise_and_leak_nothing():
    child = subprocess.Popen(["true"])
    child.wait()
    before = _open_fds()
    with pytest.raises(OSError):
        _procfs.ProcessFiles(child.pid)
    assert _open_fds() == before


def test_small_buffer_reads_on_to_the_end():
    fd = os.open("/proc/self/status", os.O_RDONLY)
    try:
        with open("/proc/self/status", "rb") as f:
            whole = f.read()
        assert len(whole) > 100
        assert _procfs._pread_all(fd)[:20] == whole[:20]
        assert _procfs._pread_all(fd).count(b"\n") == whole.count(b"\n")
    finally:
        os.close(fd)


# -- host counters ---------------------------------------------------------------------


def test_forks_since_boot_counts_new_processes():
    stat = _procfs.KeptFile("/proc/stat")
    try:
        before = _procfs.forks_since_boot(stat.read())
        subprocess.run(["true"], check=True)
        after = _procfs.forks_since_boot(stat.read())
    finally:
        stat.close()
    assert before is not None and after is not None and after > before


def test_cpu_ticks_agree_with_psutil():
    with open("/proc/stat", "rb") as f:
        cores = _procfs.cpu_ticks_per_core(f.read())
    after = psutil.cpu_times(percpu=True)
    assert len(cores) == len(after) == psutil.cpu_count()
    assert [number for number, _ in cores] == list(range(len(cores)))  # all CPUs online here
    for (_, ticks), times in zip(cores, after):
        assert len(ticks) == 8
        for mode, value in zip(("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"), ticks):
            assert value / _procfs.CLK_TCK <= getattr(times, mode) + 1e-9


def test_meminfo_agrees_with_psutil():
    with open("/proc/meminfo", "rb") as f:
        kb = _procfs.meminfo_kb(f.read(), (b"MemTotal", b"SwapTotal", b"NoSuchField"))
    assert kb[b"MemTotal"] == psutil.virtual_memory().total // 1024
    assert kb[b"SwapTotal"] == psutil.swap_memory().total // 1024
    assert kb[b"NoSuchField"] is None


DISKSTATS = b"""\
   7       0 loop0 5 0 80 1 0 0 0 0 0 4 1 0 0 0 0 0 0
   8       0 sda 100 10 2000 50 200 20 4000 60 0 70 110 0 0 0 0 0 0
   8       1 sda1 90 10 1800 45 190 20 3800 55 0 65 100 0 0 0 0 0 0
 259       0 nvme0n1 1 2 3 4 5 6 7 8 9 10 11
 259       1 nvme0n1p1 1 2 3 4
"""


def test_disk_stats_counts_whole_disks_only():
    whole = {b"loop0", b"sda", b"nvme0n1"}
    disks = _procfs.disk_stats(DISKSTATS, lambda name: name in whole)
    assert disks == {
        "loop0": (5, 0, 80 * 512, 0, 4),
        "sda": (100, 200, 2000 * 512, 4000 * 512, 70),
        "nvme0n1": (1, 5, 3 * 512, 7 * 512, 10),
    }


def test_whole_disks_are_those_in_sys_block():
    is_whole = _procfs.WholeDisks()
    for name in os.listdir("/sys/block"):
        assert is_whole(name.replace("!", "/").encode())
    assert not is_whole(b"no-such-disk0p9")


def test_disk_totals_agree_with_psutil():
    with open("/proc/diskstats", "rb") as f:
        disks = _procfs.disk_stats(f.read(), _procfs.WholeDisks())
    expected = psutil.disk_io_counters(perdisk=False, nowrap=False)
    if expected is None:
        assert disks == {}
        return
    read_count, write_count, read_bytes, _write_bytes, busy_ms = map(sum, zip(*disks.values()))
    assert read_count <= expected.read_count and read_bytes <= expected.read_bytes
    assert expected.read_count - read_count < 1000  # the same disks, a moment apart
    assert write_count <= expected.write_count and busy_ms <= expected.busy_time


NET_DEV = b"""\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0
  eth0: 208715600    5600    1    2    0     0          0         0   361924    3741    3    4    0     0       0          0
"""


def test_net_dev_fields():
    assert _procfs.net_dev(NET_DEV) == {
        "lo": (3193, 3193, 29, 29, 0, 0, 0, 0),
        "eth0": (208715600, 361924, 5600, 3741, 1, 3, 2, 4),
    }


def test_net_dev_agrees_with_psutil():
    with open("/proc/net/dev", "rb") as f:
        nics = _procfs.net_dev(f.read())
    expected = psutil.net_io_counters(pernic=True, nowrap=False)
    assert nics.keys() == expected.keys()
    for nic, (rx_bytes, tx_bytes, *_rest) in nics.items():
        assert rx_bytes <= expected[nic].bytes_recv and tx_bytes <= expected[nic].bytes_sent


def test_host_record_is_psutils():
    from tracekit.collect.host import HostSampler
    from tracekit.schemas import validation_errors

    from tracekit.collect.host import HOST_CPUS_CSV_COLUMNS, HOST_CSV_COLUMNS, HOST_NET_CSV_COLUMNS
    from tests.helpers import csv_records

    sampler = HostSampler()
    try:
        sample = sampler.sample(123)
    finally:
        sampler.close()
    for columns, rows, schema in ((HOST_CSV_COLUMNS, [sample.host_row()], "raw/host_sample"),
                                  (HOST_CPUS_CSV_COLUMNS, sample.cpu_rows(), "raw/host_cpu_sample"),
                                  (HOST_NET_CSV_COLUMNS, sample.net_rows(), "raw/host_net_sample")):  # fmt: skip
        for record in csv_records([",".join(columns), *rows]):
            assert validation_errors(schema, record) == [], (schema, record)
    record = sample.memory
    memory, swap = psutil.virtual_memory(), psutil.swap_memory()
    assert record["mem_total_kb"] == memory.total // 1024
    assert record["swap_used_kb"] == pytest.approx(swap.used // 1024, abs=4096)
    assert record["mem_used_kb"] == record["mem_total_kb"] - record["mem_available_kb"]
    assert record["mem_available_kb"] == pytest.approx(memory.available // 1024, rel=0.05)
    assert [cpu for cpu, _ in sample.cpu_ms_per_core] == list(range(psutil.cpu_count()))
    for mode, total in enumerate(sample.cpu_ms):
        assert total == sum(ms[mode] for _, ms in sample.cpu_ms_per_core)
    assert set(sample.net) == set(psutil.net_io_counters(pernic=True))


def test_host_record_without_mem_available_falls_back_to_psutil(monkeypatch):
    from tracekit.collect import host

    real = _procfs.meminfo_kb
    monkeypatch.setattr(
        _procfs, "meminfo_kb", lambda data, names: {**real(data, names), b"MemAvailable": None}
    )
    sampler = host.HostSampler()
    try:
        record = sampler.sample(1).memory
    finally:
        sampler.close()
    assert record["mem_available_kb"] == pytest.approx(psutil.virtual_memory().available // 1024, rel=0.05)


def test_nowrap_keeps_counters_from_going_down():
    from tracekit.collect.host import _NoWrap

    nowrap = _NoWrap()
    assert nowrap({"eth0": (10, 5)}) == {"eth0": (10, 5)}
    assert nowrap({"eth0": (12, 6)}) == {"eth0": (12, 6)}
    assert nowrap({"eth0": (3, 7)}) == {"eth0": (15, 7)}  # re-created: restarts from 0
    assert nowrap({"eth0": (4, 8), "eth1": (1, 1)}) == {"eth0": (16, 8), "eth1": (1, 1)}
    assert nowrap({"eth1": (2, 2)}) == {"eth1": (2, 2)}  # eth0 gone: its offsets too
    assert nowrap({"eth0": (1, 1), "eth1": (2, 2)}) == {"eth0": (1, 1), "eth1": (2, 2)}


def test_self_usage_is_this_process():
    from tracekit.collect.host import self_usage

    usage = self_usage()
    me = psutil.Process()
    assert usage["rss_kb"] == pytest.approx(me.memory_info().rss / 1024, rel=0.2)
    assert usage["cpu_user_ms"] == pytest.approx(me.cpu_times().user * 1000, abs=50)


# -- status is re-read unless its context switch counts cannot have changed --------

BEHAVIOURS = {
    "sleeper": "import time; time.sleep(60)",
    "waker": "import time\nwhile True: time.sleep(0.002)",
    "spinner": "while True: pass",
    # the main thread sleeps, another one wakes often: status counts are the main thread's
    "threads": "import threading, time\n"
    "def wake():\n    while True: time.sleep(0.001)\n"
    "threading.Thread(target=wake, daemon=True).start(); time.sleep(60)",
}


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_sampled_switch_counts_are_what_status_says(behaviour):
    child = subprocess.Popen([sys.executable, "-c", BEHAVIOURS[behaviour]])
    files = None
    try:
        time.sleep(0.3)  # started up
        files = _procfs.ProcessFiles(child.pid)
        for i in range(300):
            before = _procfs.read_counters(child.pid)
            sample = files.sample()
            after = _procfs.read_counters(child.pid)
            assert before.ctx_voluntary <= sample.ctx_voluntary <= after.ctx_voluntary, i
            assert before.ctx_involuntary <= sample.ctx_involuntary <= after.ctx_involuntary, i
            time.sleep(random.random() / 500)
        if behaviour in ("sleeper", "threads"):
            assert files._ctx_valid_while is not None  # status not re-read while it sleeps
        if behaviour == "spinner":
            assert files._ctx_valid_while is None  # running: status read every time
        assert_stopped_sample_is_a_fresh_read(files, child)
    finally:
        if files is not None:
            files.close()
        child.kill()
        child.wait()


def test_environ_value_finds_one_entry():
    environ = b"PATH=/bin\0TRACEKIT_NODE_ID=cloud2\0TRACEKIT_NODE_ID_X=no\0EMPTY=\0"
    assert _procfs.environ_value(environ, "TRACEKIT_NODE_ID") == "cloud2"
    assert _procfs.environ_value(environ, "EMPTY") == ""
    assert _procfs.environ_value(environ, "MISSING") is None
    assert _procfs.environ_value(b"", "PATH") is None  # a zombie's or a kernel thread's


def test_environ_of_a_live_process():
    child = subprocess.Popen(["sleep", "30"], env={"TRACEKIT_NODE_ID": "cloud7", "PATH": "/usr/bin:/bin"})
    try:
        # Empty for a moment while the child execs (the parent resumes before the kernel set it up).
        environ = wait_until(lambda: _procfs.read_environ(child.pid), what="the child's environment")
        assert _procfs.environ_value(environ, "TRACEKIT_NODE_ID") == "cloud7"
    finally:
        child.kill()
        child.wait()


def test_cpu_ticks_of_some_cpus_only():
    with open("/proc/stat", "rb") as f:
        data = f.read()
    every = _procfs.cpu_ticks_per_core(data)
    last, _ = every[-1]
    assert _procfs.cpu_ticks_per_core(data, frozenset({last})) == [every[-1]]
    assert _procfs.cpu_ticks_per_core(data, frozenset()) == []


# -- io is re-read unless its byte counts cannot have changed; a sample with nothing new is the last one --

WRITERS = {
    # one thread that writes now and then: io must be read whenever it ran
    "writer": "import os, time\nf = open({path!r}, 'wb')\n"
    "while True:\n    f.write(b'x' * 4096); f.flush(); os.fsync(f.fileno()); time.sleep(0.003)",
    # the main thread sleeps (schedstat, status: the main thread's), another one writes: io is the group's
    "thread writer": "import os, threading, time\nf = open({path!r}, 'wb')\n"
    "def write():\n    while True:\n        f.write(b'x' * 4096); f.flush(); os.fsync(f.fileno()); time.sleep(0.003)\n"
    "threading.Thread(target=write, daemon=True).start(); time.sleep(60)",
}


@pytest.mark.parametrize("behaviour", WRITERS)
def test_sampled_io_bytes_are_what_io_says(behaviour, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", WRITERS[behaviour].format(path=str(tmp_path / "out"))])
    files = None
    try:
        time.sleep(0.3)  # started up
        files = _procfs.ProcessFiles(child.pid)
        for i in range(200):
            before = _procfs.read_counters(child.pid)
            sample = files.sample()
            after = _procfs.read_counters(child.pid)
            assert before.write_bytes <= sample.write_bytes <= after.write_bytes, i
            time.sleep(random.random() / 200)
        assert sample.write_bytes > 0
        assert_stopped_sample_is_a_fresh_read(files, child)
    finally:
        if files is not None:
            files.close()
        child.kill()
        child.wait()


def assert_stopped_sample_is_a_fresh_read(files, child) -> None:
    """Once stopped, nothing may change any more: the kept files' sample is what fresh reads give."""
    child.send_signal(signal.SIGSTOP)
    time.sleep(0.05)
    files.sample()
    expected = _procfs.read_counters(child.pid)
    assert files.sample()[5:9] == tuple(expected)


def test_a_sleeping_process_s_sample_is_the_last_one_again(sleeper):
    files = _procfs.ProcessFiles(sleeper.pid)
    try:
        first = files.sample()
        for _ in range(3):
            assert files.sample() is first  # nothing read but schedstat and stat, nothing parsed
        assert first == _procfs.read_sample(sleeper.pid)
    finally:
        files.close()


def test_a_sleeping_process_costs_one_read_and_its_stat_is_read_again_for_the_rss(sleeper, monkeypatch):
    files = _procfs.ProcessFiles(sleeper.pid)
    reads = []
    real_pread = os.pread

    def counted(fd, size, offset):
        reads.append(fd)
        return real_pread(fd, size, offset)

    try:
        first = files.sample()
        monkeypatch.setattr(_procfs.os, "pread", counted)
        for _ in range(3):
            assert files.sample() is first
        assert reads == [files._schedstat_fd] * 3  # schedstat alone: it proves nothing else moved
        # RSS can shrink while a process sleeps (reclaim): stat is read again every STAT_REFRESH_S.
        monkeypatch.setattr(_procfs.ProcessFiles, "STAT_REFRESH_S", 0.0)
        reads.clear()
        assert files.sample() == first
        assert reads == [files._schedstat_fd, files._stat_fd]
    finally:
        files.close()


def test_host_network_figures_follow_traffic_between_samples():
    # net/dev's figures are parsed again only when its content changed: traffic must show all the same.
    import socket

    from tracekit.collect.host import HostSampler

    sampler = HostSampler()
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        before = sampler.sample(1).net["lo"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(50):
                sender.sendto(b"x" * 2000, receiver.getsockname())
        after = sampler.sample(2).net["lo"]
        assert after[0] - before[0] >= 50 * 2000 and after[2] - before[2] >= 50  # rx bytes, rx packets
    finally:
        receiver.close()
        sampler.close()
