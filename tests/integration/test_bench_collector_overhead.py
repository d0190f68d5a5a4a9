"""bench/collector_overhead.py runs: every sampler's row, the idle and task-cgroup scenarios (no timing asserted)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tracekit.taskcgroup import TaskCgroups

BENCH = Path(__file__).resolve().parents[2] / "bench" / "collector_overhead.py"


def table_rows(out: str) -> dict[tuple[str, str, str], list[str]]:
    """The main table: (sampler, processes, rate) -> its cells."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 14 and cells[0] != "sampler":
            rows[(cells[0], cells[1], cells[2])] = cells
    return rows


def leftovers(name: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_the_quick_bench_runs_every_sampler_on_the_same_processes(tmp_path):
    # Output to files: a pipe would keep the test waiting on any process the bench left behind.
    with open(tmp_path / "out.md", "w") as out, open(tmp_path / "err.txt", "w") as err:
        argv = [sys.executable, str(BENCH), "--quick", "--duration", "1", "--wait-quiet", "0", "--keep", str(tmp_path / "raw")]
        bench = subprocess.Popen(argv, stdout=out, stderr=err)
        try:
            code = bench.wait(timeout=300)
        finally:
            if bench.poll() is None:  # Ctrl-C: it kills and reaps its children, removes its task cgroups
                bench.send_signal(signal.SIGINT)
                bench.wait(timeout=60)
    text = (tmp_path / "out.md").read_text()
    assert code == 0, text + (tmp_path / "err.txt").read_text()
    rows = table_rows(text)
    samplers = ["tracekit", "tracekit + 10 task cgroups", "naive"]
    if shutil.which("pidstat"):
        samplers += ["pidstat -C", "pidstat -p ALL"]
        assert ("pidstat -C", "50", "10 Hz") not in rows  # whole seconds only, said once
        assert "it cannot do 10 Hz" in text
    else:
        assert "`apt-get install -y sysstat`" in text and "pidstat -C" not in rows
    for sampler in samplers:
        # tracked: every one of the 50 children, none of the idle ones
        assert rows[(sampler, "50", "1 Hz")][4] == "50", rows[(sampler, "50", "1 Hz")]
        if sampler != "tracekit + 10 task cgroups":
            assert rows[(sampler, "50 + 1,000 idle", "1 Hz")][4] == "50"
    assert rows[("tracekit", "50", "10 Hz")][4] == "50" and rows[("naive", "50", "10 Hz")][4] == "50"
    assert "(10 task cgroups sampled)" in text
    assert "## 1,000 unrelated idle processes" in text and "## Targets" in text
    for target in ("host + 50 processes at 1 Hz", "unrelated idle processes, 50 followed", "10 task cgroups at 1 Hz"):
        assert target in text
    # Every process and task cgroup the bench made is gone.
    assert "WARNING" not in text
    assert leftovers(f"tkbench-{bench.pid}") == [] and leftovers(f"tkbidle-{bench.pid}") == []
    task_cgroups = TaskCgroups.detect("bench", "bench", tmp_path / "raw" / "50" / "tracekit-cgroups-1000" / "bench")
    assert task_cgroups.dirs and task_cgroups.leftovers() == []
    task_cgroups.close()
