"""Which phases an attempt runs: a run's status (status.json) -> the phases to run, what is kept aside, what follows a failure.

input:  a status dict as status.json holds it; the phases' outcomes so far
output: the phases to run, in order; whether the earlier attempt's data goes
        to attempts/<n>/; for each phase after the first ansible-runner call:
        done, run it alone, or skip it (and why)

Pure functions: no files, no Ansible.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from tracekit.experiment.render import PHASES
from tracekit.trace.export import names as export_formats

ALWAYS_AFTER_START = ("stop", "fetch")  # run even after a failure or an interruption
UNDONE_BY_STOP = ("start", "run")  # resuming either re-runs both
TAKE_NODES = ("prepare", "start")  # each takes every node for the run (tracekit_lock); stop frees them
# An attempt's data (its exports too), moved to attempts/<n>/ when start runs again.
KEPT_ASIDE = ("nodes", "cctf", *export_formats())


def phases_to_run(status: Mapping[str, Any]) -> list[str]:
    """On resume: from the first phase that did not succeed (start and run as one)."""
    phases = status.get("phases", {})
    for index, phase in enumerate(PHASES):
        if phases.get(phase, {}).get("state") != "succeeded":
            if phase in UNDONE_BY_STOP:
                index = PHASES.index(UNDONE_BY_STOP[0])
            return list(PHASES[index:])
    return []


def left_running(status: Mapping[str, Any]) -> bool:
    """An earlier attempt entered start or run and no stop succeeded since: what it started may still run.

    Phase states are the latest of any attempt: 'pending' or 'skipped' was never entered.
    """
    phases = status.get("phases", {})
    entered = any(phases.get(p, {}).get("state", "pending") not in ("pending", "skipped") for p in UNDONE_BY_STOP)
    return entered and phases.get("stop", {}).get("state") != "succeeded"


def earlier_attempt_kept_aside(status: Mapping[str, Any], phases: Sequence[str], resume: bool) -> int | None:
    """The number of the attempt whose data goes to attempts/<n>/ before this one (None: nothing moves).

    Only when start runs again: the trace is then the new attempt's alone (the same tasks run again).
    ``status`` is the one this attempt was planned from (its own entry not yet added).
    """
    if not resume or "start" not in phases:
        return None
    return len(status.get("attempts", []))


def verdict(states: Sequence[str], interrupted: bool) -> str:
    """The run's state so far: the first phase that did not succeed decides."""
    state = next((s for s in states if s != "succeeded"), "succeeded")
    return "interrupted" if state == "succeeded" and interrupted else state


def after_the_call(phase: str, state: str | None, run_state: str, entered: Collection[str]) -> tuple[str, str | None]:
    """After the call of every phase, for each phase: ('done', None), ('run', None) alone, or ('skip', why).

    ``state`` is the phase's outcome in that call (None: not reached), ``run_state``
    the verdict so far, ``entered`` the phases this attempt entered.
    """
    if state is not None and (state == "succeeded" or phase not in ALWAYS_AFTER_START):
        return "done", None
    if run_state == "succeeded":
        return "run", None
    if phase not in ALWAYS_AFTER_START:
        return "skip", f"an earlier phase {run_state}"
    if any(p in entered for p in UNDONE_BY_STOP):
        return "run", None
    return "skip", "nothing was started"


def nodes_left_taken(entered: Collection[str], states: Mapping[str, str]) -> bool:
    """The attempt took the nodes (prepare or start entered) and no stop freed them: free them
    (playbooks/release.yml) so that another run is not refused for nothing."""
    return any(p in entered for p in TAKE_NODES) and states.get("stop") != "succeeded"


def crash_cleanup(states: Mapping[str, str], entered: Collection[str]) -> list[str]:
    """After an error of the runner itself: stop and fetch, those that did not succeed yet and are needed."""
    return [phase for phase in ALWAYS_AFTER_START
            if states.get(phase) != "succeeded" and any(p in entered for p in UNDONE_BY_STOP)]  # fmt: skip
