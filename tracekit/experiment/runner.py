"""``run_experiment``: one experiment file -> Ansible phases -> a complete, verified run folder.

input:  experiments/X.yaml (+ -e overrides), an inventory, playbooks/ and roles/
output: <logs dir>/<RUN_ID>/ with experiment.yaml (as given), resolved.json,
        inventory.yml, manifest.json, status.json, ansible/ (ansible-runner's
        private data dir and artifacts), nodes/<node>/, cctf/, opendc/

This module orchestrates; the parts are elsewhere: the run folder and its
records in run_dir (RunDir), which phases an attempt runs in attempts, the
ansible-runner calls and what their events say in phases.

The phases run in one ansible-runner call of playbooks/experiment.yml (which
imports playbooks/<phase>.yml with the phase's tag; one ansible-playbook
start-up instead of six), followed phase by phase through the events of
their plays. A host failing ends that call (any_errors_fatal); the runner
then decides what follows: stop and fetch always run once anything may have
started, each in a call of its own that goes on past a failed host; parse
only after a good run.
The Redis password is generated per run into a root-only file outside the
run folder (<logs dir>/.secrets/); only that file's path reaches Ansible,
whose tasks read it with no_log. --resume re-runs from the first phase that
did not finish (start and run together, since stop undoes start).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracekit import runfolder, workloads
from tracekit.errors import RunError, TracekitError, UsageError
from tracekit.detach import end_processes_naming
from tracekit.experiment.attempts import (
    ALWAYS_AFTER_START,
    UNDONE_BY_STOP,
    after_the_call,
    crash_cleanup,
    nodes_left_taken,
    earlier_attempt_kept_aside,
    left_running,
    phases_to_run,
    verdict,
)
from tracekit.experiment.phases import PhaseOutcome, PhaseRunner
from tracekit.experiment.progress import Progress, make_progress
from tracekit.experiment.render import (
    PHASES,
    RELEASE,
    Inventory,
    Plan,
    extravars,
    inventory_without_secrets,
    read_inventory,
    task_count,
)
from tracekit.experiment.outcome import outcome_warnings
from tracekit.experiment.results import RESULTS, headline, read_json_object, summary_lines, write_results
from tracekit.experiment.run_dir import RunDir, write_json
from tracekit.experiment.spec import Experiment, check_here, load_experiment
from tracekit.experiment.wheelhouse import WORKLOAD_ID, build_wheelhouse, build_workload_wheels, find_checkout

# Every record of the run folder is written through this name (a test fills the disk through it).
_write_json = write_json


AFTER_HANGUP = "after-hangup.log"  # in the run folder: what tracekit-run said once its terminal was gone

# How a run ended -> tracekit-run's exit status. 'warning': every phase succeeded, but the trace
# lost something (tasks, a node's samples) or the run saw something it refused (tracekit.experiment.outcome).
EXIT_CODES = {"succeeded": 0, "planned": 0, "stopped": 0, "warning": 3, "interrupted": 130}


@dataclass(frozen=True)
class SharedNodes:
    """A run among others that share their nodes (a sweep's points: tracekit.sweep): the nodes are held under
    one lock id and token from the first point to the sweep's end (each stop keeps them; the sweep frees
    them), and prepared once: ``prepared_by``, the run folder whose prepare this run relies on (its files
    and workload wheels; None: this run prepares the nodes itself)."""

    lock_id: str
    lock_token: str
    prepared_by: Path | None = None
    held: bool = False  # an earlier run of the sweep took the nodes and they are held still: start need not
    # The sweep's Redis (tracekit_redis_run_dir of the lock id), kept up from the first start to the sweep's
    # end: its password (None: each run starts and stops a Redis of its own) and whether a run of this
    # tracekit-run started it and no run failed since (then start need not look at it).
    redis_password_file: Path | None = None
    redis_up: bool = False


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    state: str  # succeeded, warning, failed, interrupted, stopped (--stop), planned (dry run)
    status: dict[str, Any] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.state, 1)


def default_run_id(experiment: Experiment) -> str:
    return f"{experiment.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


class _Interrupt:
    """SIGINT/SIGTERM/SIGHUP: cancel the running phase, then stop and fetch; signals during cleanup are noted only.

    SIGHUP is what a closed terminal or SSH session sends: the run cleans up as after Ctrl-C.
    """

    def __init__(self, progress: Progress, after_hangup: Path | None = None):
        self.progress = progress
        self.after_hangup = after_hangup  # where what tracekit-run says goes once its terminal is gone
        self.requested = False
        self.cleaning = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _leave_the_terminal(self) -> None:
        """A hangup: the terminal is gone and every write to it fails (EIO). What tracekit-run says from
        now on goes to a file in the run folder (or nowhere), so that its cleanup is not cut short."""
        try:
            target = os.open(self.after_hangup or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            target = os.open(os.devnull, os.O_WRONLY)
        nothing = os.open(os.devnull, os.O_RDONLY)
        for fd in (1, 2):
            os.dup2(target, fd)
        os.dup2(nothing, 0)
        os.close(target)
        os.close(nothing)

    def cancelling(self) -> bool:
        """A signal came while a phase that may be cancelled runs (not stop or fetch)."""
        return self.requested and not self.cleaning

    def _handle(self, signum: int, _frame: object) -> None:
        self.requested = True  # parse is skipped; the run ends 'interrupted'
        if signum == signal.SIGHUP:
            self._leave_the_terminal()
        if self.cleaning:
            self.progress.say("stopping what was started and fetching the data; please wait")
            return
        self.progress.say(f"{signal.Signals(signum).name}: cancelling; then stopping everything and fetching the data")


# -- dispatch progress straight from Redis ------------------------------------------------


def _dispatch_counter(inventory: Inventory, run_id: str, secret_file: Path) -> Callable[[], tuple[int, int] | None]:
    """(done, failed) so far, read from the run's results stream; None when Redis is not reachable from here."""
    address = inventory.redis_address()
    state: dict[str, Any] = {"client": None, "seen": "0", "done": 0, "failed": 0}

    def count() -> tuple[int, int] | None:
        if address is None:
            return None
        from tracekit.redis_client import connect
        from tracekit.sched.protocol import count_new_results

        try:
            if state["client"] is None:  # short time-outs: it is asked once a second, in the Ansible call's loop
                state["client"] = connect(f"redis://{address[0]}:{address[1]}/0", secret_file, check=False,
                                          connect_timeout_s=0.5, timeout_s=1.0)  # fmt: skip
            new = count_new_results(state["client"], run_id, state["seen"])
            state.update(seen=new.last_id, done=state["done"] + new.done, failed=state["failed"] + new.failed)
            return state["done"], state["failed"]
        except Exception:  # not reachable from here (or not up yet), or another version's record: no bar
            state["client"] = None
            return None

    return count


