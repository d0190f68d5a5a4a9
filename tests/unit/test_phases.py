"""The phase follower fed ansible-runner events by hand: phases entered, host states, what failed (no Ansible)."""

from __future__ import annotations

from typing import Any

from tracekit.experiment.phases import AnsibleOutput, PhaseFollower, PhaseOutcome

PLAYS = {"Prepare the nodes": "prepare", "Start the services": "start", "Dispatch": "run", "Stop": "stop"}


def play(name: str) -> dict[str, Any]:
    return {"event": "playbook_on_play_start", "event_data": {"play": name}, "stdout": f"PLAY [{name}] ***"}


def host(kind: str, name: str, task: str, ignore_errors: bool = False, **res: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"host": name, "task": task, "ignore_errors": ignore_errors}
    if res:
        data["res"] = res
    return {"event": kind, "event_data": data, "stdout": ""}


class Recorder:
    def __init__(self, phases: list[str]):
        self.calls: list[tuple] = []
        self.follower = PhaseFollower(phases, PLAYS, self.host_event, self.begin, self.end)

    def host_event(self, *args: Any) -> None:
        self.calls.append(("host", *args))

    def begin(self, phase: str) -> None:
        self.calls.append(("begin", phase))

    def end(self, phase: str, outcome: PhaseOutcome) -> None:
        self.calls.append(("end", phase, outcome.state))

    def feed(self, *events: dict[str, Any]) -> Recorder:
        self.follower.call_started()
        for event in events:
            assert self.follower.on_event(event) is True  # every event stays in the artifacts
        return self


def test_phases_follow_their_plays_and_a_failed_host_ends_the_phase_failed():
    r = Recorder(["prepare", "start", "run"]).feed(
        play("Prepare the nodes"),
        host("runner_on_start", "cloud1", "Install"),
        host("runner_on_ok", "cloud1", "Install", changed=True),
        play("Start the services"),
        host("runner_on_ok", "cloud1", "Start Redis"),
        host("runner_on_failed", "cloud2", "Start the worker", msg="boom"),
        host("runner_on_failed", "cloud1", "Ignored", msg="no matter", ignore_errors=True),
        play("Dispatch"),  # after a failure: plays left without hosts are not entered
    )
    r.follower.call_ended("failed", 2, interrupted=False)
    outcomes = r.follower.outcomes
    assert list(outcomes) == ["prepare", "start"]
    assert outcomes["prepare"] == PhaseOutcome("succeeded", {"cloud1": {"state": "ok", "error": None}}, None)
    assert outcomes["start"].state == "failed" and outcomes["start"].error == "cloud2: Start the worker: boom"
    assert outcomes["start"].hosts["cloud2"] == {"state": "failed", "error": "Start the worker: boom"}
    assert outcomes["start"].hosts["cloud1"]["state"] == "ok"
    assert [c for c in r.calls if c[0] != "host"] == [
        ("begin", "prepare"), ("end", "prepare", "succeeded"), ("begin", "start"), ("end", "start", "failed"),
    ]  # fmt: skip
    assert ("host", "cloud1", "Install", "changed") in r.calls
    assert ("host", "cloud2", "Start the worker", "failed", "boom") in r.calls


def test_unreachable_hosts_are_named_once_per_message():
    r = Recorder(["prepare"]).feed(
        play("Prepare the nodes"),
        host("runner_on_unreachable", "cloud1", "Gathering Facts", msg="ssh: connect: Connection refused"),
        host("runner_on_unreachable", "cloud2", "Gathering Facts", msg="ssh: connect: Connection refused"),
    )
    r.follower.call_ended("failed", 4, interrupted=False)
    outcome = r.follower.outcomes["prepare"]
    assert outcome.error == "cloud1, cloud2: unreachable: ssh: connect: Connection refused"
    assert outcome.hosts["cloud2"]["state"] == "unreachable"


def test_plays_of_phases_not_asked_for_are_not_followed():
    # --resume of stop: the other phases' plays only check their roles' arguments.
    r = Recorder(["stop"]).feed(
        play("Dispatch"),
        host("runner_on_failed", "cloud0", "Check the arguments", msg="not followed"),
        play("Stop"),
        host("runner_on_ok", "cloud0", "Stop Redis"),
    )
    r.follower.call_ended("successful", 0, interrupted=False)
    assert r.follower.outcomes == {"stop": PhaseOutcome("succeeded", {"cloud0": {"state": "ok", "error": None}}, None)}


def test_a_call_that_fails_with_no_host_failing_says_ansibles_own_error():
    r = Recorder(["prepare", "start"]).feed(
        {"event": "verbose", "stdout": "[ERROR]: the role 'tracekit_x' was not found in /roles"},
        {"event": "verbose", "stdout": "Origin: /playbooks/prepare.yml:5:7"},
        {"event": "verbose", "stdout": ""},
        {"event": "verbose", "stdout": "5     - tracekit_x"},
    )
    r.follower.call_ended("failed", 1, interrupted=False)
    assert r.follower.outcomes["prepare"].error == (
        "ansible-playbook: [ERROR]: the role 'tracekit_x' was not found in /roles Origin: /playbooks/prepare.yml:5:7"
    )
    silent = Recorder(["prepare"]).feed()
    silent.follower.call_ended("failed", 2, interrupted=False)
    assert silent.follower.outcomes["prepare"].error == "ansible-playbook: ended with status failed (rc 2)"


def test_an_interrupted_or_broken_call_ends_the_phase_it_was_in():
    r = Recorder(["run", "stop"]).feed(play("Dispatch"), host("runner_on_failed", "cloud0", "Run the dispatcher", msg="killed"))
    r.follower.call_ended("canceled", -15, interrupted=True)
    assert r.follower.outcomes["run"].state == "interrupted"  # not 'failed': the signal is why
    assert r.follower.outcomes["run"].error == "interrupted by a signal"
    broken = Recorder(["stop"]).feed()
    broken.follower.call_broke(RuntimeError("no ansible-playbook"))
    assert broken.follower.outcomes["stop"] == PhaseOutcome(
        "failed", {}, "ansible-runner could not run the stop phase: no ansible-playbook"
    )


def test_ansible_output_keeps_the_first_error_and_the_last_line():
    output = AnsibleOutput()
    output.add("PLAY [x] ***\r\n\r\nTASK [y] ***")
    assert output.summary() == "TASK [y] ***"
    output.add("[ERROR]: first\r\nsomething\r\nOrigin: /p.yml:1:1")
    output.add("[ERROR]: second\nOrigin: /q.yml:2:2")
    assert output.summary() == "[ERROR]: first Origin: /p.yml:1:1"
