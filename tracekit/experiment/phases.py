"""Phases through ansible-runner: one call of one or several phases -> each phase's outcome, from the call's events.

input:  the phases to run, the run's inventory and variables; ansible-runner's
        events (playbook_on_play_start, runner_on_*, and the text of each)
output: a PhaseOutcome per phase entered (state, each host's state, what
        failed); the artifacts ansible-runner leaves in the run's ansible/

PhaseFollower is fed the events and knows nothing of Ansible: which phase is
running comes from the play that starts (playbooks/<phase>.yml's play names),
a host's failure from the event's result (res.msg, stderr, stdout, rc), and
Ansible's own error (a playbook it cannot load) from the text of the events
of a call in which no host failed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracekit.detach import end_grandchildren
from tracekit.experiment.render import PHASES, RELEASE, Inventory, extravars_yaml, play_phases
from tracekit.experiment.wheelhouse import find_checkout

HostEvent = Callable[..., None]  # Progress.host_event(host, task, state, detail=None)
# Calls that must run whatever the run folder's disk holds: they stop what was started, free the nodes.
CLEANUP_PHASES = {"stop", "fetch", RELEASE}


@dataclass
class PhaseOutcome:
    state: str  # succeeded, failed, interrupted
    hosts: dict[str, dict[str, Any]]  # host -> {"state": ok|failed|unreachable, "error": "<task>: <what>" | None}
    error: str | None


# A module's interpreter that could not be run (shell: not found, not executable).
INTERPRETER_MISSING_RC = (126, 127)
# What the ssh client adds to a module's stderr on its own account (a new host key, a closed connection).
SSH_CLIENT_NOISE = re.compile(r"^(Warning: Permanently added .* to the list of known hosts\.|Shared connection to \S+ closed\.)$")


def describe_module_failure(res: dict[str, Any]) -> str | None:
    """A module that did not run on the node (no result came back: its interpreter is missing or broken,
    it crashed): its own words from module_stderr / module_stdout, and what to do; None for a module that
    ran and said why it failed."""
    output = (res.get("module_stderr") or "").strip() or (res.get("module_stdout") or "").strip()
    if not output:
        return None
    lines = [line.strip() for line in output.splitlines() if line.strip() and not SSH_CLIENT_NOISE.match(line.strip())]
    if not lines:
        return None
    if res.get("rc") in INTERPRETER_MISSING_RC:
        # e.g. a pyenv shim first on the login PATH: 'pyenv: python3.13: command not found'
        return (f"the node's Python for Ansible does not run ({lines[0]}; exit status {res['rc']}): set "
                "ansible_python_interpreter for this host in the inventory to a Python 3 it has (e.g. /usr/bin/python3)")
    # A traceback's last line is the error (a Python too old for Ansible's modules: a SyntaxError).
    return f"{res.get('msg') or 'the module failed'}: {lines[-1]}"


def describe_failure(event: dict[str, Any]) -> str:
    """One line from a failed or unreachable host's result: its message, its stderr, its stdout and rc."""
    res = event.get("event_data", {}).get("res") or {}
    module_failure = describe_module_failure(res)
    if module_failure is not None:
        return one_line(module_failure)
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
    return one_line(message) or "failed"


# A message's end says what to do (tracekit's errors end so): a long one loses its middle, not its end.
ONE_LINE_MAX = 1000


def one_line(text: str, limit: int = ONE_LINE_MAX) -> str:
    """``text`` on one line, at most ``limit`` characters, its middle elided when longer."""
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    half = (limit - 3) // 2
    return f"{line[:half]} … {line[len(line) - half:]}"


def join_errors(errors: list[tuple[str, str]]) -> str:
    """'cloud1, cloud2: <what>' for the same error on several hosts."""
    by_message: dict[str, list[str]] = {}
    for host, message in errors:
        hosts = by_message.setdefault(message, [])
        if host not in hosts:
            hosts.append(host)
    return "; ".join(f"{', '.join(hosts)}: {message}" for message, hosts in by_message.items())


