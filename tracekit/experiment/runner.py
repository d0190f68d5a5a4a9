"""``run_experiment``: one experiment file -> Ansible phases -> a complete, verified run folder.

input:  experiments/X.yaml (+ -e overrides), an inventory, playbooks/ and roles/
output: <logs dir>/<RUN_ID>/ with experiment.yaml (as given), resolved.json,
        inventory.yml, manifest.json, status.json, ansible/ (ansible-runner's
        private data dir and artifacts), nodes/<node>/, cctf/, opendc/

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
import platform
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracekit import __version__, runfolder
from tracekit.errors import RunError, TracekitError, UsageError
from tracekit.experiment.progress import Progress, make_progress
from tracekit.experiment.render import (
    PHASES,
    Inventory,
    Plan,
    extravars,
    inventory_without_secrets,
    play_phases,
    read_inventory,
    task_count,
)
from tracekit.experiment.spec import Experiment, load_experiment
from tracekit.experiment.wheelhouse import build_wheelhouse, find_checkout

ALWAYS_AFTER_START = ("stop", "fetch")  # run even after a failure or an interruption
UNDONE_BY_STOP = ("start", "run")  # resuming either re-runs both
STATUS_FILE = "status.json"
MANIFEST_FILE = "manifest.json"
SECRET_DIR = ".secrets"


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    state: str  # succeeded, failed, interrupted, planned (dry run)
    status: dict[str, Any] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"succeeded": 0, "planned": 0, "interrupted": 130}.get(self.state, 1)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _write_json(path: Path, value: Any) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(partial, path)


def default_run_id(experiment: Experiment) -> str:
    return f"{experiment.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


# -- the run folder ------------------------------------------------------------------


def _secret_file(logs_dir: Path, run_id: str) -> Path:
    """This run's Redis password, generated once, root-only, outside the run folder."""
    folder = logs_dir / SECRET_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / f"{run_id}.redis"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path


