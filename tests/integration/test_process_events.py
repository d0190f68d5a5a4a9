"""Process discovery by the kernel's process events (netlink proc connector): real processes, a real collector.

Short tasks are followed from their fork, exec or registration and sampled at their exit; without events
(turned off here, or no privilege) the collector polls /proc as before and says so in node.json.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.helpers import read_jsonl, tracekit_cmd
from tracekit import runfolder
from tracekit.collect import daemon
from tracekit.collect.daemon import CollectorConfig
from tracekit.collect.procevents import EventsUnavailable, ProcEventSocket, own_namespace
from tracekit.invocation import Invocation, run_invocation
from tracekit.taskcgroup import TaskCgroups
from tracekit.trace.parse import parse_run

FFMPEG_SHORT = ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                "testsrc=duration=1:size=160x120:rate=10", "-f", "null", "-"]  # fmt: skip


def require_events() -> None:
    """These tests need the kernel's process events: a root session on the machine has them. A session in
    a PID namespace of its own (the fresh-machine check runs its chroot in one) never gets any, whatever
    it does: there, and only there, such a test cannot run and says why; anything else is a failure."""
    namespace = own_namespace()
    if namespace is not None:
        pytest.skip(f"the kernel sends process events to the machine's initial PID namespace only; this test "
                    f"session runs in a {namespace} namespace of its own (the polling fallback is tested here)")
    try:
        ProcEventSocket.open().close()
    except EventsUnavailable as exc:
        pytest.fail(f"this test runs as root on a kernel with the proc connector: {exc}")


def short_wrapped_tasks(logs_dir, run_id: str, count: int) -> None:
    for number in range(count):
        wrap = subprocess.run(tracekit_cmd("wrap", "--run-id", run_id, "--task-id", f"t-{number}", "--", *FFMPEG_SHORT),
                              capture_output=True, text=True)  # fmt: skip
        assert wrap.returncode == 0, wrap.stderr


def discovery(folder) -> dict:
    return json.loads((folder / runfolder.NODE_FACTS).read_text())["process_discovery"]


def test_three_short_wrapped_tasks_all_have_samples(logs_dir):
    """The issue's case: three ffmpeg tasks shorter than the interval; polling sampled 2 of 3."""
    require_events()
    cfg = CollectorConfig(run_id="ev1", node_id="cloud1", interval_ms=200, logs_dir=logs_dir)
    daemon.start_collector(cfg)
    short_wrapped_tasks(logs_dir, "ev1", 3)
    daemon.stop_collector("ev1", logs_dir)
    assert discovery(cfg.run_folder) == {"mode": "events", "why_polling": None}
    audit = parse_run(cfg.run_folder).audit
    assert audit["invocations"] == 3 and audit["invocations_with_samples"] == 3
    log = (cfg.run_folder / runfolder.COLLECTOR_LOG).read_text()
    assert log.count("processes found by the kernel's process events") == 1


def test_without_events_the_collector_polls_and_says_why(logs_dir):
    cfg = CollectorConfig(run_id="ev2", node_id="cloud1", interval_ms=200, logs_dir=logs_dir, process_events=False)
    assert "--no-process-events" in cfg.to_argv()
    daemon.start_collector(cfg)
    short_wrapped_tasks(logs_dir, "ev2", 1)
    subprocess.run(["sleep", "0.5"])  # a tick or two
    result = daemon.stop_collector("ev2", logs_dir)
    assert discovery(cfg.run_folder) == {"mode": "polling",
                                         "why_polling": "process events turned off (--no-process-events)"}
    assert result.summary["ticks"] >= 2 and result.summary["exit_samples"] == 0
    log = (cfg.run_folder / runfolder.COLLECTOR_LOG).read_text()
    assert log.count("processes found by polling /proc each tick") == 1
    assert parse_run(cfg.run_folder).audit["invocations"] == 1


