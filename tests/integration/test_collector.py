"""The collector daemon against real processes: lifecycle, matching,
descendants, PID registrations, PID reuse, final flush, bad input."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ended, followed_processes, named_binary, read_csv, read_jsonl, read_proc_csv, tracekit_cmd, wait_until
from tracekit import cli, runfolder
from tracekit import procfs as _procfs
from tracekit.collect import daemon
from tracekit.collect import process as process_module
from tracekit.procfs import has_exited
from tracekit.collect.daemon import CollectorConfig
from tracekit.collect.process import ProcessTracker
from tracekit.collect.procevents import ProcEvent
from tracekit.registration import process_identity, registration_name, write_registration
from tracekit.taskcgroup import SHELL, TRAMPOLINE
from tracekit.errors import RunFolderError, UsageError
from tracekit.schemas import validation_errors

SCHEMA_OF = {
    runfolder.HOST_SAMPLES: "raw/host_sample",
    runfolder.HOST_CPU_SAMPLES: "raw/host_cpu_sample",
    runfolder.HOST_NET_SAMPLES: "raw/host_net_sample",
    runfolder.PROC_SAMPLES: "raw/proc_sample",
    runfolder.PROCESSES: "raw/process",
    runfolder.COLLECTOR_EVENTS: "raw/collector_event",
}


def config(logs_dir, run_id="r1", **overrides) -> CollectorConfig:
    return CollectorConfig(run_id=run_id, node_id="cloud1", interval_ms=100, logs_dir=logs_dir, **overrides)


def tracked(folder, pid=None) -> list[dict]:
    return [r for r in followed_processes(folder / runfolder.PROCESSES) if pid is None or r["pid"] == pid]


def samples_of(folder, pid) -> list[dict]:
    path = folder / runfolder.PROC_SAMPLES
    return [r for r in read_proc_csv(path) if r["pid"] == pid] if path.exists() else []


def test_start_and_stop_are_idempotent(logs_dir):
    cfg = config(logs_dir)
    status, started = daemon.start_collector(cfg)
    assert started and status.running and status.pid
    again, started_again = daemon.start_collector(cfg)
    assert not started_again and again.pid == status.pid
    assert daemon.collector_status("r1", logs_dir).running

    result = daemon.stop_collector("r1", logs_dir)
    assert result.was_running and result.summary["event"] == "stop"
    assert result.summary["reason"] == "SIGTERM"
    assert has_exited(status.pid)
    log = (cfg.run_folder / runfolder.COLLECTOR_LOG).read_text()
    assert log.count("collector started") == 1  # the detached daemon logs once, to its file
    second = daemon.stop_collector("r1", logs_dir)
    assert not second.was_running and "nothing to stop" in second.message
    assert not daemon.collector_status("r1", logs_dir).running


def test_cli_lifecycle_and_exit_codes(logs_dir, capsys):
    assert cli.main(["collect", "status", "--run-id", "r2"]) == 3
    assert "no collector running" in capsys.readouterr().out
    assert cli.main(["collect", "start", "--run-id", "r2", "--interval-ms", "200", "--match", "^nothing$"]) == 0
    assert capsys.readouterr().out.startswith("started:")
    assert cli.main(["collect", "start", "--run-id", "r2"]) == 0
    assert capsys.readouterr().out.startswith("already running:")
    assert cli.main(["collect", "status", "--run-id", "r2"]) == 0
    assert cli.main(["collect", "stop", "--run-id", "r2"]) == 0
    out = capsys.readouterr().out
    assert "stopped" in out and "warning: no process was tracked" in out
    assert cli.main(["collect", "stop", "--run-id", "r2"]) == 0
    assert "nothing to stop" in capsys.readouterr().out


def test_json_answers_say_what_changed_and_a_killed_collector_is_named(logs_dir, capsys):
    """What the roles read: one JSON object; a collector that died (SIGKILL) is said so at the stop."""
    def answer(*argv: str) -> dict:
        assert cli.main(["collect", *argv, "--run-id", "r3", "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    assert answer("start", "--interval-ms", "200")["changed"] is True
    started = answer("start")
    assert started["changed"] is False and started["message"].startswith("already running")
    os.kill(started["pid"], signal.SIGKILL)
    wait_until(lambda: has_exited(started["pid"]), what="the collector's end")
    died = answer("stop")
    assert died["changed"] is False and died["died"] is True and "had died before this stop" in died["message"]
    assert answer("start")["changed"] is True  # a new one, once the dead one is known
    stopped = answer("stop")
    assert stopped["changed"] is True and stopped["died"] is False
    again = answer("stop")
    assert again == {"changed": False, "died": False, "message": again["message"]} and "nothing to stop" in again["message"]


def test_samples_match_schemas_and_final_sample_is_flushed(logs_dir, tmp_path, children):
    sleeper = children([named_binary(tmp_path, "tk-sleeper"), "60"])
    cfg = config(logs_dir, match_name="^tk-sleeper$")
    daemon.start_collector(cfg)
    folder = cfg.run_folder
    wait_until(lambda: len(samples_of(folder, sleeper.pid)) > daemon.SELF_USAGE_EVERY_TICKS, what="samples")
    result = daemon.stop_collector("r1", logs_dir)

    for name, schema in SCHEMA_OF.items():
        records = (read_csv if name.endswith(".csv") else read_jsonl)(folder / name)
        assert records, name
        for record in records:
            assert validation_errors(schema, record) == [], (name, record)
    facts = json.loads((folder / runfolder.NODE_FACTS).read_text())
    assert validation_errors("raw/node_facts", facts) == []
    assert facts["node"] == "cloud1" and facts["stage"] == "cloud"

    # One host sample per tick, the final one included (taken at SIGTERM).
    assert len(read_csv(folder / runfolder.HOST_SAMPLES)) == result.summary["ticks"]
    cpus = read_csv(folder / runfolder.HOST_CPU_SAMPLES)
    assert len(cpus) == result.summary["ticks"] * len(os.sched_getaffinity(0))
    [record] = tracked(folder, sleeper.pid)
    assert record["reason"] == "name" and record["comm"] == "tk-sleeper"
    events = read_jsonl(folder / runfolder.COLLECTOR_EVENTS)
    assert events[0]["event"] == "start" and events[0]["match"] == "^tk-sleeper$"
    assert events[-1]["event"] == "stop"
    assert any(e["event"] == "self" for e in events)  # its own CPU and RSS
    assert events[-1]["rss_kb"] > 0


def test_counters_are_cumulative(logs_dir, tmp_path, children):
    burner = children(
        [named_binary(tmp_path, "tk-burner", sys.executable), "-c", "while True: pass"]
    )
    cfg = config(logs_dir, match_name="^tk-burner$")
    daemon.start_collector(cfg)
    wait_until(lambda: len(samples_of(cfg.run_folder, burner.pid)) >= 6, what="burner samples")
    daemon.stop_collector("r1", logs_dir)
    cpu = [s["cpu_user_ms"] + s["cpu_system_ms"] for s in samples_of(cfg.run_folder, burner.pid)]
    assert cpu == sorted(cpu) and cpu[-1] > cpu[0]


def test_match_cmdline_and_descendants(logs_dir, tmp_path, children):
    # A parent that matches only by command line, with children and a
    # grandchild that match nothing themselves.
    script = "sleep 60 & (sleep 60 & wait) & wait"
    parent = children(["sh", "-c", f"{script} # tk-marker-7f3a"])
    wait_until(lambda: len(_children_of(parent.pid)) >= 2, what="children of sh")
    cfg = config(logs_dir, match_cmdline="tk-marker-7f3a")
    daemon.start_collector(cfg)
    folder = cfg.run_folder
    wait_until(lambda: len(tracked(folder)) >= 4, what="parent, 2 children, grandchild")
    daemon.stop_collector("r1", logs_dir)
    records = {r["pid"]: r for r in tracked(folder)}
    assert records[parent.pid]["reason"] == "cmdline"
    # The subshell is a fork of sh with the same command line: either reason fits.
    sleeps = [r for r in records.values() if r["comm"] == "sleep"]
    assert len(sleeps) == 2 and all(r["reason"] == "descendant" for r in sleeps)
    assert len(records) == 4
    assert all(r["pid"] != os.getpid() for r in records.values())


def _named_shell(tmp_path, children, prefix: str):
    """A long-lived process of a name of its own (PREFIX<pid>), once it has exec'd: (its name, the process)."""
    name = f"{prefix}{os.getpid()}"[:15]
    binary = named_binary(tmp_path, name)
    shell = children([binary, "60"])
    wait_until(lambda: _procfs_cmdline(shell.pid)[:1] == [binary], what="the exec")
    return name, shell


