"""The /proc readers against live processes (their own names, parents, start times)."""

import os
import shutil
import subprocess
import time

import psutil
import pytest

from tracekit.collect import _procfs


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
        # kernel renames the task: poll for the new name.
        deadline = time.monotonic() + 10
        while _procfs.read_stat(child.pid).comm != "odd) (name" and time.monotonic() < deadline:
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