def _versions() -> dict[str, Any]:
    def command(argv: list[str]) -> str | None:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else None

    import importlib.metadata as md

    checkout = find_checkout()
    commit = command(["git", "-C", str(checkout), "rev-parse", "HEAD"])
    dirty = command(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"])
    return {
        "tracekit": __version__,
        "git_commit": commit,
        "git_dirty": bool(dirty) if commit else None,
        "python": platform.python_version(),
        "ansible_core": md.version("ansible-core"),
        "ansible_runner": md.version("ansible-runner"),
        "redis_server": command(["redis-server", "--version"]),
        "ffmpeg": command(["ffmpeg", "-version"]),
    }


# -- one phase through ansible-runner --------------------------------------------------


@dataclass
class PhaseOutcome:
    state: str  # succeeded, failed, interrupted
    hosts: dict[str, dict[str, Any]]
    error: str | None


class _Interrupt:
    """SIGINT/SIGTERM: cancel the running phase, then stop and fetch; signals during cleanup are noted only."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.requested = False
        self.cleaning = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        self.requested = True  # parse is skipped; the run ends 'interrupted'
        if self.cleaning:
            self.progress.say("stopping what was started and fetching the data; please wait")
            return
        self.progress.say(f"{signal.Signals(signum).name}: cancelling; then stopping everything and fetching the data")


def _describe_failure(event: dict[str, Any]) -> str:
    data = event.get("event_data", {})
    res = data.get("res") or {}
    message = res.get("msg") or ""
    stderr = (res.get("stderr") or "").strip()
    if stderr:
        # Tracekit's own errors are one line: 'tracekit <cmd>: error: ...'
        errors = [line for line in stderr.splitlines() if "error:" in line]
        message = (errors or stderr.splitlines())[-1]
        stdout = (res.get("stdout") or "").strip()
        if not errors and stdout and res.get("rc"):  # e.g. the dispatcher's summary of failed tasks
            message += f" (first: {stdout.splitlines()[0]})"
    elif res.get("stdout") and res.get("rc"):
        message = res["stdout"].strip().splitlines()[-1]
    return " ".join(str(message).split())[:400] or "failed"


class PhaseRunner:
    """Runs phases through ansible-runner and follows them by their plays' events.

    Several phases go in one call of playbooks/experiment.yml (tagged) with
    any_errors_fatal, so the call ends in the phase where a host failed; one
    phase goes alone through playbooks/<phase>.yml without it, so a host that
    fails does not keep the others from stopping or being fetched.
    """

    def __init__(
        self,
        run_dir: Path,
        inventory: Inventory,
        variables: dict[str, Any],
        progress: Progress,
        interrupt: _Interrupt,
        verbose: bool,
        limit: str | None,
    ):
        self.checkout = find_checkout()
        self.phase_of_play = play_phases(self.checkout / "playbooks")
        self.run_dir = run_dir
        self.inventory = inventory
        self.variables = variables
        self.progress = progress
        self.interrupt = interrupt
        self.verbose = verbose
        self.limit = limit
        (run_dir / "ansible").mkdir(exist_ok=True)
        self.count = len(list((run_dir / "ansible" / "artifacts").glob("*"))) if (run_dir / "ansible" / "artifacts").exists() else 0

    def run(
        self,
        phases: list[str],
        on_begin: Callable[[str], None],
        on_end: Callable[[str, PhaseOutcome], None],
        on_tick: Callable[[], None] | None = None,
    ) -> dict[str, PhaseOutcome]:
        """Run the phases (in order) in one call; on_begin/on_end for each phase entered; the outcomes of those."""
        outcomes: dict[str, PhaseOutcome] = {}
        current: dict[str, Any] = {"phase": None, "hosts": {}, "errors": [], "following": True}

        def begin(phase: str) -> None:
            if current["phase"] is not None:  # the call went on without a failure: the phase before ended well
                finish("succeeded", None)
            current.update(phase=phase, hosts={}, errors=[])
            on_begin(phase)

        def finish(state: str, error: str | None) -> None:
            phase = current["phase"]
            if current["errors"] and state != "interrupted":
                state, error = "failed", _join_errors(current["errors"])
            outcomes[phase] = PhaseOutcome(state, current["hosts"], error)
            on_end(phase, outcomes[phase])

        def on_event(event: dict[str, Any]) -> bool:
            kind = event.get("event", "")
            data = event.get("event_data", {})
            if kind == "playbook_on_play_start":
                phase = self.phase_of_play.get(data.get("play", ""))
                # Plays of phases not asked for (--resume) still check their roles'
                # arguments (tagged 'always'): not followed.
                current["following"] = phase in phases
                # After a failure the call may go on through plays left without hosts
                # (Ansible miscounts unreachable hosts); those phases did not run.
                if phase in phases and phase != current["phase"] and not current["errors"]:
                    begin(phase)
                return True
            host = data.get("host")
            task = data.get("task", "")
            if not host or not kind.startswith("runner_on_") or not current["following"]:
                return True
            hosts, errors = current["hosts"], current["errors"]
            entry = hosts.setdefault(host, {"state": "ok", "error": None})
            if kind == "runner_on_start":
                self.progress.host_event(host, task, "running")
            elif kind == "runner_on_unreachable":
                detail = _describe_failure(event)
                entry.update(state="unreachable", error=f"{task}: {detail}")
                errors.append((host, f"unreachable: {detail}"))
                self.progress.host_event(host, task, "unreachable", detail)
            elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                detail = _describe_failure(event)
                entry.update(state="failed", error=f"{task}: {detail}")
                errors.append((host, f"{task}: {detail}"))
                self.progress.host_event(host, task, "failed", detail)
            elif kind == "runner_on_ok":
                self.progress.host_event(host, task, "changed" if (data.get("res") or {}).get("changed") else "ok")
            return True

        last_tick = [0.0]

        def cancel() -> bool:
            if on_tick is not None and current["phase"] == "run" and time.monotonic() - last_tick[0] >= 1.0:
                last_tick[0] = time.monotonic()
                on_tick()
            return self.interrupt.requested and not self.interrupt.cleaning

        self.count += 1
        begin(phases[0])  # ansible-playbook's start-up counts for the first phase
        try:
            result = self._ansible(phases, on_event, cancel)
        except Exception as exc:  # ansible-runner itself broke: the phase failed, stop and fetch still run
            finish("failed", f"ansible-runner could not run the {current['phase']} phase: {exc}")
            return outcomes
        if result.status == "canceled" or self.interrupt.requested and not self.interrupt.cleaning:
            finish("interrupted", "interrupted by a signal")
        elif result.status == "successful" and not current["errors"]:
            finish("succeeded", None)
        else:
            if not current["errors"]:
                tail = _stdout_tail(result)
                current["errors"].append(("ansible-playbook", tail or f"ended with status {result.status} (rc {result.rc})"))
            finish("failed", None)
        return outcomes

    def _ansible(self, phases: list[str], on_event: Callable[[dict[str, Any]], bool], cancel: Callable[[], bool]) -> Any:
        from ansible_runner.interface import init_runner

        together = len(phases) > 1
        runner = init_runner(
            private_data_dir=str(self.run_dir / "ansible"),
            project_dir=str(self.checkout / "playbooks"),
            # One phase alone: only its own playbook's roles are loaded and their arguments checked.
            playbook="experiment.yml" if together else f"{phases[0]}.yml",
            tags=",".join(phases) if together and tuple(phases) != PHASES else None,
            inventory=str(self.inventory.path),
            extravars=self.variables,
            limit=self.limit,
            ident=f"{self.count:02d}-{phases[0]}" + (f"-{phases[-1]}" if together else ""),
            envvars={
                "ANSIBLE_CONFIG": str(self.checkout / "ansible.cfg"),
                "ANSIBLE_ROLES_PATH": str(self.checkout / "roles"),
                "ANSIBLE_NOCOLOR": "1",
                # A host failing ends a call of several phases (the runner then stops what
                # started); one phase alone (stop, fetch) goes on with the other hosts.
                "ANSIBLE_ANY_ERRORS_FATAL": "True" if together else "False",
                # The ansible-playbook installed beside this Python (the venv need not be on PATH).
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            },
            event_handler=on_event,
            cancel_callback=cancel,
            quiet=not self.verbose,
            suppress_env_files=False,
            rotate_artifacts=0,
        )
        # ansible-runner hands Ansible (and writes into artifacts/<ident>/command) the whole
        # environment of this process: a REDIS_PASSWORD exported for a by-hand run would land
        # in the run folder. Ansible gets what it needs, and nothing else of ours.
        runner.config.env = job_environment(runner.config.env)
        runner.run()
        return runner


# Variables of this process that Ansible may inherit: locale, home, terminal, SSH agent,
# proxies, Ansible's own settings (but no password-like ones).
_INHERITED_ENV = re.compile(
    r"^(PATH|HOME|USER|LOGNAME|SHELL|LANG|LANGUAGE|LC_\w+|TERM|TZ|TMPDIR|SSH_AUTH_SOCK|XDG_\w+|VIRTUAL_ENV"
    r"|[Hh][Tt][Tt][Pp][Ss]?_[Pp][Rr][Oo][Xx][Yy]|[Nn][Oo]_[Pp][Rr][Oo][Xx][Yy]|ANSIBLE_\w+)$"
)
_SECRET_ENV = re.compile(r"(PASS|PASSWORD|SECRET|TOKEN|_KEY)$", re.IGNORECASE)


def job_environment(env: dict[str, str]) -> dict[str, str]:
    """The environment for ansible-playbook: what ansible-runner and the runner set, and of this
    process's own variables only those Ansible may need (never a password-like one)."""
    own = os.environ
    return {
        name: value
        for name, value in env.items()
        if own.get(name) != value or (_INHERITED_ENV.match(name) and not _SECRET_ENV.search(name))
    }


def _join_errors(errors: list[tuple[str, str]]) -> str:
    """'cloud1, cloud2: <what>' for the same error on several hosts."""
    by_message: dict[str, list[str]] = {}
    for host, message in errors:
        hosts = by_message.setdefault(message, [])
        if host not in hosts:
            hosts.append(host)
    return "; ".join(f"{', '.join(hosts)}: {message}" for message, hosts in by_message.items())


def _stdout_tail(result: Any) -> str:
    try:
        lines = [line for line in result.stdout.read().splitlines() if line.strip()]
    except Exception:  # artifacts may be missing after a crash of ansible itself
        return ""
    for index, line in enumerate(lines):
        if "ERROR" in line:  # Ansible's own error, with the file it is about on the next line
            origin = next((o.strip() for o in lines[index + 1 : index + 3] if o.strip().startswith("Origin:")), "")
            return " ".join(f"{line} {origin}".split())[:400]
    return " ".join(lines[-1].split())[:400] if lines else ""


# -- dispatch progress straight from Redis ------------------------------------------------


def _dispatch_counter(inventory: Inventory, run_id: str, secret_file: Path) -> Callable[[], tuple[int, int] | None]:
    """(done, failed) so far, read from the run's results stream; None when Redis is not reachable from here."""
    address = inventory.redis_address()
    state: dict[str, Any] = {"client": None, "seen": 0, "done": 0, "failed": 0}

    def count() -> tuple[int, int] | None:
        if address is None:
            return None
        import redis

        from tracekit.sched.keys import RunKeys

        try:
            if state["client"] is None:
                state["client"] = redis.Redis(
                    host=address[0], port=address[1], password=secret_file.read_text().strip(),
                    socket_connect_timeout=0.5, socket_timeout=1.0, decode_responses=True,
                )
            entries = state["client"].xrange(RunKeys(run_id).results, min=f"({state['seen']}" if state["seen"] else "-")
            for entry_id, fields in entries:
                state["seen"] = entry_id
                state["done" if json.loads(fields["record"]).get("state") == "done" else "failed"] += 1
            return state["done"], state["failed"]
        except Exception:  # not reachable from here (or not up yet): no bar, the phase goes on
            state["client"] = None
            return None

    return count


# -- the run ----------------------------------------------------------------------------


def _load_status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _phases_to_run(status: dict[str, Any]) -> list[str]:
    """On resume: from the first phase that did not succeed (start and run as one)."""
    phases = status.get("phases", {})
    for index, phase in enumerate(PHASES):
        if phases.get(phase, {}).get("state") != "succeeded":
            if phase in UNDONE_BY_STOP:
                index = PHASES.index(UNDONE_BY_STOP[0])
            return list(PHASES[index:])
    return []


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
) -> RunResult:
    """Run (or plan, or resume) one experiment; never raises for a failed phase (see RunResult.state)."""
    logs = Path(runfolder.logs_dir(logs_dir)).resolve()
    checkout = find_checkout()
    if resume:
        if overrides or experiment_path is not None:
            raise UsageError(
                f"--resume {resume} continues the run as it was resolved (its experiment.yaml and -e values); "
                "give no experiment file or -e with it, or start a new run"
            )
        run_id = resume
        run_dir = logs / runfolder.validate_run_id(resume)
        resolved = _read_resolved(run_dir)
        experiment_path = run_dir / "experiment.yaml"
        overrides = resolved.get("overrides", [])
        inventory = inventory or resolved.get("inventory_path")
    elif experiment_path is None:
        raise UsageError("give an experiment file (e.g. experiments/ffmpeg.yaml) or --resume RUN_ID")
    experiment = load_experiment(experiment_path, overrides)
    if inventory is None and experiment.inventory is not None:
        inventory = checkout / experiment.inventory  # the experiment names it relative to the repository
    inventory_path = Path(inventory or checkout / "inventory" / "local.yml")
    parsed_inventory = read_inventory(inventory_path)
    run_id = runfolder.validate_run_id(run_id or default_run_id(experiment))
    run_dir = logs / run_id
    status = _load_status(run_dir) if resume else {}
    phases = _phases_to_run(status) if resume else list(PHASES)
    if resume and not phases:
        return RunResult(run_id, run_dir, "succeeded", status, [f"run {run_id}: every phase already finished; nothing to resume"])
    plan = Plan(run_id, experiment, parsed_inventory, tuple(phases))
    if dry_run:
        for line in plan.lines():
            out(line)
        return RunResult(run_id, run_dir, "planned", {}, plan.lines())

    if not resume:
        if run_dir.exists() and any(run_dir.iterdir()):
            if not force:
                raise RunError(
                    f"{run_dir} already exists; resume it with '{resume_command(run_dir)}', pick another --run-id, "
                    "or replace it with --force"
                )
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(experiment_path, run_dir / "experiment.yaml")
        (run_dir / "inventory.yml").write_text(inventory_without_secrets(inventory_path))
        _write_json(
            run_dir / "resolved.json",
            {
                "run_id": run_id,
                "experiment": experiment.as_dict(),
                "overrides": list(overrides or []),
                "inventory_path": str(parsed_inventory.path),
                "tasks": task_count(experiment),
            },
        )
        status = {"run_id": run_id, "state": "running", "phases": {p: {"state": "pending"} for p in PHASES}}
        _write_json(
            run_dir / MANIFEST_FILE,
            {"run_id": run_id, "start": _now(), "tags": experiment.tags, "versions": _versions()},
        )
    status["state"] = "running"
    status.setdefault("attempts", []).append({"start": _now(), "phases": phases})
    attempt = len(status["attempts"])
    if resume and "start" in phases:
        _archive_attempt(run_dir, attempt - 1)
    _write_json(run_dir / STATUS_FILE, status)

    secret_file = _secret_file(logs, run_id)
    progress = progress or make_progress(PHASES, verbose)
    with progress, _Interrupt(progress) as interrupt:
        progress.say(f"run {run_id} -> {run_dir}")
        try:
            wheelhouse = build_wheelhouse(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tracekit" / "wheelhouse")
        except TracekitError as exc:
            status["state"] = "failed"
            status["error"] = str(exc)
            _write_json(run_dir / STATUS_FILE, status)
            raise
        variables = extravars(experiment, run_id, run_dir, wheelhouse, secret_file, sys.executable, parsed_inventory)
        variables["tracekit_run_attempt"] = attempt
        runner = PhaseRunner(run_dir, parsed_inventory, variables, progress, interrupt, verbose, limit)
        counter = _dispatch_counter(parsed_inventory, run_id, secret_file)
        total = task_count(experiment)

        def tick() -> None:
            counts = counter()
            if counts is not None:
                progress.task_counts(counts[0], counts[1], total)

        started_any = False
        outcomes: dict[str, PhaseOutcome] = {}
        status_errors: list[str] = []

        def save_status() -> None:
            """Write status.json; a failure (a full disk) is noted, never allowed to stop the cleanup."""
            try:
                _write_json(run_dir / STATUS_FILE, status)
            except OSError as exc:
                if not status_errors:
                    progress.say(f"cannot write {run_dir / STATUS_FILE} ({exc.strerror or exc}); "
                                 "stopping and fetching go on")  # fmt: skip
                status_errors.append(f"{run_dir / STATUS_FILE}: {exc.strerror or exc}")

        def verdict() -> str:
            """The run's state so far: the first phase that did not succeed decides."""
            state = next((o.state for o in outcomes.values() if o.state != "succeeded"), "succeeded")
            return "interrupted" if state == "succeeded" and interrupt.requested else state

        def begin(phase: str) -> None:
            nonlocal started_any
            # Stop and fetch are never cancelled: a signal meanwhile is only noted.
            interrupt.cleaning = phase in ALWAYS_AFTER_START
            started_any = started_any or phase in UNDONE_BY_STOP
            _set_phase(status, phase, state="running", start=_now(), end=None, error=None)
            save_status()
            progress.phase_started(phase)

        def end(phase: str, outcome: PhaseOutcome) -> None:
            if phase == "run":
                tick()
            outcomes[phase] = outcome
            _set_phase(status, phase, state=outcome.state, end=_now(), error=outcome.error, hosts=outcome.hosts)
            save_status()
            progress.phase_finished(phase, outcome.state, outcome.error)

        try:
            # Every phase in one ansible-playbook call: it ends where a host fails or at a signal.
            runner.run(phases, begin, end, tick)
            # Then what the call did not reach, or stop and fetch again where it cut them short,
            # one phase per call (after a failure only stop and fetch run).
            for phase in phases:
                done = outcomes.get(phase)
                if done is not None and (done.state == "succeeded" or phase not in ALWAYS_AFTER_START):
                    continue
                final = verdict()
                if final != "succeeded" and (phase not in ALWAYS_AFTER_START or not started_any):
                    reason = f"an earlier phase {final}" if phase not in ALWAYS_AFTER_START else "nothing was started"
                    _set_phase(status, phase, state="skipped", reason=reason)
                    progress.phase_finished(phase, "skipped")
                    continue
                runner.run([phase], begin, end, tick)
        except BaseException:
            # Whatever broke here, what was started is stopped and what was collected fetched.
            if started_any:
                _stop_and_fetch_after_a_crash(runner, outcomes, begin, end)
            raise
        final = verdict()
        interrupt.cleaning = True

    try:
        manifest = _finish_manifest(run_dir)
    except OSError as exc:
        manifest = {}
        status_errors.append(f"{run_dir / MANIFEST_FILE}: {exc.strerror or exc}")
    if status_errors:  # the run's own record is incomplete: not a run to trust
        final = "failed"
        status["error"] = f"could not be written: {status_errors[0]}"
    status["state"] = final
    status["end"] = _now()
    save_status()
    if final == "succeeded":
        secret_file.unlink(missing_ok=True)
    summary = summarize(run_dir, status, manifest)
    return RunResult(run_id, run_dir, final, status, summary)


def _stop_and_fetch_after_a_crash(
    runner: PhaseRunner,
    outcomes: dict[str, PhaseOutcome],
    begin: Callable[[str], None],
    end: Callable[[str, PhaseOutcome], None],
) -> None:
    """Stop and fetch (those that did not succeed yet), each on its own; the error that got here is the one reported."""
    for phase in ALWAYS_AFTER_START:
        if outcomes.get(phase) is not None and outcomes[phase].state == "succeeded":
            continue
        try:
            runner.run([phase], begin, end)
        except Exception:  # noqa: BLE001 - the first error is re-raised by the caller
            pass


def _archive_attempt(run_dir: Path, number: int) -> None:
    """Before start and run are done again: keep what the earlier attempt collected under attempts/<n>/.

    The trace is then the resumed attempt's alone (the same tasks run again);
    nodes keep their copy as logs/<RUN_ID>.attempt<n>/ (playbooks/start.yml).
    """
    kept = run_dir / "attempts" / str(number)
    for name in ("nodes", "cctf", "opendc"):
        if (run_dir / name).exists():
            kept.mkdir(parents=True, exist_ok=True)
            os.replace(run_dir / name, kept / name)


def _read_resolved(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "resolved.json").read_text())
    except FileNotFoundError:
        raise RunError(f"{run_dir}: no resolved.json, so not a tracekit-run folder; check the RUN_ID and --logs-dir") from None
    except ValueError as exc:
        raise RunError(f"{run_dir}/resolved.json: not valid JSON ({exc})") from None


