"""Orchestration overhead: tracekit-run's six Ansible phases vs. the same playbooks in one plain ansible-playbook call.

For each inventory kind, on this machine, with experiments/smoke.yaml:

* local: 3 nodes with the local connection (like inventory/local.yml, node
  roots and the clips in the bench folder, Redis on a free port);
* ssh: 3 real sshd nodes on 127.0.0.1 ports (tests/sshd.py), same layout.

in this order:

1. **first run**: ``run_experiment`` on fresh node roots (creates the node
   venvs, installs Tracekit, generates the clips); reported apart, since
   every later run reuses them.
2. **tracekit-run**: ``run_experiment`` again; per-phase durations from the
   run folder's status.json (however many ansible-runner calls it makes).
3. **ansible-playbook**: the measured run's ``env/extravars`` with a new
   run id, run folder and secret file, then one ``ansible-playbook -i INV
   playbooks/experiment.yml -e @extravars`` (every phase in one process;
   same ansible.cfg, roles path and PATH as tracekit-run gives
   ansible-runner, and unbuffered output). Its output is read as it comes: a phase runs from the
   ``PLAY [name]`` banner of its first play (``render.play_phases`` maps play
   names to phases; the first phase from the launch) to the next phase's
   first banner (the last phase to the process's exit), so the phases add
   up to the call. The whole output stays in the plain run's folder
   (``ansible-playbook.log``).

With --repeat N, steps 2 and 3 run N times each, alternating which goes
first, and the tables show per-phase medians.

overhead = the wall time of the whole call but the ``run`` phase (the
dispatch): the other phases and whatever tracekit-run does around them
(wheelhouse check, versions, run folder). Targets
(PASS/FAIL after the tables, exit code 0 whatever they say): overhead
<= 30 s local and <= 45 s over SSH, and tracekit-run's overhead within 10 %
of plain ansible-playbook's. Where the time goes comes from the measured
run's ansible-runner artifacts (every ``ansible/artifacts/*/job_events/*.json``,
each event counted for the phase of its play): per phase the time before
the first task (for a call's first phase: ansible-playbook start-up,
inventory and playbook loading; for a later phase in the same call: from
its first play's start), in tasks and after the last one (up to the next
phase's first play, or for a call's last phase the call's end: stats and
wrap-up), and the costliest tasks.

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
import re
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
from tracekit.experiment.render import PHASES, play_phases  # noqa: E402
from tracekit.experiment.runner import run_experiment  # noqa: E402
from _load import LoadWatch
from _load import add_arguments as add_load_arguments

SMOKE = REPO / "experiments" / "smoke.yaml"
NODES = ("cloud0", "cloud1", "cloud2")
KINDS = ("local", "ssh")
TARGET_OVERHEAD_S = {"local": 30.0, "ssh": 45.0}
TARGET_RATIO = 1.10
DISPATCH_PHASE = "run"
ARG_SPEC_TASK = "Validating arguments against arg spec"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PLAY_BANNER = re.compile(r"PLAY \[(?P<play>.*)\] \*+$")  # at least 3 stars, however long the name


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
        """Everything but the dispatch: the whole call's wall time minus the run phase."""
        return self.wall_s - self.phases_s.get(DISPATCH_PHASE, 0.0)

    @property
    def phases_but_run_s(self) -> float:
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


# -- the two ways of running it -----------------------------------------------------------


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


def ansible_playbook(inventory: Path, extravars: Path, log: Path) -> tuple[int, float, list[tuple[float, str]]]:
    """experiment.yml in one plain ansible-playbook call, environment as tracekit-run gives ansible-runner.

    Returns (rc, seconds, plays): ``plays`` = (seconds since launch, play name)
    for each ``PLAY [name]`` banner, timed as the line arrives; the whole
    output goes to ``log``.
    """
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_ANY_ERRORS_FATAL": "True",
           "PATH": f"{ANSIBLE_PLAYBOOK.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           # Banners must arrive when printed (into a pipe, ansible's stdout is flushed only when a worker
           # forks; ansible-runner reads it through a pty) and look like banners (no cowsay).
           "PYTHONUNBUFFERED": "1", "ANSIBLE_NOCOWS": "1"}  # fmt: skip
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), "experiment.yml", "-e", f"@{extravars}"]
    plays = []
    with log.open("w") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=REPO / "playbooks", env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)  # fmt: skip
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                at = time.monotonic() - started
                out.write(line)
                banner = PLAY_BANNER.match(line.rstrip("\n"))
                if banner:
                    plays.append((at, banner["play"]))
            rc = proc.wait()
        except BaseException:  # Ctrl-C or SIGTERM: end the playbook with the bench
            proc.kill()
            proc.wait()
            raise
        return rc, time.monotonic() - started, plays


