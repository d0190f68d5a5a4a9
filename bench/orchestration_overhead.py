"""Orchestration overhead: tracekit-run's six Ansible phases vs. the same playbooks by plain ansible-playbook.

For each inventory kind, on this machine, with experiments/smoke.yaml:

* local: 3 nodes with the local connection (like inventory/local.yml, node
  roots and the clips in the bench folder, Redis on a free port);
* ssh: 3 real sshd nodes on 127.0.0.1 ports (tests/sshd.py), same layout.

in this order:

1. **first run**: ``run_experiment`` on fresh node roots (creates the node
   venvs, installs Tracekit, generates the clips); reported apart, since
   every later run reuses them.
2. **tracekit-run**: ``run_experiment`` again; per-phase durations from the
   run folder's status.json (one ansible-runner call per phase).
3. **ansible-playbook**: the measured run's ``env/extravars`` with a new
   run id, run folder and secret file, then ``ansible-playbook -i INV
   playbooks/PHASE.yml -e @extravars`` once per phase, in
   tracekit-run's order, each call timed from outside; same ansible.cfg,
   roles path and PATH as tracekit-run gives ansible-runner.
4. **one call** (unless --no-whole-playbook): ``playbooks/experiment.yml``,
   every phase in one ansible-playbook process (total only).

With --repeat N, steps 2 and 3 run N times each, alternating which goes
first, and the tables show per-phase medians.

overhead = the sum of every phase but ``run`` (the dispatch). Targets
(PASS/FAIL after the tables, exit code 0 whatever they say): overhead
<= 30 s local and <= 45 s over SSH, and tracekit-run's overhead within 10 %
of plain ansible-playbook's. Where the time goes comes from the measured
run's ansible-runner artifacts (job_events/*.json): per phase the time
before the first task (ansible-playbook start-up, inventory and playbook
loading), in tasks and after the last one, and the costliest tasks.

    PYTHONPATH=$PWD .venv/bin/python bench/orchestration_overhead.py             # ~6-10 min
    PYTHONPATH=$PWD .venv/bin/python bench/orchestration_overhead.py --only ssh
    PYTHONPATH=$PWD .venv/bin/python bench/orchestration_overhead.py --only local --repeat 3
    PYTHONPATH=$PWD .venv/bin/python bench/orchestration_overhead.py --keep /tmp/tko

Prints Markdown. Every sshd, collector, worker and redis-server it starts
is ended at the end (also on Ctrl-C): processes whose command line names
the bench folder, and the redis-server on the bench's port.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.sshd, and this checkout's tracekit before an installed one
# Children (the parse phase's `python -m tracekit`) run the same checkout as this script.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))

from dispatch_throughput import interrupt_on_sigterm, load, machine  # noqa: E402

from tests.inventories import local_inventory  # noqa: E402
from tests.sshd import SshNodes, free_port, start_sshd_nodes  # noqa: E402
from tracekit.experiment.progress import Progress  # noqa: E402
from tracekit.experiment.render import PHASES  # noqa: E402
from tracekit.experiment.runner import run_experiment  # noqa: E402

SMOKE = REPO / "experiments" / "smoke.yaml"
NODES = ("cloud0", "cloud1", "cloud2")
KINDS = ("local", "ssh")
TARGET_OVERHEAD_S = {"local": 30.0, "ssh": 45.0}
TARGET_RATIO = 1.10
DISPATCH_PHASE = "run"
VERDICT = {True: "PASS", False: "FAIL"}
ARG_SPEC_TASK = "Validating arguments against arg spec"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@dataclass
class Timing:
    """One run of the smoke experiment: seconds per phase, as seen by whoever ran it."""

    label: str
    run_dir: Path
    state: str
    phases_s: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0  # the whole call, including what happens outside the phases

    @property
    def overhead_s(self) -> float:
        return sum(s for phase, s in self.phases_s.items() if phase != DISPATCH_PHASE)

    @staticmethod
    def median(runs: list[Timing]) -> Timing:
        """Per phase (and wall) the median over ``runs``; the run folder is the last run's."""
        phases = {p: statistics.median(r.phases_s[p] for r in runs) for p in runs[0].phases_s}
        return Timing(runs[0].label, runs[-1].run_dir, "succeeded", phases, statistics.median(r.wall_s for r in runs))