def test_a_collector_without_the_privilege_polls_and_says_why(logs_dir):
    """The real fallback: root without CAP_NET_ADMIN (as in many containers) cannot listen."""
    run = subprocess.run(["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin",
                          *tracekit_cmd("collect", "run", "--run-id", "ev3", "--logs-dir", str(logs_dir),
                                        "--interval-ms", "100", "--duration", "0.3")],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    found = discovery(logs_dir / "ev3")
    # In a PID namespace of its own (the fresh-machine chroot) that is the reason found first.
    reason = "namespace of its own" if own_namespace() else "cannot listen to the kernel's process events"
    assert found["mode"] == "polling" and reason in found["why_polling"], found
    assert [e["event"] for e in read_jsonl(logs_dir / "ev3" / runfolder.COLLECTOR_EVENTS)][-1] == "stop"


def test_a_collector_in_a_pid_namespace_of_its_own_polls_and_says_why(logs_dir):
    """The kernel takes a listen request from a PID namespace other than the machine's (a container, the
    fresh-machine check's chroot) without a word and sends nothing: the collector found no process but at
    its 60 s listings (seen in the fresh root: every collector test failed). It checks, and polls."""
    run = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc",
                          *tracekit_cmd("collect", "run", "--run-id", "ev5", "--logs-dir", str(logs_dir),
                                        "--interval-ms", "100", "--duration", "0.3")],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    found = discovery(logs_dir / "ev5")
    assert found["mode"] == "polling" and "namespace of its own" in found["why_polling"], found


def test_a_task_of_500_short_processes_has_its_whole_cpu_in_the_process_layer(logs_dir):
    """The process layer's CPU (proc_metrics, what the OpenDC export sums) within 2% of the task cgroup's:
    exact per-process CPU (schedstat), the reaped children's CPU their rows missed (the parent's children
    counters), and the task's tail after its last sample (its wrapper's rusage)."""
    require_events()
    cfg = CollectorConfig(run_id="ev4", node_id="n1", interval_ms=200, logs_dir=logs_dir, host=False)
    cgroups = TaskCgroups.detect("ev4", "n1", cfg.run_folder, version=1)
    assert cgroups.unavailable is None
    daemon.start_collector(cfg)
    try:
        event = run_invocation(Invocation(argv=["sh", "-c", "for i in $(seq 500); do /bin/true; done"], run_id="ev4",
                                          logs_dir=logs_dir, module="cmd", node_id="n1", task_id="t-many"),
                               cgroups=cgroups)  # fmt: skip
    finally:
        daemon.stop_collector("ev4", logs_dir)
        cgroups.close()
    parse_run(cfg.run_folder)
    table = pq.read_table(cfg.run_folder / "cctf" / "proc_metrics" / "n1.parquet")
    mine = table.filter(pc.equal(table.column("task_id"), "t-many"))
    process_ms = pc.sum(mine.column("cpu_user_ms")).as_py() + pc.sum(mine.column("cpu_system_ms")).as_py()
    assert process_ms == pytest.approx(event["cgroup_cpu_ms"], rel=0.02)
    assert len(set(mine.column("pid").to_pylist())) > 100  # the short processes are in it, not only the loop's shell


def test_the_kernel_sends_a_narrowed_socket_only_the_followed_processes_events():
    """The filter narrowed to this process: its child's fork and exit come, the grandchild's do not, nor
    any exec of a process it does not follow."""
    require_events()
    events = ProcEventSocket.open()
    try:
        assert events.follow({os.getpid()}, any_exec=False) is True
        child = subprocess.Popen(["sh", "-c", "/bin/true; exit 3"])
        child.wait()
        seen, deadline = [], time.monotonic() + 2.0
        while time.monotonic() < deadline and not any(e.kind == "exit" and e.pid == child.pid for e in seen):
            select.select([events], [], [], 0.2)
            seen += events.read()
        mine = [(e.kind, e.pid) for e in seen if e.pid == child.pid or e.ppid == child.pid]
        assert mine == [("fork", child.pid), ("exit", child.pid)], seen  # no exec, nothing of /bin/true
    finally:
        events.close()
