"""Background processes with pidfiles: found again only when PID and start time match."""

from __future__ import annotations

import os
import sys

import psutil
import pytest

from tracekit.detach import end_processes_naming, read_pidfile, start_detached, stop_detached
from tracekit.errors import TracekitError


def test_a_reused_pid_is_not_ours(tmp_path):
    pidfile = tmp_path / "x.pid"
    created = psutil.Process(os.getpid()).create_time()
    pidfile.write_text(f"{os.getpid()} {created}\n")
    assert read_pidfile(pidfile).pid == os.getpid()
    pidfile.write_text(f"{os.getpid()} {created - 100}\n")  # same PID, another process's start time
    assert read_pidfile(pidfile) is None
    pidfile.write_text("garbage\n")
    assert read_pidfile(pidfile) is None


def test_start_once_stop_once(tmp_path):
    pidfile, log = tmp_path / "s.pid", tmp_path / "s.out"
    first, started = start_detached(["sleep", "30"], pidfile, log, "sleeper")
    try:
        again, started_again = start_detached(["sleep", "30"], pidfile, log, "sleeper")
        assert started and not started_again and again.pid == first.pid
        assert stop_detached(pidfile, "sleeper", timeout_s=5)
        assert not pidfile.exists() and read_pidfile(pidfile) is None
        assert not stop_detached(pidfile, "sleeper", timeout_s=5)  # nothing to stop
    finally:
        try:
            os.kill(first.pid, 9)
        except ProcessLookupError:
            pass


def test_a_process_that_dies_at_once_is_reported_with_its_last_words(tmp_path):
    with pytest.raises(TracekitError, match="did not start: no such input"):
        start_detached(["sh", "-c", "echo 'no such input' >&2; exit 3"], tmp_path / "d.pid", tmp_path / "d.out", "doomed")
    assert not (tmp_path / "d.pid").exists()


def test_a_held_pidfile_refuses_a_second_holder_and_goes_with_its_holder(tmp_path):
    from tracekit import detach

    pidfile = tmp_path / "h.pid"
    with detach.hold_pidfile(pidfile, "the holder"):
        assert read_pidfile(pidfile).pid == os.getpid()
        with pytest.raises(TracekitError, match=f"the holder already runs .pid {os.getpid()}."):
            with detach.hold_pidfile(pidfile, "the holder"):
                pass
        assert read_pidfile(pidfile).pid == os.getpid()  # the refused one left it alone
    assert not pidfile.exists()


def test_a_process_that_holds_its_own_pidfile_is_waited_for_and_stopped(tmp_path):
    # What the collector and the dispatcher do: the child holds the pidfile, the starter waits for it.
    import sys

    from tracekit import detach

    pidfile, log = tmp_path / "self.pid", tmp_path / "self.out"
    holder = (f"import time; from pathlib import Path; from tracekit import detach\n"
              f"with detach.hold_pidfile(Path({str(pidfile)!r}), 'x'):\n    time.sleep(60)\n")  # fmt: skip
    running, started = detach.start_detached([sys.executable, "-c", holder], pidfile, log, "holder", registers_itself=True)
    try:
        assert started and read_pidfile(pidfile).pid == running.pid
        again, started_again = detach.start_detached([sys.executable, "-c", holder], pidfile, log, "holder",
                                                     registers_itself=True)  # fmt: skip
        assert not started_again and again.pid == running.pid
        stopped = stop_detached(pidfile, "holder", timeout_s=10)
        assert stopped.pid == running.pid and not detach.is_alive(running) and not pidfile.exists()
    finally:
        try:
            os.kill(running.pid, 9)
        except ProcessLookupError:
            pass


def test_processes_naming_a_path_end_with_what_they_started(tmp_path):
    """An ansible-playbook that outlived its tracekit-run, and a module it started in a session of its own."""
    import subprocess

    marker = str(tmp_path / "run" / "ansible" / "env" / "extravars")
    script = "import subprocess, time; subprocess.Popen(['sleep', '600'], start_new_session=True); time.sleep(600)"
    orphan = subprocess.Popen([sys.executable, "-c", script, f"@{marker}"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        module = wait_for_child(orphan.pid)
        assert end_processes_naming(marker, grace_s=5) == 2  # the orphan and its module
        assert orphan.wait(timeout=10) is not None
        assert not psutil.pid_exists(module) or psutil.Process(module).status() == psutil.STATUS_ZOMBIE
        assert bystander.poll() is None  # nothing else
    finally:
        for process in (orphan, bystander):
            process.kill()
            process.wait()


def wait_for_child(pid: int) -> int:
    import time

    for _ in range(200):
        children = psutil.Process(pid).children()
        if children:
            return children[0].pid
        time.sleep(0.05)
    raise AssertionError("the orphan's module did not start")


def test_a_process_named_twice_is_ended_and_counted_once(tmp_path):
    """A module that names the path too (a fork before its exec shows its parent's command line) is the
    parent's child and a match of its own: once, not twice (a fresh machine's run counted 3 for 2)."""
    import subprocess

    marker = str(tmp_path / "run" / "ansible" / "env" / "extravars")
    child = f"import time; time.sleep(600)  # @{marker}"
    script = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(600)"
    parent = subprocess.Popen([sys.executable, "-c", script, f"@{marker}"], start_new_session=True)
    try:
        wait_for_child(parent.pid)
        assert end_processes_naming(marker, grace_s=5) == 2
        assert parent.wait(timeout=10) is not None
    finally:
        for process in psutil.Process(parent.pid).children(recursive=True) if psutil.pid_exists(parent.pid) else []:
            process.kill()
        parent.kill()
        parent.wait()