# -- sites -----------------------------------------------------------------------------


def ssh_inventory(nodes: SshNodes, folder: Path, redis_port: int) -> Path:
    """The sshd nodes' inventory with Redis on ``redis_port`` and the clips under ``folder``."""
    path = nodes.inventory(folder / "inventory.yml")
    document = yaml.safe_load(path.read_text())
    document["all"]["children"]["controller"]["hosts"]["cloud0"].update(
        tracekit_redis_port=redis_port, tracekit_redis_bind="127.0.0.1")  # fmt: skip
    document["all"].setdefault("vars", {}).update(tracekit_inputs_root=str(folder / "inputs"), tracekit_inputs_shared=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@contextlib.contextmanager
def site(kind: str, folder: Path) -> Iterator[tuple[Path, int]]:
    """(inventory, redis port) for ``kind``; on exit nothing started below ``folder`` is left running."""
    folder.mkdir(parents=True)
    port = free_port()
    nodes = None
    try:
        if kind == "ssh":
            nodes = start_sshd_nodes(folder, NODES)
            yield ssh_inventory(nodes, folder, port), port
        else:
            yield local_inventory(folder, port), port
    finally:
        if nodes is not None:
            nodes.close()
        left = kill_processes_under(folder, port)
        if left:
            print(f"\n(killed {len(left)} process(es) left by the {kind} runs: {'; '.join(left)})\n")


def kill_processes_under(folder: Path, redis_port: int) -> list[str]:
    """SIGKILL every process whose command line names ``folder`` or is redis-server on ``redis_port``."""
    killed = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.info["pid"] == os.getpid():
            continue
        line = " ".join(proc.info["cmdline"] or [])
        if str(folder) in line or ("redis-server" in line and f":{redis_port}" in line):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
                killed.append(f"{proc.info['pid']} {line[:80]}")
    return killed


# -- the three ways of running it ---------------------------------------------------------


def tracekit_run(label: str, inventory: Path, logs: Path, run_id: str) -> Timing:
    """``run_experiment`` through the API; phase durations from status.json."""
    with (logs.parent / f"{run_id}.progress.log").open("w") as stream:
        started = time.monotonic()
        result = run_experiment(SMOKE, inventory=inventory, run_id=run_id, logs_dir=logs,
                                progress=Progress(PHASES, stream))  # fmt: skip
        wall = time.monotonic() - started
    phases = {p: r["duration_s"] for p, r in result.status.get("phases", {}).items() if r.get("duration_s") is not None}
    if result.state != "succeeded":
        raise SystemExit(f"{label}: tracekit-run {result.state}:\n" + "\n".join(result.summary))
    return Timing(label, result.run_dir, result.state, phases, wall)


def plain_extravars(template_run: Path, logs: Path, run_id: str) -> tuple[Path, Path]:
    """The extravars of ``template_run`` for a new run ``run_id``: (extravars file, its fresh secret file)."""
    variables = json.loads((template_run / "ansible" / "env" / "extravars").read_text())
    run_dir = logs / run_id
    run_dir.mkdir(parents=True)
    secret = logs / ".secrets" / f"{run_id}.redis"
    secret.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))
    variables.update(tracekit_run_id=run_id, tracekit_run_dir=str(run_dir), tracekit_run_secret_file=str(secret))
    path = run_dir / "extravars.json"
    path.write_text(json.dumps(variables, indent=2))
    return path, secret


def ansible_playbook(inventory: Path, extravars: Path, phase: str | None, log: Path) -> tuple[int, float]:
    """One plain ansible-playbook call with the environment tracekit-run gives ansible-runner: (rc, seconds).

    A phase runs its own playbook, as tracekit-run does; None runs experiment.yml (every phase).
    """
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_NOCOLOR": "1", "PATH": f"{ANSIBLE_PLAYBOOK.parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    playbook = f"{phase}.yml" if phase else "experiment.yml"
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), playbook, "-e", f"@{extravars}"]
    with log.open("w") as out:
        started = time.monotonic()
        rc = subprocess.run(argv, cwd=REPO / "playbooks", env=env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.STDOUT).returncode  # fmt: skip
        return rc, time.monotonic() - started


