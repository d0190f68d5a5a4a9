"""The attempt planner: which phases run, what is kept aside, what follows a failure (no Ansible, no files)."""

from __future__ import annotations

import pytest

from tracekit.experiment.attempts import (
    after_the_call, crash_cleanup, earlier_attempt_kept_aside, left_running, nodes_left_taken, verdict,
)  # fmt: skip

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


STARTED = {"prepare", "start", "run"}


@pytest.mark.parametrize(
    ("phase", "state", "run_state", "entered", "expected"),
    [
        ("run", "succeeded", "succeeded", STARTED, ("done", None)),
        ("run", "failed", "failed", STARTED, ("done", None)),  # what failed is not run again in this attempt
        ("stop", "failed", "failed", STARTED, ("run", None)),  # stop and fetch again, alone, past a failed host
        ("stop", "interrupted", "interrupted", STARTED, ("run", None)),
        ("stop", None, "failed", STARTED, ("run", None)),  # not reached: the call ended in run
        ("stop", None, "failed", {"prepare"}, ("skip", "nothing was started")),  # prepare failed
        ("fetch", None, "failed", {"prepare"}, ("skip", "nothing was started")),
        ("parse", None, "failed", STARTED, ("skip", "an earlier phase failed")),
        ("parse", None, "interrupted", STARTED, ("skip", "an earlier phase interrupted")),
        ("parse", None, "succeeded", STARTED, ("run", None)),  # the call ended before it without a failure
    ],
)  # fmt: skip
def test_after_the_call_what_is_done_run_alone_or_skipped(phase, state, run_state, entered, expected):
    assert after_the_call(phase, state, run_state, entered) == expected


def test_after_a_crash_stop_and_fetch_what_did_not_succeed():
    assert crash_cleanup({"run": "failed"}, STARTED) == ["stop", "fetch"]
    assert crash_cleanup({"stop": "succeeded", "fetch": "failed"}, STARTED) == ["fetch"]
    assert crash_cleanup({"stop": "succeeded", "fetch": "succeeded"}, STARTED) == []
    assert crash_cleanup({"prepare": "failed"}, {"prepare"}) == []


def test_nodes_taken_and_not_freed_by_a_stop_are_freed():
    assert nodes_left_taken({"prepare"}, {"prepare": "failed"})  # prepare took them, then failed
    assert nodes_left_taken(STARTED, {"stop": "failed"})  # a host's stop failed: free what can be freed
    assert not nodes_left_taken(STARTED, {"stop": "succeeded"})  # stop freed them
    assert not nodes_left_taken(set(), {})  # nothing was entered (the wheelhouse could not be built)


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({"start": "succeeded", "run": "running", "stop": "pending"}, True),  # its tracekit-run was killed
        ({"start": "succeeded", "run": "failed", "stop": "failed"}, True),  # a node's stop failed
        ({"start": "running"}, True),
        ({"start": "succeeded", "run": "succeeded", "stop": "succeeded", "fetch": "failed"}, False),
        ({"prepare": "failed", "start": "skipped", "run": "skipped", "stop": "skipped"}, False),
        ({}, False),  # an unreadable status.json: nothing known to be running
    ],
)  # fmt: skip
def test_what_an_earlier_attempt_may_have_left_running(states, expected):
    assert left_running({"phases": {p: {"state": s} for p, s in states.items()}}) == expected