def phase_durations(plays: list[tuple[float, str]], total_s: float, phase_of: dict[str, str]) -> dict[str, float]:
    """Seconds per phase from the play banners' times: a phase runs from its first play's banner
    (the first phase from launch, ``0``) to the next phase's first banner (the last one to ``total_s``)."""
    starts: dict[str, float] = {}
    for at, play in plays:
        if play not in phase_of:
            raise ValueError(f"play {play!r} is in none of playbooks/<phase>.yml")
        phase = phase_of[play]
        if phase in starts and phase != list(starts)[-1]:
            raise ValueError(f"play {play!r} of phase {phase} after a play of phase {list(starts)[-1]}")
        starts.setdefault(phase, at)
    if not starts:
        return {}
    bounds = [0.0, *list(starts.values())[1:], total_s]
    return {phase: bounds[i + 1] - bounds[i] for i, phase in enumerate(starts)}


def plain_run(label: str, inventory: Path, template_run: Path, logs: Path, run_id: str,
              phase_of: dict[str, str]) -> Timing:  # fmt: skip
    """The same phases by plain ansible-playbook: experiment.yml in one call, timed per phase by its play banners."""
    started = time.monotonic()
    extravars, secret = plain_extravars(template_run, logs, run_id)
    run_dir = extravars.parent
    log = run_dir / "ansible-playbook.log"
    try:
        rc, seconds, plays = ansible_playbook(inventory, extravars, log)
    finally:
        secret.unlink(missing_ok=True)
    wall = time.monotonic() - started
    if rc != 0:
        raise SystemExit(f"{label}: ansible-playbook failed (rc {rc}, see {log})")
    if not (run_dir / "opendc" / "tasks.parquet").is_file():
        raise SystemExit(f"{label}: no opendc/tasks.parquet in {run_dir}")
    try:
        phases = phase_durations(plays, seconds, phase_of)
    except ValueError as exc:
        raise SystemExit(f"{label}: {exc} (see {log})") from None
    if tuple(phases) != PHASES:
        raise SystemExit(f"{label}: plays of phases {', '.join(phases) or 'none'} seen, expected {', '.join(PHASES)} "
                         f"(see {log})")  # fmt: skip
    return Timing(label, run_dir, "succeeded", phases, wall)


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
    duration_s: float  # phase start -> phase end, as in phase_costs
    before_first_task_s: float  # phase start -> first task starts (start-up and loading, or the play's start)
    in_tasks_s: float
    after_last_task_s: float  # last result -> phase end (stats and wrap-up, or the next phase's first play)
    tasks: list[TaskCost]
    facts_tasks: int  # setup/gather_facts tasks seen


TASK_STARTS = ("playbook_on_task_start", "playbook_on_handler_task_start")
FACTS_ACTIONS = ("setup", "ansible.builtin.setup", "gather_facts", "ansible.builtin.gather_facts")