def plain_run(label: str, inventory: Path, template_run: Path, logs: Path, run_id: str, by_phase: bool) -> Timing:
    """The same playbooks by ansible-playbook: one call per phase (``by_phase``) or one call in all."""
    started = time.monotonic()
    extravars, secret = plain_extravars(template_run, logs, run_id)
    run_dir = extravars.parent
    timing = Timing(label, run_dir, "succeeded")
    try:
        for phase in PHASES if by_phase else ("all",):
            failed = timing.state != "succeeded"
            if failed and phase not in ("stop", "fetch"):
                continue  # like tracekit-run: after a failure only stop and fetch
            rc, seconds = ansible_playbook(inventory, extravars, phase if by_phase else None,
                                           run_dir / f"ansible-playbook-{phase}.log")  # fmt: skip
            timing.phases_s[phase] = seconds
            if rc != 0 and not failed:
                timing.state = f"failed in {phase} (rc {rc}, see {run_dir}/ansible-playbook-{phase}.log)"
    finally:
        secret.unlink(missing_ok=True)
    timing.wall_s = time.monotonic() - started
    if timing.state == "succeeded" and not (run_dir / "opendc" / "tasks.parquet").is_file():
        timing.state = f"no opendc/tasks.parquet in {run_dir}"
    if timing.state != "succeeded":
        raise SystemExit(f"{label}: ansible-playbook {timing.state}")
    return timing


# -- where the time goes ------------------------------------------------------------------


def _utc(stamp: str) -> dt.datetime:
    """ansible-runner's event times are naive UTC; status.json's carry their offset."""
    value = dt.datetime.fromisoformat(stamp)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


@dataclass
class TaskCost:
    phase: str
    task: str
    wall_s: float  # task start -> last host's result
    hosts: int


@dataclass
class PhaseCost:
    phase: str
    duration_s: float
    before_first_task_s: float  # phase start -> first task starts (ansible-playbook start-up, loading)
    in_tasks_s: float
    after_last_task_s: float  # last result -> phase end (stats, ansible-runner's wrap-up)
    tasks: list[TaskCost]
    facts_tasks: int  # setup/gather_facts tasks seen


def phase_costs(run_dir: Path) -> list[PhaseCost]:
    """Per phase of a tracekit-run run folder, from status.json and ansible-runner's job_events."""
    status = json.loads((run_dir / "status.json").read_text())
    costs = []
    for artifacts in sorted((run_dir / "ansible" / "artifacts").iterdir()):
        phase = artifacts.name.split("-", 1)[1]
        record = status["phases"][phase]
        events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
        starts: dict[str, tuple[dt.datetime, str]] = {}
        ends: dict[str, dt.datetime] = {}
        hosts: dict[str, set[str]] = {}
        facts = 0
        for event in events:
            data = event.get("event_data", {})
            uuid = data.get("task_uuid")
            if event["event"] == "playbook_on_task_start":
                starts[uuid] = (_utc(event["created"]), data.get("task", "?"))
                facts += data.get("task_action", "") in ("setup", "ansible.builtin.setup", "gather_facts")
            elif event["event"].startswith("runner_on_") and data.get("end"):
                ends[uuid] = max(ends.get(uuid, _utc(data["end"])), _utc(data["end"]))
                hosts.setdefault(uuid, set()).add(data.get("host", "?"))
        tasks = [TaskCost(phase, name, (ends.get(uuid, begin) - begin).total_seconds(), len(hosts.get(uuid, ())))
                 for uuid, (begin, name) in starts.items()]  # fmt: skip
        phase_start, phase_end = _utc(record["start"]), _utc(record["end"])
        first = min((begin for begin, _ in starts.values()), default=phase_end)
        last = max(ends.values(), default=first)
        costs.append(PhaseCost(phase, record["duration_s"], (first - phase_start).total_seconds(),
                               sum(t.wall_s for t in tasks), (phase_end - last).total_seconds(),
                               sorted(tasks, key=lambda t: -t.wall_s), facts))  # fmt: skip
    return costs