def _set_phase(status: dict[str, Any], phase: str, **values: Any) -> None:
    record = status.setdefault("phases", {}).setdefault(phase, {})
    record.update(values)
    if record.get("start") and record.get("end"):
        start = dt.datetime.fromisoformat(record["start"])
        end = dt.datetime.fromisoformat(record["end"])
        record["duration_s"] = round((end - start).total_seconds(), 3)


def _finish_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        manifest = {}
    manifest["end"] = _now()
    nodes = {}
    for folder in sorted(p for p in (run_dir / "nodes").glob("*") if p.is_dir()):
        entry: dict[str, Any] = {}
        for name, key in ((runfolder.NODE_FACTS, "facts"), ("versions.json", "versions"), (runfolder.CLOCK, "clock")):
            try:
                entry[key] = json.loads((folder / name).read_text())
            except (OSError, ValueError):
                pass
        nodes[folder.name] = entry
    manifest["nodes"] = nodes
    _write_json(path, manifest)
    return manifest


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


def summarize(run_dir: Path, status: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """The end-of-run table: phase durations, tasks per node, makespan, where the results are."""
    lines = [f"run {status.get('run_id')}: {status.get('state')}" + (f" ({status['error']})" if status.get("error") else "")]
    for phase in PHASES:
        record = status.get("phases", {}).get(phase, {})
        duration = f"{record['duration_s']:.1f} s" if record.get("duration_s") is not None else ""
        error = f"  {record['error']}" if record.get("error") else ""
        lines.append(f"  {phase:<8} {record.get('state', 'pending'):<12} {duration:>8}{error}")
    dispatch_summary = next(iter(sorted((run_dir / "nodes").glob(f"*/{runfolder.DISPATCH_SUMMARY}"))), None)
    if dispatch_summary is not None:
        try:
            summary = json.loads(dispatch_summary.read_text())
        except ValueError:
            summary = None
        if summary:
            lines.append(
                f"  tasks: {summary['done']}/{summary['tasks']} done, {summary['failed']} failed, "
                f"{summary['timed_out']} timed out; makespan {summary['makespan_ms'] / 1000:.1f} s ({summary['policy']})"
            )
            for node, counts in sorted(summary["per_node"].items()):
                lines.append(f"    {node}: {counts['done']} done, {counts['failed']} failed, busy {counts['busy_ms'] / 1000:.1f} s")
    for summary_path in sorted((run_dir / "nodes").glob(f"*/{runfolder.LOAD_SUMMARY}")):
        try:
            load = json.loads(summary_path.read_text())
        except ValueError:
            continue
        p99 = (load.get("latency_from_intended_ms") or {}).get("p99")
        lines.append(
            f"  load: {load['requests']} requests, {load['rate'] or 0:.1f}/s sent, success {100 * (load['success_ratio'] or 0):.1f}%, "
            f"p99 latency from intended send {p99 if p99 is not None else '-'} ms, {load['dropped']} dropped, "
            f"{sum(load['errors'].values())} errors ({summary_path.relative_to(run_dir)})"
        )
    lines.append(f"  run folder: {run_dir}")
    if (run_dir / "opendc" / "tasks.parquet").exists():
        lines.append(f"  OpenDC:     {run_dir / 'opendc'} (tasks.parquet, fragments.parquet, experiment.json)")
    if (run_dir / "report" / "index.html").exists():
        lines.append(f"  report:     {run_dir / 'report' / 'index.html'}")
    if status.get("state") not in ("succeeded",):
        lines.append(f"  resume with: {resume_command(run_dir)}")
    return lines