class AnsibleOutput:
    """What ansible-playbook said, kept from the events' text: its first ERROR (with the Origin: after it) and its last line.

    The words for a call that failed with no host failing (a playbook or role Ansible could not load).
    """

    def __init__(self) -> None:
        self.error: list[str] = []  # the first ERROR line and the two lines after it
        self.last = ""

    def add(self, text: str) -> None:
        for line in text.splitlines():
            if not line.strip():
                continue
            self.last = line
            if (self.error and len(self.error) < 3) or (not self.error and "ERROR" in line):
                self.error.append(line)

    def summary(self) -> str:
        if self.error:
            origin = next((o.strip() for o in self.error[1:] if o.strip().startswith("Origin:")), "")
            return one_line(f"{self.error[0]} {origin}")
        return one_line(self.last)


class PhaseFollower:
    """Follows one call of ``phases`` through its events; ``outcomes`` holds each phase entered.

    on_begin(phase) when a phase's first play starts (the first phase: when
    the call starts, ansible-playbook's start-up counting for it);
    on_end(phase, outcome) when the next phase begins or the call ends.
    ``keep_results_of``: a task whose module result each host's outcome keeps (as "result").
    """

    def __init__(
        self,
        phases: Sequence[str],
        phase_of_play: dict[str, str],
        host_event: HostEvent,
        on_begin: Callable[[str], None],
        on_end: Callable[[str, PhaseOutcome], None],
        keep_results_of: str | None = None,
    ):
        self.phases = list(phases)
        self.keep_results_of = keep_results_of
        self.phase_of_play = phase_of_play
        self.host_event = host_event
        self.on_begin = on_begin
        self.on_end = on_end
        self.phase: str | None = None
        self.hosts: dict[str, dict[str, Any]] = {}
        self.errors: list[tuple[str, str]] = []
        self.following = True
        self.output = AnsibleOutput()
        self.outcomes: dict[str, PhaseOutcome] = {}

    def call_started(self) -> None:
        self._begin(self.phases[0])

    def call_broke(self, exc: BaseException) -> None:
        """ansible-runner itself broke: the phase failed (stop and fetch still run)."""
        self._finish("failed", f"ansible-runner could not run the {self.phase} phase: {exc}")

    def call_ended(self, status: str, rc: Any, interrupted: bool) -> None:
        """The call's end (ansible-runner's status and rc): the last phase entered ends with it."""
        if interrupted:
            self._finish("interrupted", "interrupted by a signal")
        elif status == "successful" and not self.errors:
            self._finish("succeeded", None)
        else:
            if not self.errors:
                self.errors.append(("ansible-playbook", self.output.summary() or f"ended with status {status} (rc {rc})"))
            self._finish("failed", None)

    def on_event(self, event: dict[str, Any]) -> bool:
        """ansible-runner's event_handler: True keeps the event in the artifacts."""
        self.output.add(event.get("stdout") or "")
        kind = event.get("event", "")
        data = event.get("event_data", {})
        if kind == "playbook_on_play_start":
            self._play_started(self.phase_of_play.get(data.get("play", "")))
        elif data.get("host") and kind.startswith("runner_on_") and self.following:
            self._host_event(kind, data["host"], data.get("task", ""), event)
        return True

    def _play_started(self, phase: str | None) -> None:
        # Plays of phases not asked for (--resume) still check their roles' arguments (tagged 'always'): not followed.
        self.following = phase in self.phases
        # After a failure the call may go on through plays left without hosts
        # (Ansible miscounts unreachable hosts); those phases did not run.
        if phase in self.phases and phase != self.phase and not self.errors:
            self._begin(phase)

    def _host_event(self, kind: str, host: str, task: str, event: dict[str, Any]) -> None:
        data = event.get("event_data", {})
        entry = self.hosts.setdefault(host, {"state": "ok", "error": None})
        if task == self.keep_results_of and kind in ("runner_on_ok", "runner_on_failed"):
            entry["result"] = data.get("res") or {}
        if kind == "runner_on_start":
            self.host_event(host, task, "running")
        elif kind == "runner_on_unreachable":
            detail = describe_failure(event)
            entry.update(state="unreachable", error=f"{task}: {detail}")
            self.errors.append((host, f"unreachable: {detail}"))
            self.host_event(host, task, "unreachable", detail)
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            detail = describe_failure(event)
            entry.update(state="failed", error=f"{task}: {detail}")
            self.errors.append((host, f"{task}: {detail}"))
            self.host_event(host, task, "failed", detail)
        elif kind == "runner_on_ok":
            self.host_event(host, task, "changed" if (data.get("res") or {}).get("changed") else "ok")

    def _begin(self, phase: str) -> None:
        if self.phase is not None:  # the call went on without a failure: the phase before ended well
            self._finish("succeeded", None)
        self.phase, self.hosts, self.errors = phase, {}, []
        self.on_begin(phase)

    def _finish(self, state: str, error: str | None) -> None:
        if self.errors and state != "interrupted":
            state, error = "failed", join_errors(self.errors)
        self.outcomes[self.phase] = PhaseOutcome(state, self.hosts, error)
        self.on_end(self.phase, self.outcomes[self.phase])


