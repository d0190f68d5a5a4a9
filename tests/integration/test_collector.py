"""The collector daemon against real processes: lifecycle, matching,
descendants, PID registrations, PID reuse, final flush, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import named_binary, read_jsonl, read_proc_csv, tracekit_cmd, wait_until
from tracekit import cli, runfolder
from tracekit.collect import daemon
from tracekit.collect._procfs import has_exited
from tracekit.collect.daemon import CollectorConfig
from tracekit.collect.process import write_registration
from tracekit.errors import RunFolderError, UsageError
from tracekit.schemas import validation_errors

SCHEMA_OF = {
    runfolder.HOST_SAMPLES: "raw/host_sample",
    runfolder.PROC_SAMPLES: "raw/proc_sample",
    runfolder.PROCESSES: "raw/process",
    runfolder.COLLECTOR_EVENTS: "raw/collector_event",
}


def config(logs_dir, run_id="r1", **overrides) -> CollectorConfig:
    return CollectorConfig(run_id=run_id, node_id="cloud1", interval_ms=100, logs_dir=logs_dir, **overrides)


def tracked(folder, pid=None) -> list[dict]:
    path = folder / runfolder.PROCESSES
    records = read_jsonl(path) if path.exists() else []
    return [r for r in records if pid is None or r["pid"] == pid]


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


def test_samples_match_schemas_and_final_sample_is_flushed(logs_dir, tmp_path, children):
    sleeper = children([named_binary(tmp_path, "tk-sleeper"), "60"])
    cfg = config(logs_dir, match_name="^tk-sleeper$")
    daemon.start_collector(cfg)
    folder = cfg.run_folder
    wait_until(lambda: len(samples_of(folder, sleeper.pid)) > daemon.SELF_USAGE_EVERY_TICKS, what="samples")
    result = daemon.stop_collector("r1", logs_dir)

    for name, schema in SCHEMA_OF.items():
        records = (read_proc_csv if name.endswith(".csv") else read_jsonl)(folder / name)
        assert records, name
        for record in records:
            assert validation_errors(schema, record) == [], (name, record)
    facts = json.loads((folder / runfolder.NODE_FACTS).read_text())
    assert validation_errors("raw/node_facts", facts) == []
    assert facts["node"] == "cloud1" and facts["stage"] == "cloud"

    # One host sample per tick, the final one included (taken at SIGTERM).
    assert len(read_jsonl(folder / runfolder.HOST_SAMPLES)) == result.summary["ticks"]
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
    [record] = tracked(cfg.run_folder, event["pid"])
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
    wait_until(lambda: len(tracked(cfg.run_folder, first.pid)) == 2, what="second process tracked")
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
