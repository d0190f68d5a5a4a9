"""CPU lists: parsing, formatting, and keeping a process on some CPUs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tracekit.cpuset import check_usable, format_cpu_list, parse_cpu_list, usable_cpus
from tracekit.errors import UsageError


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("1", (1,)), ("0-3", (0, 1, 2, 3)), ("0-1,3", (0, 1, 3)), (" 6, 0-1 ,1", (0, 1, 6)), ("2-2", (2,))],
)
def test_cpu_lists_round_trip(text, cpus):
    assert parse_cpu_list(text) == cpus
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus


def test_format_joins_runs():
    assert format_cpu_list([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "3-1", "1,,2", "1.5", "0x1"])
def test_bad_cpu_lists_say_what_to_give(text):
    with pytest.raises(UsageError, match=r"is not a CPU list: give CPU numbers and ranges, e.g. 1 or 0-3,6"):
        parse_cpu_list(text, "tracekit_node_cpus")


def test_cpus_the_process_may_not_use_are_refused():
    allowed = usable_cpus()
    assert check_usable(allowed) == allowed
    with pytest.raises(UsageError, match=r"--cpus .*: this machine lets this process use CPUs .* only"):
        check_usable((max(allowed) + 1,))


def test_keep_on_restricts_every_thread_and_the_children():
    # In a child process: affinity is this test process's otherwise.
    code = """
import os, subprocess, sys, threading
from tracekit.cpuset import keep_on
cpu = max(os.sched_getaffinity(0))
done = threading.Event()
thread = threading.Thread(target=done.wait); thread.start()
keep_on((cpu,))
threads = {int(t) for t in os.listdir('/proc/self/task')}
ok = all(os.sched_getaffinity(t) == {cpu} for t in threads)
child = subprocess.run([sys.executable, '-c', 'import os; print(sorted(os.sched_getaffinity(0)))'], capture_output=True, text=True)
done.set(); thread.join()
print(ok, child.stdout.strip(), cpu)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True" and out[1] == f"[{out[2]}]"