def phase_costs(run_dir: Path, phase_of: dict[str, str]) -> tuple[list[PhaseCost], int]:
    """Per phase of a tracekit-run run folder, from ansible-runner's job_events: (costs, ansible-runner calls).

    Every artifacts folder is one ansible-runner call, running one phase or
    several in a row; an event belongs to the phase of its play
    (``phase_of``). A phase runs from its first play's start to the next
    phase's first play's start in the same call, except at the call's edges:
    the call's first phase starts and its last one ends when status.json says
    (so they include ansible-playbook's start-up and wrap-up), unless the
    call's first or last event lies outside that, or status.json's record does
    not overlap the phase's events in this call (it is another call's: the
    phase ran again after a failure). A phase run in several calls adds up.
    """
    status = json.loads((run_dir / "status.json").read_text()).get("phases", {})
    calls = sorted(p for p in (run_dir / "ansible" / "artifacts").iterdir() if (p / "job_events").is_dir())
    seen: dict[str, PhaseCost] = {}
    for artifacts in calls:
        events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
        events.sort(key=lambda e: e.get("counter", 0))
        if not events:
            continue
        first_play: dict[str, dt.datetime] = {}  # phase -> its first play's start, in the order they start
        last_event: dict[str, dt.datetime] = {}
        starts: dict[str, tuple[dt.datetime, str, str]] = {}  # task uuid -> (start, task, phase)
        ends: dict[str, dt.datetime] = {}
        hosts: dict[str, set[str]] = {}
        facts: dict[str, int] = {}
        for event in events:
            data = event.get("event_data", {})
            if "play" not in data:
                continue  # the playbook's own events (start, stats)
            if data["play"] not in phase_of:
                raise SystemExit(f"{artifacts}: play {data['play']!r} is in none of playbooks/<phase>.yml")
            phase, created, uuid = phase_of[data["play"]], _utc(event["created"]), data.get("task_uuid")
            last_event[phase] = created
            if event["event"] == "playbook_on_play_start":
                first_play.setdefault(phase, created)
            elif event["event"] in TASK_STARTS:
                first_play.setdefault(phase, created)
                starts[uuid] = (created, data.get("task", "?"), phase)
                facts[phase] = facts.get(phase, 0) + (data.get("task_action", "") in FACTS_ACTIONS)
            elif event["event"].startswith("runner_on_") and data.get("end"):
                ends[uuid] = max(ends.get(uuid, _utc(data["end"])), _utc(data["end"]))
                hosts.setdefault(uuid, set()).add(data.get("host", "?"))
        order = list(first_play)
        bounds = [first_play[p] for p in order] + [_utc(events[-1]["created"])]
        bounds[0] = _utc(events[0]["created"])
        for edge, phase in ((0, order[0]), (-1, order[-1])):
            record = status.get(phase, {})
            if not (record.get("start") and record.get("end")):
                continue
            record_start, record_end = _utc(record["start"]), _utc(record["end"])
            if record_start > last_event[phase] or record_end < first_play[phase]:
                continue  # another call's record: the phase ran again
            if edge == 0:
                bounds[0] = min(bounds[0], record_start)
            else:
                bounds[-1] = max(bounds[-1], record_end)
        for i, phase in enumerate(order):
            begin, end = bounds[i], bounds[i + 1]
            tasks = [TaskCost(phase, name, (ends.get(uuid, start) - start).total_seconds(), len(hosts.get(uuid, ())))
                     for uuid, (start, name, p) in starts.items() if p == phase]  # fmt: skip
            first = min((start for start, _, p in starts.values() if p == phase), default=end)
            last = max((ends[uuid] for uuid, (_, _, p) in starts.items() if p == phase and uuid in ends), default=first)
            cost = seen.setdefault(phase, PhaseCost(phase, 0.0, 0.0, 0.0, 0.0, [], 0))
            cost.duration_s += (end - begin).total_seconds()
            cost.before_first_task_s += (first - begin).total_seconds()
            cost.in_tasks_s += sum(t.wall_s for t in tasks)
            cost.after_last_task_s += (end - last).total_seconds()
            cost.tasks = sorted(cost.tasks + tasks, key=lambda t: -t.wall_s)
            cost.facts_tasks += facts.get(phase, 0)
    return [seen[p] for p in PHASES if p in seen], len(calls)


def print_costs(kind: str, run_dir: Path, top: int, phase_of: dict[str, str]) -> None:
    costs, calls = phase_costs(run_dir, phase_of)
    print(f"\nWhere tracekit-run's time goes ({kind}, from {run_dir.name}/ansible/artifacts/*/job_events, "
          f"{calls} ansible-runner call{'s' if calls != 1 else ''}):\n")  # fmt: skip
    print("| phase | phase s | before the first task s | in tasks s | after the last task s | tasks | slowest task |")
    print("|---|---|---|---|---|---|---|")
    for c in costs:
        slowest = f"{c.tasks[0].task} ({c.tasks[0].wall_s:.1f} s)" if c.tasks else ""
        print(f"| {c.phase} | {c.duration_s:.1f} | {c.before_first_task_s:.1f} | {c.in_tasks_s:.1f} | "
              f"{c.after_last_task_s:.1f} | {len(c.tasks)} | {slowest} |")  # fmt: skip
    overhead = [c for c in costs if c.phase != DISPATCH_PHASE]
    around = sum(c.before_first_task_s + c.after_last_task_s for c in overhead)
    print(f"\nOverhead phases: {around:.1f} s before their first and after their last task, "
          f"{sum(c.in_tasks_s for c in overhead):.1f} s in {sum(len(c.tasks) for c in overhead)} tasks; "
          f"fact-gathering tasks: {sum(c.facts_tasks for c in costs)}.")  # fmt: skip
    checks = [t for c in costs for t in c.tasks if t.task.startswith(ARG_SPEC_TASK)]
    print(f"Role argument checks: {len(checks)} tasks, {sum(t.wall_s for t in checks):.1f} s.")
    tasks = sorted((t for c in overhead for t in c.tasks), key=lambda t: -t.wall_s)[:top]
    print(f"\nCostliest tasks outside the dispatch (top {len(tasks)}):\n")
    print("| phase | task | wall s | hosts |\n|---|---|---|---|")
    for t in tasks:
        print(f"| {t.phase} | {t.task} | {t.wall_s:.2f} | {t.hosts} |")


