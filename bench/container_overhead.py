"""What running a task in a container costs: the same no-op task on the host and in a podman container.

Side by side in one run, N times each (interleaved, so that drift in the machine's load touches both):
``/bin/true`` run as a worker runs a task (tracekit.invocation in a cgroup of its own, tracekit.taskcgroup),
on the host and as ``podman --runtime runc run --rm --rootfs /:O ...`` (tracekit.container). Reported: the
task cgroup's CPU time (exact: it holds the engine's client, its monitor conmon, runc and the container) and
the wall time from spawn to the event, median and range, and the ratio container / host.

    .venv/bin/python bench/container_overhead.py            # 20 tasks each, ~10 s
    .venv/bin/python bench/container_overhead.py --tasks 5  # smoke run

Needs root, podman and runc (make test installs them). Prints Markdown; exits 0 whatever the numbers are.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracekit.container import ContainerSpec  # noqa: E402
from tracekit.invocation import Invocation, run_invocation  # noqa: E402
from tracekit.taskcgroup import TaskCgroups  # noqa: E402

KINDS = {"host": None, "podman, rootfs / (runc)": ContainerSpec("podman", rootfs="/", runtime="runc")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20, help="tasks of each kind (default 20)")
    args = parser.parse_args()
    if shutil.which("podman") is None or shutil.which("runc") is None:
        print("podman and runc are needed: apt-get install podman runc")
        return 0
    logs = Path(tempfile.mkdtemp(prefix="tk-container-bench-"))
    run_id = f"cbench{os.getpid()}"
    cgroups = TaskCgroups.detect(run_id, "n1", logs / run_id)
    if cgroups.unavailable:
        print(f"no task cgroups here ({cgroups.unavailable}): the CPU figure needs them")
        return 0
    figures: dict[str, dict[str, list[float]]] = {kind: {"cpu_ms": [], "wall_ms": []} for kind in KINDS}
    try:
        for index in range(args.tasks):
            for kind, spec in KINDS.items():
                started = time.perf_counter()
                event = run_invocation(Invocation(argv=["/bin/true"], run_id=run_id, logs_dir=logs, module="bench",
                                                  node_id="n1", task_id=f"t{index}-{len(figures[kind]['cpu_ms'])}-{kind[:4]}",
                                                  container=spec, own_group=True), cgroups=cgroups)  # fmt: skip
                figures[kind]["wall_ms"].append((time.perf_counter() - started) * 1000)
                figures[kind]["cpu_ms"].append(event["cgroup_cpu_ms"])
                if event["status"] != 0:
                    print(f"a {kind} task failed: {event.get('error')}: {event.get('stderr_tail', '')[-300:]}")
                    return 0
    finally:
        cgroups.clear_leftovers()
        cgroups.close()
        shutil.rmtree(logs, ignore_errors=True)
    print(f"A no-op task (/bin/true), {args.tasks} of each kind, interleaved; load average {os.getloadavg()[0]:.2f}\n")
    print("| where | task cgroup CPU, median (min-max) | wall time, median (min-max) |")
    print("|---|---|---|")
    for kind, values in figures.items():
        cpu, wall = values["cpu_ms"], values["wall_ms"]
        print(f"| {kind} | {statistics.median(cpu):.1f} ms ({min(cpu):.1f}-{max(cpu):.1f}) "
              f"| {statistics.median(wall):.0f} ms ({min(wall):.0f}-{max(wall):.0f}) |")  # fmt: skip
    host, boxed = (statistics.median(figures[k]["cpu_ms"]) for k in KINDS)
    host_wall, boxed_wall = (statistics.median(figures[k]["wall_ms"]) for k in KINDS)
    print(f"\ncontainer - host: {boxed - host:.0f} ms of CPU and {boxed_wall - host_wall:.0f} ms of wall time per task")
    return 0


if __name__ == "__main__":
    sys.exit(main())