# -- the run ----------------------------------------------------------------------------


def run_experiment(
    experiment_path: str | Path | None = None,
    *,
    inventory: str | Path | None = None,
    run_id: str | None = None,
    dry_run: bool = False,
    resume: str | None = None,
    force: bool = False,
    overrides: list[str] | None = None,
    limit: str | None = None,
    verbose: bool = False,
    logs_dir: str | Path | None = None,
    progress: Progress | None = None,
    out: Callable[[str], None] = print,
    lock_wait: int = 0,
    shared: SharedNodes | None = None,
) -> RunResult:
    """Run (or plan, or resume) one experiment; never raises for a failed phase (see RunResult.state).

    ``lock_wait``: seconds to wait for nodes another run holds (tracekit_lock) before refusing.
    ``shared``: the run is a sweep's point (SharedNodes).
    """
    logs = Path(runfolder.logs_dir(logs_dir)).resolve()
    if resume:
        experiment_path, overrides, inventory = _resumed_inputs(logs, resume, experiment_path, overrides, inventory)
        run_id = resume
    elif experiment_path is None:
        raise UsageError("give an experiment file (e.g. experiments/ffmpeg.yaml) or --resume RUN_ID")
    experiment = load_experiment(experiment_path, overrides)
    if experiment.sweep is not None and shared is None:
        raise UsageError(f"{experiment.source}: it has a sweep section: run it with tracekit-run (tracekit.sweep), "
                         "or give -e sweep=null for one run of it")  # fmt: skip
    inventory_path = _inventory_path(inventory, experiment)
    full_inventory = read_inventory(inventory_path)
    parsed_inventory = full_inventory.first_workers(experiment.workers_count, f"{experiment.source}")
    limit = _limit_to(parsed_inventory, full_inventory, limit)
    check_here(experiment, parsed_inventory)
    folder = RunDir(logs, runfolder.validate_run_id(run_id if run_id is not None else default_run_id(experiment)), write=_write_json)
    if dry_run:
        phases = phases_to_run(folder.load_status()) if resume else list(PHASES)
        plan = Plan(folder.run_id, experiment, parsed_inventory, tuple(phases))
        for line in plan.lines():
            out(line)
        return RunResult(folder.run_id, folder.path, "planned", {}, plan.lines())

    progress = progress or make_progress(PHASES, verbose)
    folder.notify = progress.say
    with folder.hold():  # one tracekit-run per run: its status is read, and changed, by this one only
        status = folder.load_status() if resume else {}
        phases = phases_to_run(status) if resume else list(PHASES)
        if shared is not None and shared.prepared_by is not None and "prepare" in phases:
            phases.remove("prepare")  # another point of its sweep prepared the nodes
        if resume and not phases:
            summary = [f"run {folder.run_id}: every phase already finished; nothing to resume"]
            return RunResult(folder.run_id, folder.path, status.get("state", "succeeded"), status, summary)
        keep_aside = earlier_attempt_kept_aside(status, phases, bool(resume))
        if not resume:
            if folder.is_taken() and force:
                status = folder.load_status()  # a run replaced with --force may have left its processes running
            _create_run_folder(folder, Path(experiment_path), experiment, inventory_path, parsed_inventory, overrides, force)
        # Its earlier attempt started the nodes and no stop succeeded since (its tracekit-run died, or a
        # node's stop failed): what it left may still run, and holds the nodes.
        leftovers = left_running(status)
        attempt = folder.begin_attempt(phases, keep_aside)
        if shared is not None and shared.prepared_by is not None and "prepare" not in phases:
            folder.phase_skipped("prepare", f"the nodes were prepared by {shared.prepared_by.name}, a run of the same sweep")
        with progress, _Interrupt(progress, folder.path / AFTER_HANGUP) as interrupt:
            progress.say(f"run {folder.run_id} -> {folder.path}")
            wheelhouse = _wheelhouse(folder)
            runner = _phase_runner(folder, experiment, parsed_inventory, wheelhouse, attempt, progress, interrupt,
                                   verbose, limit, lock_wait, build_wheels="prepare" in phases, shared=shared)  # fmt: skip
            if leftovers:
                _stop_what_an_earlier_attempt_left(folder, runner, progress, interrupt)
            # An attempt that starts the nodes anew gets new secrets: a new Redis (empty: no record of an earlier
            # attempt's tasks), and queue entries of the old key that no new worker runs.
            folder.make_secret(renew="start" in phases, password_of=shared.redis_password_file if shared else None)
            counter = _dispatch_counter(parsed_inventory, folder.run_id, folder.secret_file)
            state = _Attempt(folder, runner, progress, interrupt, counter, task_count(experiment), shared is not None).run(phases)
        state, manifest = folder.finish(state, outcome_warnings(folder.path) if state == "succeeded" else [])
        _after_the_end(folder, progress.say)
    return RunResult(folder.run_id, folder.path, state, folder.status, summarize(folder.path, folder.status, manifest))