def test_between_ticks_the_narrowed_filter_grows_once_per_batch_and_shrinks_at_the_tick(tmp_path, children, monkeypatch):
    """A loop of short processes under a followed shell: each child's fork grows the filter (one attach), its
    exit does not shrink it (that waits for the tick), and its children are read at the tick, not at its
    fork. (Two attaches and a /proc read per child made the collector fall behind such a loop on a busy
    machine: their zombies were reaped before their exit events were read.)"""
    events = _EventsRead(narrowed=True)
    name, shell = _named_shell(tmp_path, children, "tkgrow")
    tracker = ProcessTracker(match_name=re.compile(f"^{name}$"), events=events)
    children_read = []
    real_missed_children = tracker._missed_children
    monkeypatch.setattr(tracker, "_missed_children", lambda p: children_read.append(p.key.pid) or real_missed_children(p))
    try:
        events.waiting = [ProcEvent("exec", shell.pid, 0, 0)]
        tracker.on_events(int(time.time() * 1000))
        assert (events.followed, events.attached, children_read) == ({shell.pid}, 1, [shell.pid])
        short, kept = children(["sleep", "60"]), children(["sleep", "60"])  # as if the shell forked them
        for child in (short, kept):  # exec'd: a process read mid-exec has its line wait (another test's case)
            wait_until(lambda child=child: _procfs_cmdline(child.pid) == ["sleep", "60"], what="the exec")
        events.waiting = [ProcEvent("fork", short.pid, shell.pid, 0), ProcEvent("fork", kept.pid, shell.pid, 0)]
        new, _rows = tracker.on_events(int(time.time() * 1000))
        assert {p.key.pid for p in new} == {short.pid, kept.pid}
        assert (events.followed, events.attached, children_read) == ({shell.pid, short.pid, kept.pid}, 2, [shell.pid])
        short.kill()
        wait_until(lambda: ended(short.pid), what="the short child's end")
        events.waiting = [ProcEvent("exit", short.pid, shell.pid, 0)]
        tracker.on_events(int(time.time() * 1000))
        assert short.pid not in tracker.tracked and events.attached == 2  # not shrunk between ticks
        tracker.refresh(int(time.time() * 1000))
        assert (events.followed, events.attached) == ({shell.pid, kept.pid}, 3)
        assert children_read == [shell.pid, kept.pid]  # the one still alive, at the tick
    finally:
        tracker.close()