# -- the call itself --------------------------------------------------------------------------


class PhaseRunner:
    """Runs phases through ansible-runner, each call followed by a PhaseFollower.

    Several phases go in one call of playbooks/experiment.yml (tagged) with
    any_errors_fatal, so the call ends in the phase where a host failed; one
    phase goes alone through playbooks/<phase>.yml without it, so a host that
    fails does not keep the others from stopping or being fetched.
    """

    def __init__(
        self,
        private_data_dir: Path,
        inventory: Inventory,
        variables: dict[str, Any],
        host_event: HostEvent,
        cancelled: Callable[[], bool],
        verbose: bool,
        limit: str | None,
        say: Callable[[str], None] = lambda _text: None,
        keep_results_of: str | None = None,
    ):
        self.checkout = find_checkout()
        self.keep_results_of = keep_results_of
        self.say = say
        self.phase_of_play = play_phases(self.checkout / "playbooks")
        self.private_data_dir = private_data_dir
        self.inventory = inventory
        self.variables = variables
        self.host_event = host_event
        self.cancelled = cancelled
        self.verbose = verbose
        self.limit = limit
        private_data_dir.mkdir(exist_ok=True)
        artifacts = private_data_dir / "artifacts"
        self.count = len(list(artifacts.glob("*"))) if artifacts.exists() else 0

    def run(
        self,
        phases: list[str],
        on_begin: Callable[[str], None],
        on_end: Callable[[str, PhaseOutcome], None],
        on_tick: Callable[[], None] | None = None,
        also: dict[str, Any] | None = None,
    ) -> dict[str, PhaseOutcome]:
        """Run the phases (in order) in one call; on_begin/on_end for each phase entered; the outcomes of those.

        on_tick about once a second during the run phase (the dispatch's counts); ``also``: variables
        for this call only.
        """
        variables = {**self.variables, **(also or {})}
        follower = PhaseFollower(phases, self.phase_of_play, self.host_event, on_begin, on_end, self.keep_results_of)
        last_tick = [0.0]

        ended = [False]

        def cancel() -> bool:
            if on_tick is not None and follower.phase == "run" and time.monotonic() - last_tick[0] >= 1.0:
                last_tick[0] = time.monotonic()
                on_tick()
            if self.cancelled() and not ended[0]:
                # Before ansible-runner kills ansible-playbook's process group: what its modules started
                # runs in sessions of their own (a clip generator and its ffmpeg, a dispatcher).
                ended[0] = True
                end_grandchildren()
            return self.cancelled()

        self.count += 1
        follower.call_started()
        try:
            try:
                result = self._ansible(phases, follower.on_event, cancel, self.private_data_dir, variables)
            except OSError as exc:
                if exc.errno != errno.ENOSPC or not set(phases) <= CLEANUP_PHASES:
                    raise
                # The run folder's disk is full: what was started is stopped all the same, ansible-runner
                # writing its artifacts elsewhere (fetch then fails where it writes: the data stays on the nodes).
                elsewhere = Path(tempfile.mkdtemp(prefix=f"tracekit-{self.private_data_dir.parent.name}-"))
                self.say(f"{phases[0]}: the run folder's disk is full; ansible-runner's files of this call go to {elsewhere}")
                result = self._ansible(phases, follower.on_event, cancel, elsewhere, variables)
        except Exception as exc:  # ansible-runner itself broke: the phase failed, stop and fetch still run
            follower.call_broke(exc)
            return follower.outcomes
        follower.call_ended(result.status, result.rc, result.status == "canceled" or self.cancelled())
        return follower.outcomes

    def _ansible(self, phases: list[str], on_event: Callable[[dict[str, Any]], bool], cancel: Callable[[], bool],
                 private_data_dir: Path, variables: dict[str, Any]) -> Any:  # fmt: skip
        from ansible_runner.interface import init_runner

        together = len(phases) > 1
        write_extravars(private_data_dir, variables)
        write_runner_settings(private_data_dir)
        runner = init_runner(
            private_data_dir=str(private_data_dir),
            project_dir=str(self.checkout / "playbooks"),
            # One phase alone: only its own playbook's roles are loaded and their arguments checked.
            playbook="experiment.yml" if together else f"{phases[0]}.yml",
            tags=",".join(phases) if together and tuple(phases) != PHASES else None,
            inventory=str(self.inventory.path),
            limit=self.limit,
            ident=f"{self.count:02d}-{phases[0]}" + (f"-{phases[-1]}" if together else ""),
            envvars=self._envvars(together),
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

    def _envvars(self, together: bool) -> dict[str, str]:
        return {
            "ANSIBLE_CONFIG": str(self.checkout / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(self.checkout / "roles"),
            "ANSIBLE_NOCOLOR": "1",
            # A host failing ends a call of several phases (the runner then stops what
            # started); one phase alone (stop, fetch) goes on with the other hosts.
            "ANSIBLE_ANY_ERRORS_FATAL": "True" if together else "False",
            # The ansible-playbook installed beside this Python (the venv need not be on PATH).
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }


# How often ansible-runner asks whether to cancel (and tracekit-run counts the dispatch's tasks): its
# default, 5 s, let a Ctrl-C or a hangup take up to 5 s to act, in which the phase could end as if none came.
CANCEL_POLL_S = 0.5


def write_runner_settings(private_data_dir: Path) -> Path:
    """ansible-runner's env/settings: it reads them from there only (a settings dict given to it is
    dropped when the file is absent)."""
    path = private_data_dir / "env" / "settings"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pexpect_timeout": CANCEL_POLL_S}) + "\n")
    return path


def write_extravars(private_data_dir: Path, variables: dict[str, Any]) -> Path:
    """The variables as env/extravars of ansible-runner's private data dir, every string !unsafe.

    ansible-runner hands that file to ansible-playbook as ``-e @env/extravars``.
    Given a dict instead, it writes JSON there (strings Ansible trusts as
    templates) and, once the file exists (--resume), puts the dict on the
    command line. Written anew for every call: an attempt's own values.
    """
    env = private_data_dir / "env"
    env.mkdir(parents=True, exist_ok=True)
    path = env / "extravars"
    path.write_text(extravars_yaml(variables))
    return path


# Variables of this process that Ansible may inherit: locale, home, terminal, SSH agent,
# proxies, Ansible's own settings (but no password-like ones).
_INHERITED_ENV = re.compile(
    r"^(PATH|HOME|USER|LOGNAME|SHELL|LANG|LANGUAGE|LC_\w+|TERM|TZ|TMPDIR|SSH_AUTH_SOCK|XDG_\w+|VIRTUAL_ENV"
    r"|[Hh][Tt][Tt][Pp][Ss]?_[Pp][Rr][Oo][Xx][Yy]|[Nn][Oo]_[Pp][Rr][Oo][Xx][Yy]|ANSIBLE_\w+)$"
)
_SECRET_ENV = re.compile(r"(PASS|PASSWORD|SECRET|TOKEN|_KEY)$", re.IGNORECASE)
# Ansible settings of the shell that tracekit-run does not pass on: kept module files hold their arguments.
_REFUSED_ENV = frozenset({"ANSIBLE_KEEP_REMOTE_FILES"})


def job_environment(env: dict[str, str]) -> dict[str, str]:
    """The environment for ansible-playbook: what ansible-runner and the runner set, and of this
    process's own variables only those Ansible may need (never a password-like one)."""
    own = os.environ
    return {
        name: value
        for name, value in env.items()
        if name not in _REFUSED_ENV
        and (own.get(name) != value or (_INHERITED_ENV.match(name) and not _SECRET_ENV.search(name)))
    }