def stop_run(
    run_id: str,
    *,
    inventory: str | Path | None = None,
    logs_dir: str | Path | None = None,
    verbose: bool = False,
    progress: Progress | None = None,
) -> RunResult:
    """--stop RUN_ID: stop everything a run left running on its nodes (its tracekit-run died), fetch what it
    collected and free its nodes. The run folder records it as an attempt of its own; --resume goes on after."""
    logs = Path(runfolder.logs_dir(logs_dir)).resolve()
    experiment_path, overrides, inventory = _resumed_inputs(logs, run_id, None, None, inventory)
    experiment = load_experiment(experiment_path, overrides)
    parsed_inventory = read_inventory(_inventory_path(inventory, experiment))
    folder = RunDir(logs, runfolder.validate_run_id(run_id), write=_write_json)
    progress = progress or make_progress(PHASES, verbose)
    folder.notify = progress.say
    with folder.hold():
        status = folder.load_status()
        started = any((status.get("phases", {}).get(p) or {}).get("state", "pending") != "pending" for p in UNDONE_BY_STOP)
        # A run that never started its nodes has nothing to stop or fetch: its nodes are only freed.
        calls = ["stop", "fetch"] if started else [RELEASE]
        attempt = folder.begin_attempt(calls, None)
        folder.make_secret(renew=False)
        _end_an_orphaned_ansible(folder, progress)
        outcomes: dict[str, PhaseOutcome] = {}
        with progress, _Interrupt(progress) as interrupt:
            interrupt.cleaning = True  # stop and fetch are never cancelled
            runner = _phase_runner(folder, experiment, parsed_inventory, _wheelhouse(folder), attempt, progress,
                                   interrupt, verbose, None, 0)  # fmt: skip
            for call in calls:
                if call == RELEASE:
                    outcomes.update(runner.run([RELEASE], lambda _p: None, lambda _p, _o: None))
                    folder.status["attempts"][-1]["nodes_freed"] = outcomes[RELEASE].state if RELEASE in outcomes else "not run"
                else:
                    runner.run([call], lambda p: _began(folder, progress, p),
                               lambda p, o: _ended(folder, progress, outcomes, p, o))  # fmt: skip
        failed = [call for call in calls if outcomes.get(call) is None or outcomes[call].state != "succeeded"]
        state, manifest = folder.finish("failed" if failed else "stopped", [])
        _after_the_end(folder, progress.say)
    return RunResult(folder.run_id, folder.path, state, folder.status, summarize(folder.path, folder.status, manifest))