def print_costs(kind: str, run_dir: Path, top: int) -> None:
    costs = phase_costs(run_dir)
    print(f"\nWhere tracekit-run's time goes ({kind}, from {run_dir.name}/ansible/artifacts/*/job_events):\n")
    print("| phase | phase s | before the first task s | in tasks s | after the last task s | tasks | slowest task |")
    print("|---|---|---|---|---|---|---|")
    for c in costs:
        slowest = f"{c.tasks[0].task} ({c.tasks[0].wall_s:.1f} s)" if c.tasks else ""
        print(f"| {c.phase} | {c.duration_s:.1f} | {c.before_first_task_s:.1f} | {c.in_tasks_s:.1f} | "
              f"{c.after_last_task_s:.1f} | {len(c.tasks)} | {slowest} |")  # fmt: skip
    overhead = [c for c in costs if c.phase != DISPATCH_PHASE]
    before = sum(c.before_first_task_s + c.after_last_task_s for c in overhead)
    print(f"\nOverhead phases: {before:.1f} s around the tasks (start-up and wrap-up of "
          f"{len(overhead)} ansible-playbook calls), {sum(c.in_tasks_s for c in overhead):.1f} s in "
          f"{sum(len(c.tasks) for c in overhead)} tasks; fact-gathering tasks: {sum(c.facts_tasks for c in costs)}.")  # fmt: skip
    checks = [t for c in costs for t in c.tasks if t.task.startswith(ARG_SPEC_TASK)]
    print(f"Role argument checks (tagged 'always' by Ansible, so they run in every phase): {len(checks)} tasks, "
          f"{sum(t.wall_s for t in checks):.1f} s.")  # fmt: skip
    tasks = sorted((t for c in overhead for t in c.tasks), key=lambda t: -t.wall_s)[:top]
    print(f"\nCostliest tasks outside the dispatch (top {len(tasks)}):\n")
    print("| phase | task | wall s | hosts |\n|---|---|---|---|")
    for t in tasks:
        print(f"| {t.phase} | {t.task} | {t.wall_s:.2f} | {t.hosts} |")


# -- report ---------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def print_table(kind: str, first: Timing, measured: Timing, plain: Timing, whole: Timing | None, repeat: int) -> None:
    how = "one run each" if repeat == 1 else f"medians of {repeat} runs each, alternating"
    print(f"\n## {kind}: {len(NODES)} nodes ({'local connection' if kind == 'local' else 'SSH on 127.0.0.1'}; {how})\n")
    header = "| phase | first run s | tracekit-run s | ansible-playbook s | tracekit − plain s |"
    rule = "|---|---|---|---|---|"
    if whole is not None:
        header, rule = header + " ansible-playbook, one call s |", rule + "---|"
    print(header + "\n" + rule)
    tail = " |" if whole is not None else ""
    for phase in PHASES:
        t, p = measured.phases_s.get(phase), plain.phases_s.get(phase)
        diff = f"{t - p:+.1f}" if t is not None and p is not None else ""
        print(f"| {phase} | {_s(first.phases_s.get(phase))} | {_s(t)} | {_s(p)} | {diff} |{tail}")
    rows = [
        ("**overhead** (all but run)", lambda x: x.overhead_s, None),
        ("all phases", lambda x: sum(x.phases_s.values()), lambda x: sum(x.phases_s.values())),
        ("wall (incl. outside the phases)", lambda x: x.wall_s, lambda x: x.wall_s),
    ]
    for name, value, whole_value in rows:
        line = (f"| {name} | {value(first):.1f} | {value(measured):.1f} | {value(plain):.1f} | "
                f"{value(measured) - value(plain):+.1f} |")  # fmt: skip
        if whole is not None:
            line += f" {whole_value(whole):.1f} |" if whole_value else " |"
        print(line)
    print(f"\nratio tracekit-run / ansible-playbook, overhead: {measured.overhead_s / plain.overhead_s:.2f}; "
          f"first run: wheelhouse install, venvs and clips, not counted in the targets.")  # fmt: skip


