"""Ansible's own cost per task on this machine: the floor under a run's orchestration.

Through ansible-runner, as tracekit-run calls it (this checkout's ansible.cfg: pipelining, no facts), on
local hosts that are all this machine (as the local inventory's nodes are), every task a ``command``
that runs /bin/true:

1. **per task**: 20 tasks on 1 host, then on 3 hosts: the wall time and the CPU (the ansible-playbook
   process and its children: forks, modules) per task, beyond a call of 1 task;
2. **a run at one task per node per phase**: the fewest tasks a run of 3 nodes could have if each phase
   were one node command (start, stop, pack, fetch of one archive, its check, the local parse), each a
   /bin/true: what Ansible alone would cost such a run, before any of the run's own work.

    PYTHONPATH=$PWD .venv/bin/python bench/ansible_floor.py        # ~1 min

Prints Markdown; exits 0. Starts nothing that outlives it.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dispatch_throughput import load, machine  # noqa: E402

TRUE = {"ansible.builtin.command": {"argv": ["/bin/true"]}, "changed_when": False}


def _inventory(folder: Path, hosts: int) -> Path:
    path = folder / f"inventory-{hosts}.yml"
    names = {f"node{i}": {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"} for i in range(hosts)}
    path.write_text(yaml.safe_dump({"all": {"hosts": names}}))
    return path


def _play(name: str, hosts: str, tasks: int, **extra: object) -> dict:
    return {"name": name, "hosts": hosts, "gather_facts": False, **extra,
            "tasks": [{"name": f"{name} {i}", **TRUE} for i in range(tasks)]}  # fmt: skip


def _call(folder: Path, inventory: Path, plays: list[dict]) -> tuple[float, float]:
    """One ansible-runner call of ``plays``: (wall s, CPU s of the call's processes)."""
    import ansible_runner

    project = folder / "project"
    project.mkdir(exist_ok=True)
    (project / "play.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = ansible_runner.run(private_data_dir=str(folder), playbook="play.yml", inventory=str(inventory), quiet=True,
                                envvars={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),  # ansible-playbook: this venv's
                                         "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"})  # fmt: skip
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.rc != 0:
        raise SystemExit(f"ansible-runner: rc {result.rc}: {result.stdout.read()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20, help="tasks of the per-task calls (default 20)")
    args = parser.parse_args()
    print("# Ansible's own cost per task\n")
    print(f"- {machine()}; at start: {load()}")
    with tempfile.TemporaryDirectory(prefix="tk-ansible-floor-") as tmp:
        folder = Path(tmp)
        print(f"- ansible-runner, this checkout's ansible.cfg, local hosts, each task `command: /bin/true`\n")
        print("| hosts | tasks | wall s | CPU s | per task beyond the first: wall s | CPU s |")
        print("|---:|---:|---:|---:|---:|---:|")
        for hosts in (1, 3):
            inventory = _inventory(folder, hosts)
            one = _call(folder, inventory, [_play("one", "all", 1)])
            many = _call(folder, inventory, [_play("many", "all", args.tasks)])
            per = [(m - o) / (args.tasks - 1) for m, o in zip(many, one)]
            print(f"| {hosts} | {args.tasks} | {many[0]:.1f} | {many[1]:.1f} | {per[0]:.2f} | {per[1]:.2f} |")
            if hosts == 1:
                print(f"| {hosts} | 1 | {one[0]:.1f} | {one[1]:.1f} | (a call's start) | |")
        # 3 nodes: a controller and 2 workers; the parse runs here (the controller's machine).
        inventory = folder / "inventory-run.yml"
        local = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}
        inventory.write_text(yaml.safe_dump({"all": {"children": {
            "controller": {"hosts": {"cloud0": local}},
            "workers": {"hosts": {"cloud1": local, "cloud2": local}}}}}))  # fmt: skip
        plays = [_play("start", "controller:workers", 1), _play("stop", "controller:workers", 1),
                 _play("fetch", "controller:workers", 3), _play("parse", "controller", 1)]  # fmt: skip
        wall, cpu = _call(folder, inventory, plays)
        print(f"\nA run of 3 nodes at one task per node per phase (start, stop; pack, fetch, check; parse), "
              f"every task /bin/true: **{wall:.1f} s** wall, {cpu:.1f} s CPU, the call's start included.")
    print(f"\n- at end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