def free_shared_nodes(
    run_id: str,
    logs_dir: str | Path,
    shared: SharedNodes,
    *,
    inventory: str | Path | None = None,
    hosts: tuple[str, ...] | None = None,
    verbose: bool = False,
) -> bool:
    """Free the nodes a sweep's runs held between them (SharedNodes), through the folder of its last run
    (its inventory and variables; the call's artifacts go to its ansible/): ``hosts`` (default: all of the
    inventory's). Whether every one is free."""
    logs = Path(logs_dir).resolve()
    experiment_path, overrides, inventory = _resumed_inputs(logs, run_id, None, None, inventory)
    experiment = load_experiment(experiment_path, overrides)
    parsed_inventory = read_inventory(_inventory_path(inventory, experiment))
    folder = RunDir(logs, runfolder.validate_run_id(run_id), write=_write_json)
    progress = make_progress((RELEASE,), verbose)
    with folder.hold(), progress, _Interrupt(progress) as interrupt:
        folder.status = folder.load_status()
        interrupt.cleaning = True  # never cancelled, as stop
        runner = _phase_runner(folder, experiment, parsed_inventory, _wheelhouse(folder), len(folder.status.get("attempts", [])),
                               progress, interrupt, verbose, ",".join(hosts) if hosts else None, 0, shared=shared)  # fmt: skip
        outcome = runner.run([RELEASE], lambda _p: None, lambda _p, _o: None).get(RELEASE)
    return outcome is not None and outcome.state == "succeeded"


def _began(folder: RunDir, progress: Progress, phase: str) -> None:
    folder.phase_started(phase)
    progress.phase_started(phase)


def _ended(folder: RunDir, progress: Progress, outcomes: dict[str, PhaseOutcome], phase: str, outcome: PhaseOutcome) -> None:
    outcomes[phase] = outcome
    folder.phase_ended(phase, outcome.state, outcome.error, outcome.hosts)
    progress.phase_finished(phase, outcome.state, outcome.error)


def _phase_runner(
    folder: RunDir,
    experiment: Experiment,
    inventory: Inventory,
    wheelhouse: Path,
    attempt: int,
    progress: Progress,
    interrupt: _Interrupt,
    verbose: bool,
    limit: str | None,
    lock_wait: int,
    build_wheels: bool = False,
    shared: SharedNodes | None = None,
) -> PhaseRunner:
    """``build_wheels``: resolve the workload's requirements (an attempt that prepares the nodes); else
    those an earlier attempt (or the sweep's point that prepared the nodes) built are used."""
    prepared_by = shared.prepared_by if shared is not None and shared.prepared_by is not None else folder.path
    variables = extravars(experiment, folder.run_id, folder.path, wheelhouse, folder.secret_file, sys.executable, inventory,
                          workload_wheels=_workload_wheels(prepared_by, experiment, build_wheels, progress.say,
                                                           folder.failed_before_start))  # fmt: skip
    variables["tracekit_run_attempt"] = attempt
    variables["tracekit_run_task_key_file"] = str(folder.task_key_file)
    # Who holds the nodes, for the message another run gets (tracekit_lock), and how long to wait for them.
    variables["tracekit_run_holder"] = f"tracekit-run pid {os.getpid()} on host {socket.gethostname()}, run folder {folder.path}"
    variables["tracekit_run_lock_wait"] = lock_wait
    variables["tracekit_run_lock_token"] = folder.lock_token()
    if shared is not None:
        variables.update(tracekit_run_lock_id=shared.lock_id, tracekit_run_lock_token=shared.lock_token,
                         tracekit_run_prepared_id=prepared_by.name, tracekit_run_keep_nodes=True,
                         tracekit_run_nodes_held=shared.held)  # fmt: skip
        if shared.redis_password_file is not None:
            variables.update(tracekit_run_redis_kept=True, tracekit_run_redis_up=shared.redis_up)
    return PhaseRunner(folder.ansible_dir, inventory, variables, progress.host_event, interrupt.cancelling, verbose, limit,
                       progress.say)  # fmt: skip