def test_without_a_narrowed_filter_no_children_wait_to_be_read(tmp_path, children):
    """Every fork comes when the kernel's filter is not narrowed (more than 500 processes, or a kernel that
    refused it): nothing is kept to read at a tick (the set of such processes grew for the whole run)."""
    events = _EventsRead(narrowed=False)
    name, shell = _named_shell(tmp_path, children, "tkwide")
    tracker = ProcessTracker(match_name=re.compile(f"^{name}$"), events=events)
    try:
        events.waiting = [ProcEvent("exec", shell.pid, 0, 0)]
        tracker.on_events(int(time.time() * 1000))
        kid = children(["sleep", "60"])  # as if the shell forked it
        wait_until(lambda: _procfs_cmdline(kid.pid) == ["sleep", "60"], what="the exec")
        events.waiting = [ProcEvent("fork", kid.pid, shell.pid, 0)]
        [followed], _rows = tracker.on_events(int(time.time() * 1000))
        assert followed.key.pid == kid.pid and tracker._children_unread == set()
    finally:
        tracker.close()


def _children_of(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(name))
            except OSError:
                pass
    return found


def test_wrapped_tasks_are_tracked_without_a_regex(logs_dir):
    cfg = config(logs_dir)  # no --match at all: only the PID folder
    daemon.start_collector(cfg)
    wrap = subprocess.run(
        tracekit_cmd("wrap", "--run-id", "r1", "--task-id", "t-42", "--", "sleep", "1"),
        capture_output=True,
        text=True,
    )
    assert wrap.returncode == 0, wrap.stderr
    event = read_jsonl(cfg.run_folder / "events.sleep.jsonl")[0]
    wait_until(lambda: tracked(cfg.run_folder, event["pid"]), what="registered sleep")
    daemon.stop_collector("r1", logs_dir)
    records = tracked(cfg.run_folder, event["pid"])
    assert len(records) == 1, json.dumps(records)  # one process (its line may be written again at its exec)
    [record] = records
    assert record["reason"] == "registered" and record["task_id"] == "t-42"
    assert record["create_time_ms"] == event["create_time_ms"]
    assert samples_of(cfg.run_folder, event["pid"])
    assert not list((cfg.run_folder / runfolder.PID_DIR).glob("*.json"))  # wrap cleans up


def test_pid_reuse_makes_a_new_process(logs_dir, tmp_path, children):
    binary = named_binary(tmp_path, "tk-reuse")
    cfg = config(logs_dir, match_name="^tk-reuse$")
    daemon.start_collector(cfg)
    first = children([binary, "60"])
    wait_until(lambda: samples_of(cfg.run_folder, first.pid), what="first process sampled")
    first.kill()
    first.wait()
    time.sleep(0.05)  # distinct start times (10 ms resolution)
    second = None
    for _ in range(200):  # ask the kernel for the same PID again
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(first.pid - 1))
        candidate = children([binary, "60"])
        if candidate.pid == first.pid:
            second = candidate
            break
        candidate.kill()
    assert second is not None, "could not get the same PID twice"
    # Two processes (a process's line may be written again after its exec: parse keeps its last).
    wait_until(lambda: len({(r["pid"], r["create_time_ms"]) for r in tracked(cfg.run_folder, first.pid)}) == 2,
               what="second process tracked")  # fmt: skip
    wait_until(
        lambda: len({s["create_time_ms"] for s in samples_of(cfg.run_folder, first.pid)}) == 2,
        what="samples of both processes",
    )
    daemon.stop_collector("r1", logs_dir)
    keys = {(r["pid"], r["create_time_ms"]) for r in tracked(cfg.run_folder, first.pid)}
    assert len(keys) == 2


