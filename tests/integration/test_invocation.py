"""run_invocation in a working folder of the task's own: real processes, their events."""

from __future__ import annotations

import sys

import pytest

from tests.helpers import ended, read_jsonl, wait_until
from tracekit.errors import CommandNotFound
from tracekit.invocation import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, Invocation, run_invocation

WHERE = "import os, sys; open('where.txt', 'w').write(os.getcwd()); sys.stderr.write('said\\n'); sys.exit(3)"


def invocation(tmp_path, argv, **options) -> Invocation:
    return Invocation(argv=argv, run_id="inv", logs_dir=tmp_path / "logs", module="cmd", node_id="n1", **options)


def test_a_task_runs_in_its_folder_as_its_own_process(tmp_path):
    folder = tmp_path / "work dir"
    folder.mkdir()
    started = []
    event = run_invocation(invocation(tmp_path, [sys.executable, "-c", WHERE], cwd=str(folder), own_group=True,
                                      stderr=tmp_path / "err.txt"), on_start=started.append)  # fmt: skip
    assert (folder / "where.txt").read_text() == str(folder)
    # No helper process between the worker and the task (coreutils' env ran before it): the PID is the task's.
    assert started == [event["pid"]] and event["status"] == 3 and event["stderr_tail"].strip() == "said"
    assert event["cpu_user_ms"] + event["cpu_system_ms"] > 0
    assert read_jsonl(tmp_path / "logs" / "inv" / "events.cmd.jsonl") == [event]


def test_a_task_whose_folder_is_missing_fails_naming_it(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(CommandNotFound, match=rf"cannot run in {missing} \(No such file or directory\)"):
        run_invocation(invocation(tmp_path, ["true"], cwd=missing))
    [event] = read_jsonl(tmp_path / "logs" / "inv" / "events.cmd.jsonl")
    assert event["status"] == EXIT_NOT_EXECUTABLE and event["pid"] is None


def test_a_missing_command_in_a_folder_is_a_command_not_found(tmp_path):
    with pytest.raises(CommandNotFound, match="command not found: no-such-tool-tk"):
        run_invocation(invocation(tmp_path, ["no-such-tool-tk", "x"], cwd=str(tmp_path)))
    [event] = read_jsonl(tmp_path / "logs" / "inv" / "events.cmd.jsonl")
    assert event["status"] == EXIT_NOT_FOUND


def test_a_relative_command_is_found_in_the_task_s_folder(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\nexit 7\n")
    script.chmod(0o755)
    event = run_invocation(invocation(tmp_path, ["./run.sh"], cwd=str(tmp_path)))
    assert event["status"] == 7


def test_a_timed_out_task_in_a_folder_is_killed_with_its_group(tmp_path):
    # The child starts a grandchild and both sleep: the time-out ends the whole group.
    code = "import subprocess, time; p = subprocess.Popen(['sleep', '60']); open('child.pid', 'w').write(str(p.pid)); time.sleep(60)"
    event = run_invocation(invocation(tmp_path, [sys.executable, "-c", code], cwd=str(tmp_path), timeout_s=1.0))
    assert event["timed_out"] is True
    grandchild = int((tmp_path / "child.pid").read_text())
    wait_until(lambda: ended(grandchild), timeout_s=10, what="the grandchild's end")