def _end_an_orphaned_ansible(folder: RunDir, progress: Progress) -> None:
    """A killed tracekit-run leaves its ansible-playbook going on with the phases of its call, unattended
    (it would start what a stop just stopped): ended first. Its command line names the run's extravars."""
    ended = end_processes_naming(str(folder.ansible_dir / "env" / "extravars"))
    if ended:
        progress.say(f"run {folder.run_id}: ended {ended} process(es) of its earlier ansible-playbook, which outlived its tracekit-run")


def _stop_what_an_earlier_attempt_left(folder: RunDir, runner: PhaseRunner, progress: Progress, interrupt: _Interrupt) -> None:
    """The earlier attempt started the nodes and no stop succeeded since (its tracekit-run died, or a node's
    stop failed): its collectors, workers, Redis (with the old records) and node locks may still be there.
    Stop them first, with the earlier attempt's secrets (before they are renewed)."""
    progress.say(f"run {folder.run_id}: its earlier attempt's nodes were not all stopped; stopping what it left first")
    _end_an_orphaned_ansible(folder, progress)
    interrupt.cleaning = True  # never cancelled, as stop
    # The nodes stay this run's: another run waiting for them must not slip in before this attempt's start.
    outcomes = runner.run(["stop"], lambda _p: None, lambda _p, _o: None, also={"tracekit_run_keep_nodes": True})
    interrupt.cleaning = False
    outcome = outcomes.get("stop")
    folder.status["attempts"][-1]["stopped_leftovers"] = outcome.state if outcome else "not run"
    if outcome is None or outcome.state != "succeeded":
        raise RunError(
            f"run {folder.run_id}: could not stop what its earlier attempt left running "
            f"({outcome.error if outcome else 'the stop phase did not run'}); see {folder.ansible_dir}"
        )


def _resumed_inputs(
    logs: Path,
    resume: str,
    experiment_path: str | Path | None,
    overrides: list[str] | None,
    inventory: str | Path | None,
) -> tuple[Path, list[str], str | Path | None]:
    """--resume: the run's experiment.yaml and -e values as resolved, and its inventory unless -i names one."""
    if overrides or experiment_path is not None:
        raise UsageError(
            f"--resume {resume} continues the run as it was resolved (its experiment.yaml and -e values); "
            "give no experiment file or -e with it, or start a new run"
        )
    folder = RunDir(logs, runfolder.validate_run_id(resume))
    resolved = folder.read_resolved()
    return folder.path / "experiment.yaml", resolved.get("overrides", []), inventory or resolved.get("inventory_path")


def run_hosts(experiment: Experiment, inventory: str | Path | None) -> tuple[str, ...]:
    """The hosts a run of ``experiment`` has: the controller and the inventory's (first workers.count) workers."""
    return read_inventory(_inventory_path(inventory, experiment)).first_workers(experiment.workers_count, experiment.source).hosts


def _limit_to(limited: Inventory, full: Inventory, limit: str | None) -> str | None:
    """--limit, or the hosts of workers.count (the controller and the first workers): not both."""
    if limited.workers == full.workers:
        return limit
    if limit is not None:
        raise UsageError(f"--limit {limit} and workers.count {len(limited.workers)} both choose hosts; give one of them")
    return ",".join(limited.hosts)


def _inventory_path(inventory: str | Path | None, experiment: Experiment) -> Path:
    """-i, else the experiment's inventory (relative to the repository), else inventory/local.yml."""
    checkout = find_checkout()
    if inventory is None and experiment.inventory is not None:
        inventory = checkout / experiment.inventory
    return Path(inventory or checkout / "inventory" / "local.yml")