def test_dead_pid_folder_entry_is_a_notice(logs_dir):
    cfg = config(logs_dir)
    folder = runfolder.ensure_writable_dir(cfg.run_folder)
    write_registration(cfg.effective_pid_dir, 4_000_000, 123, "ghost")  # no such process
    daemon.start_collector(cfg)
    log = folder / runfolder.COLLECTOR_LOG
    wait_until(lambda: "has already exited" in log.read_text(), what="notice in collector.log")
    assert daemon.collector_status("r1", logs_dir).running
    daemon.stop_collector("r1", logs_dir)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--run-id", "../etc"], "not a safe folder name"),
        (["--run-id", "a/b"], "not a safe folder name"),
        (["--run-id", "ok", "--interval-ms", "50"], "--interval-ms 50 is out of range"),
        (["--run-id", "ok", "--match", "(ffmpeg"], "--match '(ffmpeg' is not a valid regular expression"),
        (["--run-id", "ok", "--match-cmdline", "[x"], "--match-cmdline '[x' is not a valid"),
        (["--run-id", "ok", "--cpu-mhz", "-5"], "--cpu-mhz must be a positive number"),
        ([], "no run id"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(logs_dir, capsys, argv, message):
    assert cli.main(["collect", "start", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("tracekit collect: error:")
    assert not list(logs_dir.iterdir())  # nothing started, nothing written


def test_unwritable_logs_dir(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli.main(["collect", "start", "--run-id", "r", "--logs-dir", str(blocker / "logs")]) == 1
    err = capsys.readouterr().err
    assert "cannot write run folder" in err and "--logs-dir" in err
    with pytest.raises(RunFolderError):
        daemon.start_collector(CollectorConfig(run_id="r", logs_dir=blocker / "logs"))


def test_config_validates_on_creation():
    with pytest.raises(UsageError):
        CollectorConfig(run_id="r", node_id="bad node")


# -- sampling cost: kept /proc files, gated discovery ---------------------------


def host_ticks(folder) -> int:
    path = folder / runfolder.HOST_SAMPLES
    return len(read_csv(path)) if path.exists() else 0


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _steady_fd_count(pid: int) -> int:
    """The daemon's fds between ticks (a tick may hold one or two more for a moment)."""
    return min(_fd_count(pid) for _ in range(5) if time.sleep(0.03) is None)


def test_no_fd_leak_with_many_short_lived_processes(logs_dir, tmp_path, children):
    binary = named_binary(tmp_path, "tk-short")
    cfg = config(logs_dir, match_name="^tk-short$")
    status, _ = daemon.start_collector(cfg)
    folder = cfg.run_folder
    wait_until(lambda: host_ticks(folder) >= 3, what="first ticks")
    baseline = _steady_fd_count(status.pid)

    # While followed, a process's /proc files are kept open...
    sleepers = [children([binary, "60"]) for _ in range(10)]
    wait_until(lambda: all(samples_of(folder, p.pid) for p in sleepers), what="sleepers sampled")
    assert _steady_fd_count(status.pid) >= baseline + 10 * _procfs.ProcessFiles.FDS
    for p in sleepers:
        p.kill()
        p.wait()
    # ...and closed once it has gone, however many come and go.
    for _ in range(8):
        wave = [children([binary, "0.4"]) for _ in range(10)]
        for p in wave:
            p.wait()
    wait_until(lambda: _steady_fd_count(status.pid) <= baseline, what="fds back to the baseline")
    result = daemon.stop_collector("r1", logs_dir)
    assert result.summary["processes_tracked"] >= 10 + 40  # most short-lived ones were followed


def test_samples_are_the_processes_own_numbers(logs_dir, tmp_path, children):
    sleeper = children([named_binary(tmp_path, "tk-exact"), "60"])
    cfg = config(logs_dir, match_name="^tk-exact$")
    daemon.start_collector(cfg)
    wait_until(lambda: len(samples_of(cfg.run_folder, sleeper.pid)) >= 5, what="samples")
    daemon.stop_collector("r1", logs_dir)
    expected = _procfs.read_sample(sleeper.pid)  # a sleeping process: nothing moves any more
    last = samples_of(cfg.run_folder, sleeper.pid)[-1]
    assert last == {
        "ts_ms": last["ts_ms"],
        "pid": sleeper.pid,
        "create_time_ms": process_identity(sleeper.pid).create_time_ms,
        "cpu_user_ms": int(f"{expected.cpu_user_ms:.0f}"),
        "cpu_system_ms": int(f"{expected.cpu_system_ms:.0f}"),
        "rss_kb": expected.rss_kb,
        "num_threads": 1,
        "read_bytes": expected.read_bytes,
        "write_bytes": expected.write_bytes,
        "ctx_voluntary": expected.ctx_voluntary,
        "ctx_involuntary": expected.ctx_involuntary,
        "cpu_ns": expected.cpu_ns,
        "run_delay_ns": expected.run_delay_ns,
        "children_unseen_cpu_ns": 0,
    }


def test_a_process_that_execs_later_is_found(logs_dir, tmp_path, children):
    # No fork announces the exec: the young process is looked at again each tick.
    binary = named_binary(tmp_path, "tk-late")
    cfg = config(logs_dir, match_name="^tk-late$")
    daemon.start_collector(cfg)
    wait_until(lambda: host_ticks(cfg.run_folder) >= 2, what="first ticks")
    shell = children(["sh", "-c", f"sleep 0.6; exec {binary} 60"])
    wait_until(lambda: tracked(cfg.run_folder, shell.pid), what="the exec'd process tracked")
    daemon.stop_collector("r1", logs_dir)
    [record] = tracked(cfg.run_folder, shell.pid)
    assert record["reason"] == "name" and record["comm"] == "tk-late"


def _settled(pid: int, name: str) -> bool:
    """Exec'd, and asleep with counters that no longer move."""
    first = _procfs.read_sample(pid)
    time.sleep(0.02)
    stat = _procfs.read_stat(pid)
    return stat.comm == name and stat.state == "S" and _procfs.read_sample(pid) == first


def _started(tmp_path, children, name: str, count: int) -> list[subprocess.Popen]:
    binary = named_binary(tmp_path, name)
    procs = [children([binary, "60"]) for _ in range(count)]
    wait_until(lambda: all(_settled(p.pid, name) for p in procs), what=f"{name} settled in its sleep")
    return procs


def test_rows_are_the_same_with_or_without_kept_files(tmp_path, children, monkeypatch):
    procs = _started(tmp_path, children, "tk-rows", 3)
    kept = ProcessTracker(match_name=re.compile("^tk-rows$"))
    monkeypatch.setattr(process_module, "_kept_files_budget", lambda: 0)  # over the fd budget
    unkept = ProcessTracker(match_name=re.compile("^tk-rows$"))
    try:
        now_ms = int(time.time() * 1000)
        assert {p.key.pid for p in kept.refresh(now_ms)} == {p.pid for p in procs}
        assert {p.key.pid for p in unkept.refresh(now_ms)} == {p.pid for p in procs}
        assert len(kept._files) == 3 and not unkept._files
        assert sorted(kept.sample_rows(7)) == sorted(unkept.sample_rows(7))
        procs[0].kill()
        procs[0].wait()
        assert len(kept.sample_rows(8)) == len(unkept.sample_rows(8)) == 2
        assert procs[0].pid not in kept._files and procs[0].pid not in kept.tracked
    finally:
        kept.close()
        unkept.close()


def test_rows_of_a_tick_are_in_pid_order(tmp_path, children):
    """parse keeps proc.csv's row order when it is already (ts, pid): rows must not follow discovery order."""
    procs = _started(tmp_path, children, "tk-order", 3)
    tracker = ProcessTracker(match_name=re.compile("^tk-order$"))
    try:
        tracker.refresh(int(time.time() * 1000))
        # Discovery order is not PID order once PIDs wrap: put the highest PID first.
        tracker.tracked = dict(sorted(tracker.tracked.items(), reverse=True))
        pids = [int(row.split(",")[1]) for row in tracker.sample_rows(7)]
        assert pids == sorted(p.pid for p in procs)
    finally:
        tracker.close()


def test_discovery_survives_a_fork_counter_that_does_not_move(tmp_path, children, monkeypatch):
    monkeypatch.setattr(_procfs, "forks_since_boot", lambda proc_stat: 42)
    tracker = ProcessTracker(match_name=re.compile("^tk-fake"))
    try:
        tracker.refresh(int(time.time() * 1000))
        [first] = _started(tmp_path, children, "tk-fake1", 1)
        tracker.refresh(int(time.time() * 1000))
        assert first.pid not in tracker.tracked  # the counter says: nothing new, no listing
        monkeypatch.setattr(process_module, "RELIST_AT_LEAST_EVERY_S", 0.0)
        tracker.refresh(int(time.time() * 1000))  # the safety listing finds it...
        assert first.pid in tracker.tracked
        assert any("fork counter" in notice for notice in tracker.notices)
        monkeypatch.setattr(process_module, "RELIST_AT_LEAST_EVERY_S", 5.0)
        [second] = _started(tmp_path, children, "tk-fake2", 1)
        tracker.refresh(int(time.time() * 1000))  # ...and from then on /proc is listed every tick
        assert second.pid in tracker.tracked
    finally:
        tracker.close()


def test_pid_folder_is_listed_only_when_it_changed(tmp_path, children, monkeypatch):
    a, b = _started(tmp_path, children, "tk-reg", 2)
    pid_dir = tmp_path / "pids"
    tracker = ProcessTracker(pid_dir=pid_dir)
    listings = []
    real_listdir = os.listdir
    monkeypatch.setattr(
        process_module.os, "listdir", lambda path=".": (listings.append(path), real_listdir(path))[1]
    )
    folder_listings = lambda: sum(1 for path in listings if str(path) == str(pid_dir))  # noqa: E731
    try:
        now_ms = int(time.time() * 1000)
        write_registration(pid_dir, a.pid, process_identity(a.pid).create_time_ms, "t-a")
        assert [(p.key.pid, p.task_id) for p in tracker.refresh(now_ms)] == [(a.pid, "t-a")]
        # Back to back, within the folder's mtime granularity: still seen.
        write_registration(pid_dir, b.pid, process_identity(b.pid).create_time_ms, "t-b")
        assert [(p.key.pid, p.task_id) for p in tracker.refresh(now_ms)] == [(b.pid, "t-b")]
        # A settled folder is not listed again until it changes.
        old_ns = time.time_ns() - 60 * 10**9
        os.utime(pid_dir, ns=(old_ns, old_ns))
        tracker.refresh(now_ms)
        before = folder_listings()
        for _ in range(3):
            assert tracker.refresh(now_ms) == []
        assert folder_listings() == before
        (pid_dir / registration_name(a.pid, process_identity(a.pid).create_time_ms)).unlink()
        tracker.refresh(now_ms)
        assert folder_listings() == before + 1
    finally:
        tracker.close()


def test_node_scope_follows_only_the_processes_started_for_its_node(tmp_path, children):
    # Two nodes on one machine, each collector with a node scope: a process
    # that matches by name but was started for the other node is not followed.
    # A process of a concurrent run that uses the same node id is not followed either.
    binary = named_binary(tmp_path, "tk-scoped")
    marks = {runfolder.RUN_ID_ENV: "r1"}
    mine = children([binary, "60"], env={**os.environ, **marks, runfolder.NODE_ID_ENV: "cloud1"})
    theirs = children([binary, "60"], env={**os.environ, **marks, runfolder.NODE_ID_ENV: "cloud2"})
    unmarked = children([binary, "60"], env={k: v for k, v in os.environ.items() if k != runfolder.NODE_ID_ENV})
    concurrent = children([binary, "60"], env={**os.environ, runfolder.NODE_ID_ENV: "cloud1", runfolder.RUN_ID_ENV: "r2"})
    by_node = {}
    for node in ("cloud1", "cloud2"):
        cfg = CollectorConfig(run_id="r1", node_id=node, interval_ms=100, logs_dir=tmp_path / node,
                              match_name="^tk-scoped$", scope="node")  # fmt: skip
        daemon.start_collector(cfg)
        by_node[node] = cfg.run_folder
    try:
        for folder in by_node.values():
            wait_until(lambda f=folder: tracked(f) and samples_of(f, tracked(f)[0]["pid"]), what="a followed process")
    finally:
        summaries = {node: daemon.stop_collector("r1", tmp_path / node).summary for node in by_node}
    assert [r["pid"] for r in tracked(by_node["cloud1"])] == [mine.pid]
    assert [r["pid"] for r in tracked(by_node["cloud2"])] == [theirs.pid]
    assert not samples_of(by_node["cloud1"], theirs.pid) and not samples_of(by_node["cloud1"], unmarked.pid)
    assert not samples_of(by_node["cloud1"], concurrent.pid)
    assert summaries["cloud1"]["processes_of_other_nodes"] == 2  # theirs and the unmarked one, each seen once
    assert summaries["cloud1"]["processes_of_other_runs"] == 1  # the concurrent run's
    assert summaries["cloud2"]["processes_of_other_nodes"] == 3 and summaries["cloud2"]["processes_of_other_runs"] == 0
    facts = json.loads((by_node["cloud1"] / runfolder.NODE_FACTS).read_text())
    assert (facts["process_scope"], facts["process_marker"]) == ("node", "TRACEKIT_NODE_ID=cloud1 TRACEKIT_RUN_ID=r1")
    assert validation_errors("raw/node_facts", facts) == []


def test_machine_scope_follows_every_matching_process(logs_dir, tmp_path, children):
    binary = named_binary(tmp_path, "tk-anyone")
    other = children([binary, "60"], env={**os.environ, runfolder.NODE_ID_ENV: "cloud2"})
    cfg = config(logs_dir, match_name="^tk-anyone$")
    daemon.start_collector(cfg)
    wait_until(lambda: tracked(cfg.run_folder, other.pid), what="the other node's process, followed")
    daemon.stop_collector("r1", logs_dir)
    facts = json.loads((cfg.run_folder / runfolder.NODE_FACTS).read_text())
    assert (facts["process_scope"], facts["process_marker"]) == ("machine", None)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to give a node one of them")
def test_a_node_with_its_own_cpus_records_them_and_samples_only_them(logs_dir):
    cpu = max(os.sched_getaffinity(0))
    cfg = config(logs_dir, cpus=(cpu,))
    daemon.start_collector(cfg)
    host_samples = cfg.run_folder / runfolder.HOST_SAMPLES
    wait_until(lambda: host_samples.exists() and len(read_csv(host_samples)) >= 2, what="2 host samples")
    status = daemon.collector_status("r1", logs_dir)
    assert os.sched_getaffinity(status.pid) == {cpu}  # the collector itself runs there too
    daemon.stop_collector("r1", logs_dir)
    facts = json.loads((cfg.run_folder / runfolder.NODE_FACTS).read_text())
    assert (facts["cpus"], facts["cores_usable"], facts["cpus_source"]) == ([cpu], 1, "assigned")
    assert facts["cores_logical"] == os.cpu_count()
    per_cpu = {r["ts_ms"]: r for r in read_csv(cfg.run_folder / runfolder.HOST_CPU_SAMPLES)}
    samples = read_csv(cfg.run_folder / runfolder.HOST_SAMPLES)
    assert len(per_cpu) == len(samples) == len(read_csv(cfg.run_folder / runfolder.HOST_CPU_SAMPLES))  # one CPU
    for sample in samples:
        core = per_cpu[sample["ts_ms"]]
        assert core["cpu"] == cpu
        for mode in ("user", "system", "idle", "iowait"):  # the node's CPU figures are its one core's
            assert sample[f"cpu_{mode}_ms"] == core[f"{mode}_ms"]
    with open("/proc/stat") as f:
        line = next(line for line in f if line.startswith(f"cpu{cpu} "))
    assert core["user_ms"] <= int(line.split()[1]) * 1000 // os.sysconf("SC_CLK_TCK")


def test_cpus_the_machine_does_not_have_are_one_line_and_exit_2(logs_dir, capsys):
    code = cli.main(["collect", "start", "--run-id", "r1", "--cpus", "4096"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("tracekit collect: error: --cpus 4096: this machine lets this process use CPUs")
    assert len(err.strip().splitlines()) == 1 and not daemon.collector_status("r1", logs_dir).running


def test_a_process_seen_while_it_execs_is_looked_at_again(tmp_path, children, monkeypatch):
    # Right after exec the kernel may not have set up the new environment yet
    # (/proc/<pid>/environ reads empty): that is "not known yet", not "another node's".
    binary = named_binary(tmp_path, "tk-exec")
    child = children([binary, "60"], env={**os.environ, runfolder.NODE_ID_ENV: "cloud1"})
    wait_until(lambda: _procfs.read_environ(child.pid), what="the child's environment")
    real = _procfs.read_environ
    reads = []

    def empty_first(pid):
        reads.append(pid)
        return b"" if reads.count(pid) == 1 else real(pid)

    monkeypatch.setattr(_procfs, "read_environ", empty_first)
    monkeypatch.setattr(process_module, "RELIST_AT_LEAST_EVERY_S", 0.0)
    tracker = ProcessTracker(match_name=re.compile("^tk-exec$"), node_scope="cloud1")
    try:
        tracker.refresh(int(time.time() * 1000))
        assert child.pid not in tracker.tracked and tracker.other_nodes_total == 0
        tracker.refresh(int(time.time() * 1000))
        assert child.pid in tracker.tracked and tracker.tracked[child.pid].reason == "name"
        assert reads.count(child.pid) == 2  # and never again once decided
    finally:
        tracker.close()


def test_a_process_judged_another_node_s_before_its_exec_is_followed_after_it(tmp_path, children, monkeypatch):
    # `tracekit serve --command -- python3 .../app.py` carries no node marker, yet its command line
    # matches; its fork is that process until it execs the service with this node's marker. A
    # collector that judged the fork "another node's" never looked again: the service went unsampled.
    go = tmp_path / "go"
    unmarked = {k: v for k, v in os.environ.items() if k != runfolder.NODE_ID_ENV}
    script = ("import os, sys, time\n"
              "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
              "os.execve(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', 'tk-svc-marker'],\n"
              "          {'TRACEKIT_NODE_ID': 'cloud1'})\n")  # fmt: skip
    assert runfolder.NODE_ID_ENV == "TRACEKIT_NODE_ID"  # the marker the script's exec gives
    child = children([sys.executable, "-c", script, str(go), "tk-svc-marker"], env=unmarked)
    wait_until(lambda: _procfs.read_environ(child.pid), what="the child's environment")
    monkeypatch.setattr(process_module, "RELIST_AT_LEAST_EVERY_S", 0.0)
    tracker = ProcessTracker(match_cmdline=re.compile("tk-svc-marker"), node_scope="cloud1")
    try:
        tracker.refresh(int(time.time() * 1000))
        assert child.pid not in tracker.tracked and tracker.other_nodes_total == 1
        tracker.refresh(int(time.time() * 1000))
        assert tracker.other_nodes_total == 1  # looked at again, counted once
        go.touch()
        wait_until(lambda: _procfs.read_cmdline(child.pid)[2:3] == ["import time; time.sleep(60)"], what="the exec")
        tracker.refresh(int(time.time() * 1000))
        assert child.pid in tracker.tracked and tracker.tracked[child.pid].reason == "cmdline"
    finally:
        tracker.close()


def test_a_registered_task_is_followed_as_itself_not_as_its_cgroup_s_trampoline(tmp_path, children):
    """A worker registers its task once the spawn returned, when the trampoline (tracekit.taskcgroup) may not
    have exec'd the task yet: the collector waits for the task's own name and command line."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)  # the trampoline's "move" blocks on it until a reader opens it
    task = children([SHELL, "-c", TRAMPOLINE, "tracekit-task", str(gate), "--", "", "sleep", "300"])
    pid_dir = tmp_path / "pids"
    tracker = ProcessTracker(pid_dir=pid_dir)
    wait_until(lambda: _procfs_cmdline(task.pid)[:3] == [SHELL, "-c", TRAMPOLINE], what="the trampoline")
    write_registration(pid_dir, task.pid, process_identity(task.pid).create_time_ms, "t-1")
    assert tracker.refresh(int(time.time() * 1000)) == []  # the shell, not the task yet
    with open(gate) as _reader:  # the move done, it execs the task
        wait_until(lambda: _procfs_cmdline(task.pid)[:1] == ["sleep"], what="the exec")
    [followed] = tracker.refresh(int(time.time() * 1000))
    assert (followed.key.pid, followed.comm, followed.cmdline, followed.task_id) == (task.pid, "sleep", ["sleep", "300"], "t-1")


def _procfs_cmdline(pid: int) -> list[str]:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\0")[:-1]
    except OSError:
        return []


class _EventsRead:
    """What the kernel's process-event socket hands the tracker, given here in the order to test (the
    real socket is tested in test_process_events.py; this order is a race there)."""

    def __init__(self, narrowed: bool = False):
        self.waiting: list = []
        self.overruns = 0
        self.narrowed = narrowed  # as if the kernel's filter were narrowed to the followed processes
        self.following: set[int] = set()
        self.attached = 0  # filters given to the kernel (a changed set of processes)

    def read(self):
        events, self.waiting = self.waiting, []
        return events

    @property
    def followed(self) -> set[int]:
        """As ProcEventSocket.followed: what a narrowed filter lets through, empty when not narrowed."""
        return self.following if self.narrowed else set()

    def follow(self, followed, any_exec):
        if set(followed) != self.following:
            self.attached += 1
        self.following = set(followed)
        return self.narrowed

    def close(self):
        pass


def test_a_process_found_after_its_exec_is_recorded_once_and_again_only_if_its_exec_changed_it(tmp_path, children):
    # A scan may find a process after its exec, before the exec event is read: that event changes
    # nothing and must not write its line again (seen in CI: two lines of one ffmpeg).
    events = _EventsRead()
    name = f"tk-once{os.getpid()}"[:15]  # this session's: another session may run this test at the same time
    binary = named_binary(tmp_path, name)
    child = children([binary, "60"])
    wait_until(lambda: _procfs_cmdline(child.pid)[:1] == [binary], what="the child's exec")
    tracker = ProcessTracker(match_name=re.compile(f"^{name}$"), events=events)
    try:
        [found] = tracker.refresh(int(time.time() * 1000))
        assert found.key.pid == child.pid
        events.waiting = [ProcEvent("exec", child.pid, 0, time.monotonic_ns())]
        new, _rows = tracker.on_events(int(time.time() * 1000))
        assert new == []
        # A process whose exec did change it (runc's init into the command, a shell into its child) is
        # recorded again as it is now.
        found.comm, found.cmdline = "runc:[2:INIT]", ["runc", "init"]
        events.waiting = [ProcEvent("exec", child.pid, 0, time.monotonic_ns())]
        [again], _rows = tracker.on_events(int(time.time() * 1000))
        assert again is found and (found.comm, found.cmdline) == (name, [binary, "60"])
        # ... also when it ended within the same events (its zombie still says what it was).
        found.comm, found.cmdline = "runc:[2:INIT]", ["runc", "init"]
        child.kill()
        wait_until(lambda: ended(child.pid), what="the child's end")
        events.waiting = [ProcEvent("exec", child.pid, 0, 0), ProcEvent("exit", child.pid, 0, 0)]
        [last], rows = tracker.on_events(int(time.time() * 1000))
        assert last is found and found.comm == name and child.pid not in tracker.tracked
    finally:
        tracker.close()


def test_a_process_read_in_the_middle_of_its_exec_is_recorded_once_whole(tmp_path, children, monkeypatch):
    """A registration read while its task execs: the new name, no command line yet. Its line waits for the
    exec event (or its exit, or the next tick) and is written once, whole, not once empty and again (seen
    as two lines of a wrapped sleep under load). A process with no command line at all waits one tick only."""
    pid_dir = tmp_path / "pids"
    events = _EventsRead()
    tracker = ProcessTracker(pid_dir=pid_dir, events=events)
    mid_exec: set[int] = set()
    real_read_cmdline = process_module._procfs.read_cmdline
    monkeypatch.setattr(process_module._procfs, "read_cmdline", lambda pid: [] if pid in mid_exec else real_read_cmdline(pid))
    try:
        tracker.refresh(int(time.time() * 1000))  # the folder made and watched
        task, bare = children(["sleep", "60"]), children(["sleep", "61"])
        for child in (task, bare):
            wait_until(lambda child=child: _procfs_cmdline(child.pid)[:1] == ["sleep"], what="the exec")
            mid_exec.add(child.pid)
            write_registration(pid_dir, child.pid, process_identity(child.pid).create_time_ms, f"t-{child.pid}")
        new, rows = tracker.on_registrations(int(time.time() * 1000))
        assert new == [] and {int(row.split(",")[1]) for row in rows} == {task.pid, bare.pid}  # sampled, lines wait
        mid_exec.discard(task.pid)
        events.waiting = [ProcEvent("exec", task.pid, 0, 0)]
        [whole], _rows = tracker.on_events(int(time.time() * 1000))
        assert (whole.key.pid, whole.cmdline) == (task.pid, ["sleep", "60"])
        [settled] = tracker.refresh(int(time.time() * 1000))  # no exec event of it: the tick writes it as it is
        assert (settled.key.pid, settled.cmdline) == (bare.pid, [])
        assert tracker.refresh(int(time.time() * 1000)) == []
    finally:
        tracker.close()


def test_a_watched_pid_folder_is_read_when_it_changes_not_on_ticks_and_watched_again_once_replaced(tmp_path, children, monkeypatch):
    """With process events the PID folder is watched (inotify): a tick neither lists nor stats it, a
    registration is followed as the watch fires, and a folder removed and made again is watched again."""
    pid_dir = tmp_path / "pids"
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(process_module.os, "listdir", lambda path=".": listed.append(path) or real_listdir(path))
    tracker = ProcessTracker(pid_dir=pid_dir, events=_EventsRead())

    def fired() -> bool:
        return bool(select.select([tracker.watch.fileno()], [], [], 0)[0])

    def register(task_id: str) -> subprocess.Popen:
        child = children(["sleep", "60"])
        wait_until(lambda: _procfs_cmdline(child.pid)[:1] == ["sleep"], what="the exec")
        write_registration(pid_dir, child.pid, process_identity(child.pid).create_time_ms, task_id)
        return child

    try:
        assert tracker.refresh(int(time.time() * 1000)) == [] and tracker.watch is not None
        listed.clear()
        for _ in range(3):
            tracker.refresh(int(time.time() * 1000))
        assert pid_dir not in listed and str(pid_dir) not in listed
        first = register("t-1")
        wait_until(fired, what="the watch")
        [followed], _rows = tracker.on_registrations(int(time.time() * 1000))
        assert (followed.key.pid, followed.task_id) == (first.pid, "t-1")
        shutil.rmtree(pid_dir)
        wait_until(fired, what="the watch of a removed folder")
        assert tracker.on_registrations(int(time.time() * 1000)) == ([], []) and tracker.watch is None
        tracker.refresh(int(time.time() * 1000))  # made and watched again
        assert tracker.watch is not None and pid_dir.is_dir()
        second = register("t-2")
        wait_until(fired, what="the new folder's watch")
        [followed], _rows = tracker.on_registrations(int(time.time() * 1000))
        assert (followed.key.pid, followed.task_id) == (second.pid, "t-2")
    finally:
        tracker.close()


def test_children_forked_before_the_narrowed_filter_knew_their_parent_are_followed(tmp_path, children):
    """With the kernel's filter narrowed to the followed processes, the forks of a process made before the
    filter knew it never come: its children are read from /proc when it is followed."""
    events = _EventsRead(narrowed=True)
    name = f"tkpar{os.getpid()}"[:15]
    shell = children([named_binary(tmp_path, name, target="sh"), "-c", "sleep 60 & sleep 60 & wait"])
    wait_until(lambda: len(_children_of(shell.pid)) == 2, what="the shell's two children")
    tracker = ProcessTracker(match_name=re.compile(f"^{name}$"), events=events)
    try:
        events.waiting = [ProcEvent("exec", shell.pid, 0, 0)]  # found at its exec; its forks were not seen
        new, _rows = tracker.on_events(int(time.time() * 1000))
        assert {p.key.pid for p in new} == {shell.pid, *_children_of(shell.pid)}
        assert {p.reason for p in new if p.key.pid != shell.pid} == {"descendant"}
        assert events.followed == {shell.pid, *_children_of(shell.pid)}  # the filter knows them all
    finally:
        tracker.close()


def test_a_registered_task_whose_exec_event_never_came_is_followed_at_the_next_tick(tmp_path, children):
    """Its registration read while it was still the trampoline; its exec event dropped (it came before the
    narrowed filter knew it): the tick looks at the registration again."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    pid_dir = tmp_path / "pids"
    events = _EventsRead(narrowed=True)
    tracker = ProcessTracker(pid_dir=pid_dir, events=events)
    try:
        tracker.refresh(int(time.time() * 1000))  # the folder made and watched
        task = children([SHELL, "-c", TRAMPOLINE, "tracekit-task", str(gate), "--", "", "sleep", "300"])
        wait_until(lambda: _procfs_cmdline(task.pid)[:3] == [SHELL, "-c", TRAMPOLINE], what="the trampoline")
        write_registration(pid_dir, task.pid, process_identity(task.pid).create_time_ms, "t-1")
        assert tracker.on_registrations(int(time.time() * 1000)) == ([], [])  # the shell, not the task yet
        assert task.pid in events.followed  # the filter lets its exec through from now on
        with open(gate) as _reader:
            wait_until(lambda: _procfs_cmdline(task.pid)[:1] == ["sleep"], what="the exec")
        [followed] = tracker.refresh(int(time.time() * 1000))  # no exec event read
        assert (followed.key.pid, followed.task_id, followed.cmdline) == (task.pid, "t-1", ["sleep", "300"])
    finally:
        tracker.close()


def test_the_pidfile_names_the_collector_only_once_its_start_record_is_written(logs_dir):
    """'tracekit collect start' returns when the pidfile names the collector: by then its start record is
    there to read and its process events are subscribed (the fresh-machine suite read collector.jsonl right
    after 'make start-collect' and found none). Watched as tightly as a loop can: the pidfile is read
    without pause from the collector's launch."""
    folder = logs_dir / "pidready"
    pidfile = folder / runfolder.COLLECTOR_PIDFILE
    child = subprocess.Popen([*tracekit_cmd(), "collect", "run", "--run-id", "pidready", "--logs-dir", str(logs_dir),
                              "--node-id", "n1", "--interval-ms", "1000", "--no-host"])  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                named = pidfile.read_text().split()[:1] == [str(child.pid)]
            except OSError:
                named = False
            if named:
                break
        assert named, "the collector never named itself in its pidfile"
        records = read_jsonl(folder / runfolder.COLLECTOR_EVENTS)  # read at once: no wait
        assert records and records[0]["event"] == "start"
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
