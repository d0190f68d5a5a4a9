"""Tasks born in cgroups of their own, v1 and v2 (this kernel has both): real processes, real cgroups."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ended, tracekit_cmd, wait_until
from tracekit import taskcgroup
from tracekit.errors import CommandNotFound
from tracekit.trace.audit import CGROUP_FLOOR_MS
from tracekit.invocation import Invocation, run_invocation
from tracekit.jsonl import write_json
from tracekit.collect.taskcgroups import CGROUP_CSV_COLUMNS, TaskCgroupSampler
from tracekit.taskcgroup import TaskCgroups, cgroup_name, node_folder_name, remove_stale

MANY = "for i in $(seq 300); do /bin/true; done"


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def cgroups(request, tmp_path):
    found = TaskCgroups.detect("cg1", "n1", tmp_path / "logs" / "cg1", version=request.param)
    if found.unavailable:
        pytest.fail(f"this kernel has cgroup v1 and v2 hierarchies (tests/cgroupfs.py mounts them): {found.unavailable}")
    assert found.version == request.param
    yield found
    found.clear_leftovers()
    found.close()


def run(tmp_path, argv, cgroups, **options) -> dict:
    invocation = Invocation(argv=argv, run_id="cg1", logs_dir=tmp_path / "logs", module="cmd", node_id="n1", **options)
    return run_invocation(invocation, cgroups=cgroups)


def test_a_task_of_300_processes_is_counted_whole_by_its_cgroup(tmp_path, cgroups):
    event = run(tmp_path, ["sh", "-c", MANY], cgroups)
    waited_ms = event["cpu_user_ms"] + event["cpu_system_ms"]  # every process here is waited for: rusage has them all
    assert event["cgroup_cpu_ms"] == pytest.approx(waited_ms, rel=0.01, abs=CGROUP_FLOOR_MS)
    assert event["cgroup_cpu_user_ms"] + event["cgroup_cpu_system_ms"] == pytest.approx(event["cgroup_cpu_ms"], abs=0.01)
    assert "cgroup_kept" not in event and "cgroup_error" not in event
    if "memory" in cgroups.readings():  # v1 here; v2 where its memory controller can be enabled
        assert event["cgroup_memory_peak_bytes"] > 0
    assert cgroups.leftovers() == []  # removed once read


def test_a_process_that_outlives_its_task_is_named_then_ended_by_the_next_worker(tmp_path, cgroups):
    # setsid: out of the task's process group, not waited for, invisible to rusage; its cgroup holds it.
    event = run(tmp_path, ["sh", "-c", "setsid sleep 300 & echo started"], cgroups)
    kept = event["cgroup_kept"]  # one per hierarchy (v1: cpuacct, memory, pids; v2: the one)
    assert len(kept) == len(cgroups.dirs)
    [cpu] = [k for k in kept if "/cpuacct/" in k or cgroups.version == 2]
    pids = [int(p) for p in open(os.path.join(cpu, "cgroup.procs")).read().split()]
    assert pids and all(os.path.exists(f"/proc/{pid}") for pid in pids)
    # A worker started again for the same run folder ends what its predecessor's tasks left running.
    again = TaskCgroups.detect("cg1", "n1", tmp_path / "logs" / "cg1", version=cgroups.version)
    killed = again.clear_leftovers()
    assert killed == {cpu: pids} and not any(os.path.exists(k) for k in kept)
    wait_until(lambda: all(ended(pid) for pid in pids), what="the end")


def test_workers_of_two_run_folders_with_one_run_and_node_id_keep_apart(tmp_path, cgroups):
    other = TaskCgroups.detect("cg1", "n1", tmp_path / "elsewhere" / "cg1", version=cgroups.version)
    assert set(other.dirs.values()).isdisjoint(cgroups.dirs.values())
    other.close()


def test_a_missing_or_unrunnable_command_is_said_as_without_a_cgroup(tmp_path, cgroups):
    with pytest.raises(CommandNotFound, match="command not found: no-such-tk-command"):
        run(tmp_path, ["no-such-tk-command"], cgroups)
    script = tmp_path / "not-executable.sh"
    script.write_text("echo hi\n")
    with pytest.raises(CommandNotFound, match="cannot execute"):
        run(tmp_path, [str(script)], cgroups)
    with pytest.raises(CommandNotFound, match="cannot run in"):
        run(tmp_path, ["true"], cgroups, cwd=str(tmp_path / "no-such-folder"))
    assert cgroups.leftovers() == []


def test_a_task_in_its_own_folder_and_group_is_counted_too(tmp_path, cgroups):
    event = run(tmp_path, ["sh", "-c", MANY], cgroups, cwd=str(tmp_path), timeout_s=60)
    assert event["status"] == 0
    assert event["cgroup_cpu_ms"] == pytest.approx(event["cpu_user_ms"] + event["cpu_system_ms"], rel=0.01,
                                                   abs=CGROUP_FLOOR_MS)


def test_the_readings_are_said_for_node_json(cgroups):
    described = cgroups.describe()
    assert described["available"] and described["version"] == cgroups.version
    assert described["readings"][0] == "cpu" and set(described["folders"]) == set(cgroups.dirs)


def test_without_cgroups_a_task_runs_sampled_only(tmp_path, monkeypatch):
    monkeypatch.setattr(taskcgroup, "v1_hierarchies", lambda *_: {})
    monkeypatch.setattr(taskcgroup, "v2_hierarchy", lambda *_: None)
    found = TaskCgroups.detect("cg1", "n1", tmp_path)
    assert found.unavailable.startswith("no cgroup hierarchy is mounted") and found.task("t") is None
    assert found.describe() == {"available": False, "why": found.unavailable}
    event = run(tmp_path, ["true"], found)
    assert event["status"] == 0 and "cgroup_cpu_ms" not in event



def test_the_argv_reaches_the_task_literally_through_the_trampoline(tmp_path, cgroups):
    out = tmp_path / "argv.json"
    values = ["--", "$(touch pwned)", '"$0"', "a b", "-c"]
    script = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"
    # cwd: spawned by Popen, so behind the trampoline on v1 too
    event = run(tmp_path, ["python3", "-c", script, str(out), *values], cgroups, cwd=str(tmp_path))
    assert event["status"] == 0 and json.loads(out.read_text()) == values
    assert not (tmp_path / "pwned").exists() and event["cgroup_cpu_ms"] > 0


def test_the_collector_samples_each_live_task_cgroup_of_its_run_and_node(tmp_path, cgroups):
    folder = tmp_path / "logs" / "cg1"
    folder.mkdir(parents=True, exist_ok=True)
    sampler = TaskCgroupSampler(folder, "cg1", "n1")
    assert sampler.rows(1) == []  # no worker yet: nothing, and asked again next tick
    (folder / "task_cgroups.json").write_text(json.dumps({"node": "n1", "run_id": "cg1", **cgroups.describe()}))
    task = cgroups.task(cgroup_name("t 1", 1))
    task.make()
    burner = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    for folder in task.dirs.values():  # moved in by hand: only the sampling is tested here
        (folder / "cgroup.procs").write_text(str(burner.pid))
    try:
        wait_until(lambda: sampler.rows(2) and int(sampler.rows(2)[0].split(",")[2]) > 20_000, what="20 ms of CPU")
        [row] = sampler.rows(3)
        values = dict(zip(CGROUP_CSV_COLUMNS, row.split(",")))
        assert values["ts_ms"] == "3" and values["cgroup"] == cgroup_name("t 1", 1)
        assert int(values["cpu_user_us"]) + int(values["cpu_system_us"]) == int(values["cpu_us"])
        assert ("memory" in cgroups.readings()) == (values["memory_bytes"] != "")
    finally:
        burner.kill()
        burner.wait()
    task.remove()
    assert sampler.rows(4) == []


def test_the_collector_reads_no_cgroup_a_worker_s_file_points_elsewhere(tmp_path):
    folder = tmp_path / "cg1"
    folder.mkdir()
    ours = f"tracekit/cg1/{node_folder_name('n1', folder)}"
    fake = tmp_path / "home" / ours  # a folder of the right name outside any cgroup hierarchy, with a counter
    fake.mkdir(parents=True)
    (fake / "cpuacct.usage").write_text("1\n")
    for folders in ({"cpuacct": "/sys/fs/cgroup/cpuacct"}, {"cpuacct": f"/x/{ours}/../../../"},
                    {"cpuacct": f"/sys/fs/cgroup/cpuacct/tracekit/other-run/{node_folder_name('n1', folder)}"},
                    {"cpuacct": str(fake)}, {"cpuacct": "/sys/fs/cgroup/cpuacct/tracekit/cg1/n1.00000000"}):  # fmt: skip
        (folder / "task_cgroups.json").write_text(json.dumps({"available": True, "version": 1, "folders": folders}))
        sampler = TaskCgroupSampler(folder, "cg1", "n1")
        assert sampler.rows(1) == [] and "names no task cgroups of run cg1 and node n1" in sampler.why_not


def test_what_dead_workers_left_is_removed_once_stale_and_a_live_worker_makes_its_folder_again(tmp_path, cgroups):
    dead = TaskCgroups.detect("cg-dead", "n1", tmp_path / "dead", version=cgroups.version)
    left = dead.task("t-1")
    left.make()  # its worker was killed right after: empty, never removed
    live = cgroups.task("t-2")
    assert not set(map(Path, remove_stale())) & set(left.dirs.values())  # too young: a live worker's, maybe
    for folder in left.dirs.values():  # 20 minutes old now, and its node's and run's folders (tests run side
        for old in (folder, folder.parent, folder.parent.parent):  # by side: no younger one goes)
            os.utime(old, (time.time() - 1200, time.time() - 1200))
    assert set(map(Path, remove_stale())) >= set(left.dirs.values())
    for folder in left.dirs.values():  # that changed its node's folder: gone at a sweep 10 minutes later
        for old in (folder.parent, folder.parent.parent):
            os.utime(old, (time.time() - 1200, time.time() - 1200))
    remove_stale()
    assert not any(folder.exists() for folder in dead.dirs.values())  # its node folders too (its run's, later)
    # A live worker's node folder, idle that long, goes too: its next task makes it again.
    for folder in live.dirs.values():
        os.utime(folder.parent, (time.time() - 1200, time.time() - 1200))
    remove_stale()
    assert not any(folder.parent.exists() for folder in live.dirs.values()) and cgroups.leftovers() == []
    live.make()
    event = run(tmp_path, ["sh", "-c", MANY], cgroups)
    assert event["cgroup_cpu_ms"] > 0 and "cgroup_error" not in event
    live.remove()


def test_a_task_s_folder_is_the_one_named_whatever_cdpath_or_a_dash(tmp_path, cgroups, monkeypatch):
    (tmp_path / "-").mkdir()
    (tmp_path / "elsewhere" / "-").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "pwd.txt"
    event = run(tmp_path, ["sh", "-c", 'pwd -P > "$1"; echo "${OLDPWD-unset}" >> "$1"', "sh", str(out)], cgroups,
                cwd="-", env={"CDPATH": str(tmp_path / "elsewhere")})  # fmt: skip
    assert event["status"] == 0 and out.read_text().splitlines() == [str(tmp_path / "-"), "unset"]


def test_a_stop_ends_what_a_killed_worker_s_task_left_in_its_cgroup(tmp_path, cgroups):
    """A worker SIGKILLed mid-task leaves its task running in its cgroup: `tracekit worker --stop` ends it."""
    folder = tmp_path / "logs" / "cg1"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "task_cgroups.json", {"node": "n1", "run_id": "cg1", **cgroups.describe()})
    task = cgroups.task(cgroup_name("t-9", 1))
    task.make()
    orphan = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        for cgroup in task.dirs.values():  # where the killed worker's task was born
            (cgroup / "cgroup.procs").write_text(str(orphan.pid))
        stopped = subprocess.run(tracekit_cmd("worker", "--stop", "--run-id", "cg1", "--logs-dir", str(tmp_path / "logs"),
                                              "--json"), capture_output=True, text=True, timeout=60)  # fmt: skip
        answer = json.loads(stopped.stdout)
        assert stopped.returncode == 0 and answer["changed"] is True, stopped.stderr
        assert "was not running; ended 1 processes its tasks left in their cgroups" in answer["message"]
        assert orphan.wait(timeout=10) == -9 and not any(f.exists() for f in task.dirs.values())
    finally:
        orphan.kill()
        orphan.wait()


def test_an_idle_task_cgroup_costs_its_cpu_and_memory_reads_and_reads_what_read_counters_reads(tmp_path, cgroups, monkeypatch):
    task = cgroups.task(cgroup_name("idle", 1))
    task.make()
    sleeper = subprocess.Popen(["sleep", "60"])
    for folder in task.dirs.values():
        (folder / "cgroup.procs").write_text(str(sleeper.pid))
    files = taskcgroup.CounterFiles(cgroups.version, task.dirs)
    reads = []
    real_pread = os.pread
    try:
        def settled() -> bool:  # started up and asleep: two reads a moment apart are the same
            before = files.read()
            time.sleep(0.05)
            return files.read() is before

        wait_until(settled, what="the sleeper settled")
        first = files.read()
        assert first == taskcgroup.read_counters(cgroups.version, task.dirs)
        assert first["pids"] == (1 if "pids" in cgroups.readings() else None)
        monkeypatch.setattr(taskcgroup.os, "pread", lambda fd, size, offset: reads.append(fd) or real_pread(fd, size, offset))
        assert files.read() is first
        # CPU and memory (and v2's io.stat: write-back charges it while the processes sleep), where there
        read_each_tick = {1: ("cpuacct.usage", "memory.usage_in_bytes"), 2: ("cpu.stat", "memory.current", "io.stat")}
        assert len(reads) == sum(1 for name in read_each_tick[cgroups.version]
                                 if any((folder / name).exists() for folder in task.dirs.values()))  # fmt: skip
        reads.clear()
        monkeypatch.setattr(taskcgroup.CounterFiles, "REFRESH_S", 0.0)  # every file again, at least this often
        assert files.read() == first
        assert len(reads) == sum(1 for _h, name in taskcgroup.COUNTER_FILES[cgroups.version]
                                 if any((folder / name).exists() for folder in task.dirs.values()))  # fmt: skip
        sleeper.kill()
        sleeper.wait()
        # Its process ended: the CPU moved (the exit ran there), everything is read again.
        after = files.read()
        assert after is not first and after["cpu_us"] > first["cpu_us"]
        assert after == taskcgroup.read_counters(cgroups.version, task.dirs)
        assert after["pids"] == (0 if "pids" in cgroups.readings() else None)
    finally:
        files.close()
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    task.remove()