def _create_run_folder(
    folder: RunDir,
    experiment_path: Path,
    experiment: Experiment,
    inventory_path: Path,
    inventory: Inventory,
    overrides: list[str] | None,
    force: bool,
) -> None:
    if folder.is_taken() and not force:
        raise RunError(
            f"{folder.path} already exists; resume it with '{resume_command(folder.path)}', pick another --run-id, "
            "or replace it with --force"
        )
    resolved = {
        "run_id": folder.run_id,
        "experiment": experiment.as_dict(),
        "overrides": list(overrides or []),
        "inventory_path": str(inventory.path),
        "hosts": list(inventory.hosts),  # the run's: workers.count may leave the inventory's last workers out
        "tasks": task_count(experiment),
    }
    folder.create(experiment_path, inventory_without_secrets(inventory_path), resolved, experiment.tags)


WORKLOAD_WHEELS = "workload-wheels"  # in the run folder: the packages of the workload's requirements


def _workload_wheels(run_dir: Path, experiment: Experiment, build: bool, say: Callable[[str], None],
                     failed: Callable[[str], None]) -> Path | None:  # fmt: skip
    """The wheels of the workload's requirements in ``run_dir`` (built by the attempt that prepares the nodes,
    before any node is touched; a failure fails the run there, naming what pip could not resolve)."""
    needs = workloads.kind(experiment.kind).node_needs(experiment.workload, experiment.source)
    if needs.requirements is None:
        return None
    into = run_dir / WORKLOAD_WHEELS
    if not build:
        return into if (into / WORKLOAD_ID).is_file() else None
    say(f"resolving the workload's requirements ({needs.requirements}) into wheels")
    try:
        return build_workload_wheels(needs.requirements, into, needs.with_tracekit,
                                     f"{experiment.source}: workload.{experiment.kind}.requirements")  # fmt: skip
    except TracekitError as exc:
        failed(str(exc))
        raise