# -- report ---------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def print_table(kind: str, first: Timing, measured: Timing, plain: Timing, repeat: int) -> None:
    how = "one run each" if repeat == 1 else f"medians of {repeat} runs each, alternating"
    print(f"\n## {kind}: {len(NODES)} nodes ({'local connection' if kind == 'local' else 'SSH on 127.0.0.1'}; {how})\n")
    print("| phase | first run s | tracekit-run s | ansible-playbook, one call s | tracekit − plain s |")
    print("|---|---|---|---|---|")
    for phase in PHASES:
        t, p = measured.phases_s.get(phase), plain.phases_s.get(phase)
        diff = f"{t - p:+.1f}" if t is not None and p is not None else ""
        print(f"| {phase} | {_s(first.phases_s.get(phase))} | {_s(t)} | {_s(p)} | {diff} |")
    rows = [
        ("**overhead** (wall but run)", lambda x: x.overhead_s),
        ("phases but run", lambda x: x.phases_but_run_s),
        ("all phases", lambda x: sum(x.phases_s.values())),
        ("wall (incl. outside the phases)", lambda x: x.wall_s),
    ]
    for name, value in rows:
        print(f"| {name} | {value(first):.1f} | {value(measured):.1f} | {value(plain):.1f} | "
              f"{value(measured) - value(plain):+.1f} |")  # fmt: skip
    print(f"\nratio tracekit-run / ansible-playbook, overhead: {measured.overhead_s / plain.overhead_s:.2f}; "
          f"first run: wheelhouse install, venvs and clips, not counted in the targets.")  # fmt: skip


def verdicts(kind: str, measured: Timing, plain: Timing, watch: LoadWatch) -> list[str]:
    target = TARGET_OVERHEAD_S[kind]
    ratio = measured.overhead_s / plain.overhead_s
    return [
        f"{watch.verdict(measured.overhead_s <= target)}  {kind}: overhead {measured.overhead_s:.1f} s <= {target:g} s",
        f"{watch.verdict(ratio <= TARGET_RATIO)}  {kind}: overhead {ratio:.2f}x plain ansible-playbook "
        f"({measured.overhead_s:.1f} s vs {plain.overhead_s:.1f} s) <= {TARGET_RATIO:.2f}x",
    ]


def bench_kind(kind: str, folder: Path, top: int, repeat: int, watch: LoadWatch) -> list[tuple[str, Timing, Timing]]:
    phase_of = play_phases(REPO / "playbooks")
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
                                                phase_of))  # fmt: skip
        measured, plain = Timing.median(measured_runs), Timing.median(plain_runs)
        print_table(kind, first, measured, plain, repeat)
        print_costs(kind, measured.run_dir, top, phase_of)
        watch.note()
        return [(kind, measured, plain)]  # judged once the last load reading is taken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", choices=KINDS, help="one inventory kind (default: local, then ssh)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the run folders, logs and node roots in DIR")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="measured tracekit-run and ansible-playbook runs each, alternating; medians (default 1)")
    parser.add_argument("--top", type=int, default=8, help="costliest tasks to list per kind (default 8)")
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    watch = LoadWatch.from_args(args)
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
            results += bench_kind(kind, Path(name) / kind, args.top, args.repeat, watch)
        if args.keep:
            print(f"\nkept: {name}")
    print(f"\n{watch.end_line()}\n")
    print("\n".join(line for kind, measured, plain in results for line in verdicts(kind, measured, plain, watch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