def verdicts(kind: str, measured: Timing, plain: Timing) -> list[str]:
    target = TARGET_OVERHEAD_S[kind]
    ratio = measured.overhead_s / plain.overhead_s
    return [
        f"{VERDICT[measured.overhead_s <= target]}  {kind}: overhead {measured.overhead_s:.1f} s <= {target:g} s",
        f"{VERDICT[ratio <= TARGET_RATIO]}  {kind}: overhead {ratio:.2f}x plain ansible-playbook "
        f"({measured.overhead_s:.1f} s vs {plain.overhead_s:.1f} s) <= {TARGET_RATIO:.2f}x",
    ]


def bench_kind(kind: str, folder: Path, whole_playbook: bool, top: int, repeat: int) -> list[str]:
    with site(kind, folder) as (inventory, _port):
        logs = folder / "logs"
        print(f"{kind}: first run ({load()})", file=sys.stderr)
        first = tracekit_run("first run", inventory, logs, f"{kind}-first")
        measured_runs: list[Timing] = []
        plain_runs: list[Timing] = []
        for n in range(1, repeat + 1):
            # Alternate which goes first, so that a load that rises or falls over time favours neither.
            for which in ("tracekit", "plain") if n % 2 else ("plain", "tracekit"):
                print(f"{kind}: {which} {n}/{repeat} ({load()})", file=sys.stderr)
                if which == "tracekit":
                    measured_runs.append(tracekit_run("tracekit-run", inventory, logs, f"{kind}-tracekit-{n}"))
                else:  # the extravars of any tracekit-run run of this inventory: only ids and paths change
                    template = (measured_runs or [first])[-1].run_dir
                    plain_runs.append(plain_run("ansible-playbook", inventory, template, logs, f"{kind}-plain-{n}",
                                                by_phase=True))  # fmt: skip
        measured, plain = Timing.median(measured_runs), Timing.median(plain_runs)
        whole = None
        if whole_playbook:
            print(f"{kind}: ansible-playbook, one call ({load()})", file=sys.stderr)
            whole = plain_run("one call", inventory, first.run_dir, logs, f"{kind}-plain-all", by_phase=False)
        print_table(kind, first, measured, plain, whole, repeat)
        print_costs(kind, measured.run_dir, top)
        return verdicts(kind, measured, plain)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", choices=KINDS, help="one inventory kind (default: local, then ssh)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the run folders, logs and node roots in DIR")
    parser.add_argument("--no-whole-playbook", action="store_true", help="skip the one-call ansible-playbook run")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="measured tracekit-run and ansible-playbook runs each, alternating; medians (default 1)")
    parser.add_argument("--top", type=int, default=8, help="costliest tasks to list per kind (default 8)")
    args = parser.parse_args(argv)
    interrupt_on_sigterm()
    kinds = (args.only,) if args.only else KINDS
    print(f"# Orchestration overhead: {SMOKE.relative_to(REPO)}, {', '.join(kinds)}\n\n{machine()}\n")
    ansible_version = subprocess.run([str(ANSIBLE_PLAYBOOK), "--version"], capture_output=True, text=True).stdout
    print(f"{ansible_version.splitlines()[0]}; start: {load()}")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        folder_context = contextlib.nullcontext(str(Path(tempfile.mkdtemp(prefix="tko-", dir=args.keep)).resolve()))
    else:
        folder_context = tempfile.TemporaryDirectory(prefix="tkbench-orch-")
    results = []
    with folder_context as name:
        for kind in kinds:
            results += bench_kind(kind, Path(name) / kind, not args.no_whole_playbook, args.top, args.repeat)
        if args.keep:
            print(f"\nkept: {name}")
    print(f"\nend: {load()}\n")
    print("\n".join(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