def _wheelhouse(folder: RunDir) -> Path:
    """The wheels the nodes install Tracekit from; failing to build them fails the run before any node is touched."""
    try:
        return build_wheelhouse(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tracekit" / "wheelhouse")
    except TracekitError as exc:
        folder.failed_before_start(str(exc))
        raise


class _Attempt:
    """One attempt's phases: one call of them all, then, one call each, what that call did not reach
    (after a failure only stop and fetch) and stop and fetch again where it cut them short."""

    def __init__(
        self,
        folder: RunDir,
        runner: PhaseRunner,
        progress: Progress,
        interrupt: _Interrupt,
        counter: Callable[[], tuple[int, int] | None],
        total_tasks: int | None,
        nodes_shared: bool = False,
    ):
        self.folder = folder
        self.runner = runner
        self.progress = progress
        self.interrupt = interrupt
        self.counter = counter
        self.total_tasks = total_tasks
        self.nodes_shared = nodes_shared  # a sweep's point: its sweep frees the nodes at its end
        self.outcomes: dict[str, PhaseOutcome] = {}
        self.entered: set[str] = set()

    def run(self, phases: list[str]) -> str:
        """Run the phases; the attempt's state (the first phase that did not succeed decides)."""
        try:
            # Every phase in one ansible-playbook call: it ends where a host fails or at a signal.
            self.runner.run(phases, self.begin, self.end, self.tick)
            for phase in phases:
                done = self.outcomes.get(phase)
                step, reason = after_the_call(phase, done.state if done else None, self.verdict(), self.entered)
                if step == "skip":
                    self.folder.phase_skipped(phase, reason or "")
                    self.progress.phase_finished(phase, "skipped")
                elif step == "run":
                    self.runner.run([phase], self.begin, self.end, self.tick)
            self._free_nodes_left_taken()
        except BaseException:
            # Whatever broke here, what was started is stopped and what was collected fetched.
            self._stop_and_fetch_after_a_crash()
            raise
        state = self.verdict()
        self.interrupt.cleaning = True
        return state

    def verdict(self) -> str:
        return verdict([o.state for o in self.outcomes.values()], self.interrupt.requested)

    def _free_nodes_left_taken(self) -> None:
        """Prepare took the nodes and no stop freed them (prepare failed): free them, or the next run is refused."""
        if self.nodes_shared or not nodes_left_taken(self.entered, {p: o.state for p, o in self.outcomes.items()}):
            return
        self.interrupt.cleaning = True  # never cancelled, as stop
        outcome = self.runner.run([RELEASE], lambda _p: None, lambda _p, _o: None).get(RELEASE)
        self.folder.status["attempts"][-1]["nodes_freed"] = outcome.state if outcome else "not run"

    def begin(self, phase: str) -> None:
        # Stop and fetch are never cancelled: a signal meanwhile is only noted.
        self.interrupt.cleaning = phase in ALWAYS_AFTER_START
        self.entered.add(phase)
        self.folder.phase_started(phase)
        self.progress.phase_started(phase)

    def end(self, phase: str, outcome: PhaseOutcome) -> None:
        if phase == "run":
            self.tick()
        self.outcomes[phase] = outcome
        self.folder.phase_ended(phase, outcome.state, outcome.error, outcome.hosts)
        self.progress.phase_finished(phase, outcome.state, outcome.error)

    def tick(self) -> None:
        counts = self.counter()
        if counts is not None:
            self.progress.task_counts(counts[0], counts[1], self.total_tasks)

    def _stop_and_fetch_after_a_crash(self) -> None:
        """Stop and fetch (those that did not succeed yet), each on its own; the error that got here is the one reported."""
        for phase in crash_cleanup({p: o.state for p, o in self.outcomes.items()}, self.entered):
            try:
                self.runner.run([phase], self.begin, self.end)
            except Exception:  # noqa: BLE001 - the first error is re-raised by the caller
                pass


def resume_command(run_dir: Path) -> str:
    """``tracekit-run --resume RUN_ID`` with the --logs-dir and -i the run used, where not the defaults."""
    argv = ["tracekit-run", "--resume", run_dir.name]
    if run_dir.parent.resolve() != Path(runfolder.logs_dir()).resolve():
        argv += ["--logs-dir", str(run_dir.parent)]
    try:
        inventory = json.loads((run_dir / "resolved.json").read_text()).get("inventory_path")
    except (OSError, ValueError):
        inventory = None
    if inventory and Path(inventory).resolve() != (find_checkout() / "inventory" / "local.yml").resolve():
        argv += ["-i", inventory]
    return shlex.join(argv)


def _after_the_end(folder: RunDir, say: Callable[[str], None]) -> None:
    """What a finished run's final state decides: its headline figures (results.json), and the report's
    summary made again with that state (its figures, drawn in parse, are taken as they are)."""
    try:
        write_results(folder.path)
    except OSError as exc:
        say(f"cannot write {folder.path / RESULTS} ({exc.strerror or exc}); the summary is made from the run's files")
    if (folder.path / "report" / "index.html").exists():
        from tracekit.report import make_report

        try:
            make_report(folder.path, reuse_figures=True)
        except (OSError, TracekitError) as exc:
            say(f"the report keeps the state it had when parse made it ({exc})")


def exported_lines(run_dir: Path) -> list[str]:
    """One line per format the run was exported in (RUN_DIR/<format>/, tracekit.trace.export)."""
    from tracekit.trace import export

    lines = []
    for name in export.names():
        if (run_dir / name / export.SUMMARY).is_file():
            module = export.get(name)
            lines.append(f"  {module.TITLE + ':':<11} {run_dir / name} ({', '.join(module.MAIN_FILES)})")
    return lines


def summarize(run_dir: Path, status: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """The end-of-run table: phase durations, tasks per node, makespan, where the results are."""
    state = status.get("state")
    said = {"warning": "finished with warnings: its trace is not whole"}.get(state, state)
    lines = [f"run {status.get('run_id')}: {said}" + (f" ({status['error']})" if status.get("error") else "")]
    lines += [f"  warning: {warning}" for warning in status.get("warnings") or []]
    for phase in PHASES:
        record = status.get("phases", {}).get(phase, {})
        duration = f"{record['duration_s']:.1f} s" if record.get("duration_s") is not None else ""
        error = f"  {record['error']}" if record.get("error") else ""
        lines.append(f"  {phase:<8} {record.get('state', 'pending'):<12} {duration:>8}{error}")
    lines += summary_lines(read_json_object(run_dir / RESULTS) or headline(run_dir))
    lines.append(f"  run folder: {run_dir}")
    lines += exported_lines(run_dir)
    if (run_dir / "report" / "index.html").exists():
        lines.append(f"  report:     {run_dir / 'report' / 'index.html'}")
    if status.get("state") not in ("succeeded", "warning"):
        lines.append(f"  resume with: {resume_command(run_dir)}")
    return lines
