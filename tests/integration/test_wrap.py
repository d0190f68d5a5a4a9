"""tracekit wrap against real children: rusage numbers, exit codes, signals,
missing binaries, the event line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import read_jsonl, tracekit_cmd, wait_until
from tracekit import cli
from tracekit.invocation import Invocation, run_invocation
from tracekit.procfs import has_exited
from tracekit.registration import Registrar, read_registration, registration_name
from tracekit.errors import CommandNotFound
from tracekit.schemas import validation_errors

# Burns CPU and holds ~200 MiB, then reports its own rusage to stdout.
BURNER = """
import resource, sys
block = bytearray(200 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
x = 0
for i in range(3_000_000):
    x += i * i
usage = resource.getrusage(resource.RUSAGE_SELF)
print(usage.ru_utime * 1000, usage.ru_stime * 1000, usage.ru_maxrss)
"""


def test_rusage_of_a_cpu_burning_child(logs_dir):
    argv = [sys.executable, "-c", BURNER]
    event = run_invocation(Invocation(argv=argv, run_id="w1", module="burn", task_id="t1"))
    event_line = read_jsonl(logs_dir / "w1" / "events.burn.jsonl")[0]
    assert event_line == event
    assert validation_errors("raw/invocation_event", event) == []
    assert event["status"] == 0 and event["error"] is None and event["signal"] is None
    assert event["max_rss_kb"] >= 200 * 1024
    assert event["cpu_user_ms"] > 0
    assert event["ts_end"] >= event["ts_start"] == event["ts_enqueue"]
    assert event["pid"] > 0 and event["create_time_ms"] > 0


def test_rusage_equals_what_the_child_measured(logs_dir):
    # The child prints its own rusage just before exiting; wait4's totals
    # include that and only the interpreter's shutdown on top of it.
    result = subprocess.run(
        tracekit_cmd("wrap", "--run-id", "w2", "--module", "burn", "--", sys.executable, "-c", BURNER),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    child_user_ms, child_system_ms, child_maxrss = (float(v) for v in result.stdout.split())
    [event] = read_jsonl(logs_dir / "w2" / "events.burn.jsonl")
    assert child_user_ms <= event["cpu_user_ms"] <= child_user_ms + 50
    assert child_system_ms <= event["cpu_system_ms"] <= child_system_ms + 50
    assert event["max_rss_kb"] >= child_maxrss


def test_exit_code_is_passed_through(logs_dir):
    assert cli.main(["wrap", "--run-id", "w3", "--", "sh", "-c", "exit 3"]) == 3
    [event] = read_jsonl(logs_dir / "w3" / "events.sh.jsonl")
    assert event["status"] == 3 and event["error"] == "exit status 3"


def test_labels_are_recorded(logs_dir):
    argv = ["wrap", "--run-id", "w4", "--task-id", "T", "--trace-id", "abc", "--ts-enqueue", "1000",
            "--node-id", "cloud2", "--attempt", "2", "--module", "job", "--", "true"]  # fmt: skip
    assert cli.main(argv) == 0
    [event] = read_jsonl(logs_dir / "w4" / "events.job.jsonl")
    assert (event["task_id"], event["trace_id"], event["ts_enqueue"]) == ("T", "abc", 1000)
    assert (event["node"], event["attempt"], event["argv"]) == ("cloud2", 2, ["true"])


def test_the_child_is_marked_with_its_node(logs_dir, tmp_path, monkeypatch):
    # A collector of another node on the same machine tells the child apart by this mark.
    out = tmp_path / "mark"
    monkeypatch.setenv("TRACEKIT_NODE_ID", "cloud9")  # the wrapper's own: the invocation's node wins
    argv = ["wrap", "--run-id", "w4b", "--node-id", "cloud2", "--", "sh", "-c", f'echo "$TRACEKIT_NODE_ID" > {out}']
    assert cli.main(argv) == 0
    assert out.read_text() == "cloud2\n"
    assert cli.main(["wrap", "--run-id", "w4b", "--", "sh", "-c", f'echo "$TRACEKIT_NODE_ID" > {out}']) == 0
    assert out.read_text() == "cloud9\n"  # no --node-id: $TRACEKIT_NODE_ID, as recorded in the event
    assert [e["node"] for e in read_jsonl(logs_dir / "w4b" / "events.sh.jsonl")] == ["cloud2", "cloud9"]


def test_missing_binary_is_a_clear_error_and_a_failed_event(logs_dir, capsys):
    assert cli.main(["wrap", "--run-id", "w5", "--", "no-such-binary-xyz", "arg"]) == 127
    err = capsys.readouterr().err
    assert err.startswith("tracekit wrap: error: command not found: no-such-binary-xyz") and err.count("\n") == 1
    [event] = read_jsonl(logs_dir / "w5" / "events.no-such-binary-xyz.jsonl")
    assert event["status"] == 127 and event["pid"] is None and "command not found" in event["error"]
    assert validation_errors("raw/invocation_event", event) == []
    with pytest.raises(CommandNotFound):
        run_invocation(Invocation(argv=["/nonexistent/tool"], run_id="w5"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_are_forwarded_to_the_child(logs_dir, children, signum):
    # The child traps the signal and exits 42, proving it received it. It says when its trap is set: a
    # signal before that ends it by the signal (the test once sent it between registration and trap).
    ready = logs_dir / "trap-set"
    script = f"trap 'kill $!; exit 42' {signal.Signals(signum).name[3:]}; : > \"$0\"; sleep 30 & wait"
    wrapper = children(tracekit_cmd("wrap", "--run-id", "w6", "--", "bash", "-c", script, str(ready)))
    events = logs_dir / "w6" / "pids"
    wait_until(lambda: events.is_dir() and list(events.glob("*.json")) and ready.exists(), what="child's trap set")
    wrapper.send_signal(signum)
    assert wrapper.wait(timeout=20) == 42
    [event] = read_jsonl(logs_dir / "w6" / "events.bash.jsonl")
    assert event["status"] == 42


def test_killed_child_reports_the_signal(logs_dir):
    assert cli.main(["wrap", "--run-id", "w7", "--", "sh", "-c", "kill -KILL $$"]) == 128 + 9
    [event] = read_jsonl(logs_dir / "w7" / "events.sh.jsonl")
    assert event["status"] == -9 and event["signal"] == "SIGKILL" and event["error"] == "killed by SIGKILL"


def test_wrap_needs_a_command_and_a_run_id(logs_dir, capsys):
    assert cli.main(["wrap", "--run-id", "w8"]) == 2
    assert "nothing to run" in capsys.readouterr().err
    assert cli.main(["wrap", "--", "true"]) == 2
    assert "no run id" in capsys.readouterr().err


def test_child_gets_default_sigpipe_and_no_inherited_descriptor(logs_dir):
    # Python ignores SIGPIPE; a child must get it back at its default (as Popen
    # did), or a command writing into a closed pipe would not stop. grep
    # matches only if SigIgn has SIGPIPE's bit (0x1000) set.
    argv = ["grep", "-Eq", r"^SigIgn:\s+[0-9a-f]*[13579bdf][0-9a-f]{3}$", "/proc/self/status"]
    assert run_invocation(Invocation(argv=argv, run_id="w9", module="sigign"))["status"] == 1
    # An inheritable descriptor of the wrapper's own stays out of the child (Popen's close_fds).
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    try:
        argv = ["sh", "-c", f"test ! -e /proc/self/fd/{write_end}"]
        assert run_invocation(Invocation(argv=argv, run_id="w9", module="fds"))["status"] == 0
        assert os.get_inheritable(write_end)  # the wrapper's own descriptor is left as it was
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_registrar_registers_each_child_and_leaves_nothing_behind(logs_dir):
    pid_dir = logs_dir / "w10" / "pids"
    registrar = Registrar(pid_dir, "slot-0")
    seen = {}

    def on_start(_pid: int) -> None:  # while the child runs
        for name in os.listdir(pid_dir):
            if not name.startswith("."):
                seen[name] = read_registration(pid_dir / name)

    for task in ("t1-with-a-long-task-id", "t2"):  # the second is written over the first
        invocation = Invocation(argv=["true"], run_id="w10", task_id=task)
        event = run_invocation(invocation, on_start=on_start, registrar=registrar)
        name = registration_name(event["pid"], event["create_time_ms"])
        assert seen.pop(name).task_id == task and seen == {}  # that child's entry, and only it
    assert [name for name in os.listdir(pid_dir) if not name.startswith(".")] == []
    registrar.close()
    assert os.listdir(pid_dir) == []
    assert [e["task_id"] for e in read_jsonl(logs_dir / "w10" / "events.true.jsonl")] == ["t1-with-a-long-task-id", "t2"]


def test_commands_are_found_on_the_current_path(logs_dir, tmp_path, monkeypatch):
    # The wrapper remembers where PATH led a command; a changed PATH, or a
    # command gone since, must be searched again as execvp would.
    for folder, status in (("one", 3), ("two", 4)):
        (tmp_path / folder).mkdir()
        script = tmp_path / folder / "tk-probe"
        script.write_text(f"#!/bin/sh\nexit {status}\n")
        script.chmod(0o755)
    statuses = []
    for folder in ("one", "two", "one"):
        monkeypatch.setenv("PATH", f"{tmp_path / folder}:/usr/bin:/bin")
        statuses.append(run_invocation(Invocation(argv=["tk-probe"], run_id="w11"))["status"])
    assert statuses == [3, 4, 3]
    (tmp_path / "one" / "tk-probe").unlink()
    with pytest.raises(CommandNotFound):
        run_invocation(Invocation(argv=["tk-probe"], run_id="w11"))


def test_a_signal_during_the_spawn_reaches_the_child(logs_dir, monkeypatch):
    """A stop signal between spawn and the wait goes to the child, not only to the wrapper.

    It used to arrive before the forwarding handler was installed (the CI run
    that found it saw `tracekit wrap` exit 130 while its child ran on).
    """
    import tracekit.invocation as wrap

    real_spawn = wrap._spawn

    def spawn_then_signal(invocation, node, *rest):
        pid = real_spawn(invocation, node, *rest)
        os.kill(os.getpid(), signal.SIGHUP)  # lands before registration and the wait
        return pid

    monkeypatch.setattr(wrap, "_spawn", spawn_then_signal)
    seen_by_caller = []
    previous = signal.signal(signal.SIGHUP, lambda signum, _frame: seen_by_caller.append(signum))
    try:
        event = run_invocation(Invocation(argv=["bash", "-c", "trap 'kill $!; exit 42' HUP; sleep 10 & wait"], run_id="w9"))
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert seen_by_caller == []
    assert event["status"] == 42 or event["signal"] == "SIGHUP"  # trapped, or before bash set its trap


def test_a_child_that_cannot_be_registered_still_runs_to_its_event(logs_dir, capsys):
    # The PID folder cannot be made (a file is in its way, as with a full or read-only disk):
    # the command must not be left running without an event.
    run_folder = logs_dir / "w12"
    run_folder.mkdir()
    (run_folder / "pids").write_text("not a folder")
    marker = logs_dir / "ran"
    assert cli.main(["wrap", "--run-id", "w12", "--", "sh", "-c", f"sleep 0.3; touch {marker}"]) == 0
    assert marker.exists()  # it ran to its end, waited for
    [event] = read_jsonl(run_folder / "events.sh.jsonl")
    assert event["status"] == 0 and event["cpu_user_ms"] is not None and event["pid"] > 0
    assert event["registration_error"].startswith("not registered for the collector: ")
    assert validation_errors("raw/invocation_event", event) == []
    err = capsys.readouterr().err
    assert err.startswith("tracekit wrap: warning: not registered for the collector") and len(err.splitlines()) == 1


def test_a_failing_start_callback_stops_the_child_and_records_it(logs_dir):
    def broken(pid):
        raise RuntimeError("the caller broke")

    with pytest.raises(RuntimeError, match="the caller broke"):
        run_invocation(Invocation(argv=["sleep", "30"], run_id="w13"), on_start=broken)
    [event] = read_jsonl(logs_dir / "w13" / "events.sleep.jsonl")
    assert event["signal"] == "SIGTERM" and has_exited(event["pid"])
