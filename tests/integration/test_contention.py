"""Contention said: a real collector, a real task in its cgroup, and a CPU burner of no run beside it.

The machine is shared with other test workers, so the quiet run asserts only that contention is
computed; the burner's run asserts its relative figures (two busy loops on two CPUs: the CPUs
saturated, other work holding more than a core while the task ran).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tracekit_cmd, wait_until
from tracekit.invocation import Invocation, run_invocation
from tracekit.jsonl import write_json
from tracekit.taskcgroup import TaskCgroups
from tracekit.trace import cctf
from tracekit.trace.parse import parse_run

RUN = "contended"
# Busy for the seconds given, by the wall clock: it keeps trying whatever CPU it gets.
BURN = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass\n"


@pytest.fixture
def cgroups(tmp_path):
    found = TaskCgroups.detect(RUN, "n1", tmp_path / "logs" / RUN)
    if found.unavailable:
        pytest.fail(f"this kernel has cgroup v1 and v2 hierarchies (tests/cgroupfs.py mounts them): {found.unavailable}")
    yield found
    found.clear_leftovers()
    found.close()


def traced_run(tmp_path: Path, cgroups: TaskCgroups, burners: int) -> dict:
    """A collector (host samples every 100 ms), ``burners`` unmarked busy loops, one 3 s task in its cgroup
    meanwhile; the run folder parsed. The audit."""
    folder = tmp_path / "logs" / RUN
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "task_cgroups.json", {"node": "n1", "run_id": RUN, **cgroups.describe()})  # as a worker does
    collector = subprocess.Popen(tracekit_cmd("collect", "run", "--run-id", RUN, "--node-id", "n1", "--logs-dir",
                                              str(tmp_path / "logs"), "--interval-ms", "100", "--duration", "60"))  # fmt: skip
    started = []
    try:
        wait_until(lambda: (folder / "host.csv").exists() and len((folder / "host.csv").read_text().splitlines()) > 2,
                   timeout_s=30, what="the collector's first host samples")  # fmt: skip
        environment = {key: value for key, value in os.environ.items() if not key.startswith("TRACEKIT_")}
        started = [subprocess.Popen([sys.executable, "-c", BURN, "60"], env=environment) for _ in range(burners)]
        task = Invocation(argv=[sys.executable, "-c", BURN, "3"], run_id=RUN, logs_dir=tmp_path / "logs", module="cmd",
                          node_id="n1", task_id="t1")  # fmt: skip
        event = run_invocation(task, cgroups=cgroups)
        assert event["status"] == 0, event
    finally:
        for burner in started:
            burner.kill()
            burner.wait()
        collector.terminate()
        collector.wait(timeout=30)
    return parse_run(folder).audit


def test_a_task_beside_a_cpu_burner_of_no_run_is_said_to_share_saturated_cpus(tmp_path, cgroups):
    audit = traced_run(tmp_path, cgroups, burners=2)  # one busy loop per CPU of this 2-CPU machine
    node = audit["contention"]["nodes"]["n1"]
    assert node["source"] == "task_cgroups" and node["task_time_s"] > 0
    assert node["contended_task_share"] > 0 and node["saturated_task_share"] >= node["contended_task_share"]
    assert node["other_cores_mean"] >= 1.0  # the two burners' share of two CPUs, beside the task's
    assert node["note"].startswith("n1: tasks shared saturated CPUs with other work for ")
    assert node["note"] in audit["notes"]
    rows = cctf.read_table(tmp_path / "logs" / RUN / "cctf", "contention").to_pylist()
    while_the_task_ran = [r for r in rows if r["task_ms"] > 0]
    assert while_the_task_ran and max(r["other_cores"] for r in while_the_task_ran) >= 1.0
    assert all(r["run_cores"] <= r["cpus"] for r in rows)


def test_a_task_without_a_burner_has_its_contention_computed(tmp_path, cgroups):
    audit = traced_run(tmp_path, cgroups, burners=0)
    node = audit["contention"]["nodes"]["n1"]
    # Other test workers share this machine: whatever they did is other work; the figures are there.
    assert node["source"] == "task_cgroups" and node["intervals"] > 0 and node["task_time_s"] > 0
    assert node["contended_task_share"] is not None and node["other_cores_mean"] is not None
    rows = cctf.read_table(tmp_path / "logs" / RUN / "cctf", "contention").to_pylist()
    assert sum(r["run_cores"] * r["dt_ms"] for r in rows) > 0  # the task's cgroup CPU is in it
    summary = json.loads((tmp_path / "logs" / RUN / "cctf" / "audit.json").read_text())
    assert summary["contention"] == audit["contention"]
