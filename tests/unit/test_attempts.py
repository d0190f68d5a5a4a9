"""The attempt planner: which phases run, what is kept aside, what follows a failure (no Ansible, no files)."""

from __future__ import annotations

import pytest

from tracekit.experiment.attempts import after_the_call, crash_cleanup, earlier_attempt_kept_aside, verdict

PHASES = ["prepare", "start", "run", "stop", "fetch", "parse"]


def test_the_earlier_attempt_is_kept_aside_only_when_start_runs_again():
    two_before = {"attempts": [{"phases": PHASES}, {"phases": PHASES[1:]}]}
    assert earlier_attempt_kept_aside(two_before, PHASES[1:], resume=True) == 2  # -> attempts/2/
    assert earlier_attempt_kept_aside(two_before, ["parse"], resume=True) is None  # the data is this attempt's too
    assert earlier_attempt_kept_aside({}, PHASES, resume=False) is None  # a new run has nothing before it
    assert earlier_attempt_kept_aside({}, PHASES, resume=True) == 0  # an unreadable status.json: all again


@pytest.mark.parametrize(
    ("states", "interrupted", "expected"),
    [
        ([], False, "succeeded"),
        (["succeeded", "succeeded"], True, "interrupted"),
        (["succeeded", "failed", "interrupted"], False, "failed"),
        (["succeeded", "interrupted", "failed"], False, "interrupted"),  # the first that did not succeed
    ],
)  # fmt: skip
def test_the_first_phase_that_did_not_succeed_decides(states, interrupted, expected):
    assert verdict(states, interrupted) == expected


@pytest.mark.parametrize(
    ("phase", "state", "run_state", "started_any", "expected"),
    [
        ("run", "succeeded", "succeeded", True, ("done", None)),
        ("run", "failed", "failed", True, ("done", None)),  # what failed is not run again in this attempt
        ("stop", "failed", "failed", True, ("run", None)),  # stop and fetch again, alone, past a failed host
        ("stop", "interrupted", "interrupted", True, ("run", None)),
        ("stop", None, "failed", True, ("run", None)),  # not reached: the call ended in run
        ("stop", None, "failed", False, ("skip", "nothing was started")),  # prepare failed
        ("parse", None, "failed", True, ("skip", "an earlier phase failed")),
        ("parse", None, "interrupted", True, ("skip", "an earlier phase interrupted")),
        ("parse", None, "succeeded", True, ("run", None)),  # the call ended before it without a failure
    ],
)  # fmt: skip
def test_after_the_call_what_is_done_run_alone_or_skipped(phase, state, run_state, started_any, expected):
    assert after_the_call(phase, state, run_state, started_any) == expected


def test_after_a_crash_stop_and_fetch_what_did_not_succeed():
    assert crash_cleanup({"run": "failed"}) == ["stop", "fetch"]
    assert crash_cleanup({"stop": "succeeded", "fetch": "failed"}) == ["fetch"]
    assert crash_cleanup({"stop": "succeeded", "fetch": "succeeded"}) == []
