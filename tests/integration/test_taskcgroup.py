"""Tasks born in cgroups of their own, v1 and v2 (this kernel has both): real processes, real cgroups."""

from __future__ import annotations

import os

import pytest

from tests.helpers import wait_until
from tracekit import taskcgroup
from tracekit.errors import CommandNotFound
from tracekit.invocation import Invocation, run_invocation
from tracekit.taskcgroup import TaskCgroups

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
    assert event["cgroup_cpu_ms"] == pytest.approx(waited_ms, rel=0.01)
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
    wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") and _state(pid) != "Z" for pid in pids), what="the end")


def test_workers_of_two_run_folders_with_one_run_and_node_id_keep_apart(tmp_path, cgroups):
    other = TaskCgroups.detect("cg1", "n1", tmp_path / "elsewhere" / "cg1")
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
    assert event["cgroup_cpu_ms"] == pytest.approx(event["cpu_user_ms"] + event["cpu_system_ms"], rel=0.01)


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


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
