"""tracekit.sched.protocol: every Redis record and key of the task queue, its round trips and refusals."""

from __future__ import annotations

import json
import re

import pytest

from tracekit.errors import ProtocolError
from tracekit.sched import protocol
from tracekit.sched.signing import TaskSigner
from tracekit.sched.protocol import (
    NewResults, RunKeys, StartRecord, TaskMessage, TerminalRecord, count_new_results, run_meta, start_record_lua,
)  # fmt: skip

SIGNER = TaskSigner(b"k" * 32)
MESSAGE = TaskMessage("t1", "a" * 32, ["gzip", "-9", "\0files\0/in/x"], 1700000000000, attempt=2, module="gzip",
                      profile="l9", env={"A": "1"}, cwd="/tmp", timeout_s=60.0, inputs=["/in/x"], size=2.5,
                      expected_ms=800.0, params={"level": 9}, nonce="n1")
START = StartRecord("t1", "cloud1", "cloud1-0", 2, 1700000000123, "1700000000100-0")
TERMINAL = TerminalRecord("t1", "cloud1", "cloud1-0", 2, "done", 0, None, 10, 25, extra={"cpu_ms": 1.5})


def test_start_record_wire_format_and_round_trip():
    assert START.entry() == {
        "record": '{"v":2,"task_id":"t1","node":"cloud1","consumer":"cloud1-0","attempt":2,"ts_start":1700000000123,'
        '"entry_id":"1700000000100-0"}'
    }
    assert StartRecord.decode(START.entry()) == START


def test_terminal_record_round_trip_keeps_its_extra_fields():
    entry = TERMINAL.entry(SIGNER)
    assert entry["sig"] == SIGNER.sign_record(entry["record"])  # signed by the worker that writes it
    decoded = TerminalRecord.decode(entry)
    assert decoded == TERMINAL
    assert decoded.as_dict() == {"v": 2, "task_id": "t1", "node": "cloud1", "consumer": "cloud1-0", "attempt": 2,
                                 "state": "done", "exit_status": 0, "reason": None, "ts_start": 10, "ts_end": 25,
                                 "cpu_ms": 1.5}  # fmt: skip
    assert json.loads(entry["record"]) == decoded.as_dict()


def test_task_message_payload_round_trip():
    # The entry of a node's queue: the payload, signed for that node. Nothing in it is a kind's own field.
    assert MESSAGE.encode(SIGNER, "cloud1") == {"task": MESSAGE.payload(), "sig": SIGNER.sign_task("cloud1", MESSAGE.payload())}
    assert TaskMessage.from_payload(MESSAGE.payload()) == MESSAGE
    assert json.loads(MESSAGE.payload())["argv"] == ["gzip", "-9", "\0files\0/in/x"]
    minimal = TaskMessage("t2", "b" * 32, ["true"], 1)
    assert TaskMessage.from_payload(minimal.payload()) == minimal


def _with(entry: dict[str, str], **members: object) -> dict[str, str]:
    [(name, payload)] = entry.items()
    return {name: json.dumps({**members, **json.loads(payload), **members})}  # "v" first, as written


# Each record's payload field alone (signatures are tracekit.sched.signing's: tests/unit/test_signing.py).
RECORDS = [(TaskMessage, {"task": MESSAGE.payload()}, "a task entry"), (StartRecord, START.entry(), "a start record"),
           (TerminalRecord, {"record": TERMINAL.encode()}, "a terminal record")]  # fmt: skip


@pytest.mark.parametrize(("kind", "entry", "what"), RECORDS)
def test_a_record_of_another_version_is_refused(kind, entry, what):
    with pytest.raises(ProtocolError, match=f"^{what} of another Tracekit version .envelope 1, this one reads 2"):
        kind.decode(_with(entry, v=1))


@pytest.mark.parametrize(("kind", "entry"), [(kind, entry) for kind, entry, _what in RECORDS])
def test_an_unversioned_envelope_is_refused(kind, entry):
    [(name, payload)] = entry.items()
    unversioned = {k: v for k, v in json.loads(payload).items() if k != "v"}
    with pytest.raises(ProtocolError, match="envelope None"):
        kind.decode({name: json.dumps(unversioned)})


@pytest.mark.parametrize(("kind", "entry", "what"), RECORDS)
def test_a_malformed_record_is_refused(kind, entry, what):
    [(name, payload)] = entry.items()
    with pytest.raises(ProtocolError, match=f"^{what} without its '{name}' field"):
        kind.decode({"other": payload})
    with pytest.raises(ProtocolError, match=f"^{what} that is not a JSON object"):
        kind.decode({name: "[1, 2]"})
    with pytest.raises(ProtocolError, match=f"^{what} this version cannot read"):
        kind.decode({name: json.dumps({"v": 2, "task_id": "t1"})})  # members missing


def test_an_unknown_task_member_is_refused():
    with pytest.raises(ProtocolError, match="a task entry this version cannot read"):
        TaskMessage.decode(_with({"task": MESSAGE.payload()}, priority=3))


def test_key_formats():
    keys = RunKeys("r1")
    assert (keys.meta, keys.queue("cloud1"), keys.starts, keys.results, keys.pattern) == (
        "tk:r1:meta", "tk:r1:queue:cloud1", "tk:r1:starts", "tk:r1:results", "tk:r1:*"
    )  # fmt: skip
    assert keys.heartbeat("cloud1", "cloud1-0") == "tk:r1:heartbeat:cloud1:cloud1-0"
    assert keys.heartbeats == "tk:r1:heartbeat:*"
    assert keys.heartbeat_node(keys.heartbeat("cloud1", "odd:consumer")) == "cloud1"
    with pytest.raises(ProtocolError, match="not a heartbeat key of run r1"):
        keys.heartbeat_node(RunKeys("r2").heartbeat("cloud1", "cloud1-0"))


def test_run_meta_is_versioned():
    assert run_meta("r1", "lpt") == {"v": "2", "run_id": "r1", "policy": "lpt"}


def test_the_lua_start_record_writes_the_bytes_of_start_record_encode():
    # Each field's Lua expression here is a placeholder; evaluate the concatenation with their JSON texts.
    values = {"task_id": '"t1"', "node": '"cloud1"', "consumer": '"cloud1-0"', "attempt": "2",
              "ts_start": "1700000000123", "entry_id": '"1700000000100-0"'}  # fmt: skip
    expression = start_record_lua(**{name: f"X_{name}" for name in values})
    text = ""
    for part in expression.split(" .. "):
        literal = re.fullmatch(r"'(.*)'", part)
        text += literal.group(1) if literal else values[re.fullmatch(r"\(X_(\w+)\)", part).group(1)]
    assert text == START.encode()
    with pytest.raises(TypeError, match="needs exactly the fields"):
        start_record_lua(task_id="x")


class FakeResults:
    """The XRANGE of a results stream (ids ``<ms>-0``), as a client with decode_responses answers it."""

    def __init__(self, states: list[str]):
        self.key = RunKeys("r1").results
        self.entries = [(f"{ms}-0", TerminalRecord(f"t{ms}", "n", "n-0", 1, state, 0, None, 1, 2).entry(SIGNER))
                        for ms, state in enumerate(states, start=1)]  # fmt: skip

    def xrange(self, key: str, min: str = "-", max: str = "+", count: int | None = None):  # noqa: A002 - redis-py's name
        assert key == self.key and max == "+"
        after = 0 if min == "-" else int(min.lstrip("(").split("-")[0])
        return [e for e in self.entries if int(e[0].split("-")[0]) > after][:count]


def test_count_new_results_counts_what_came_after_the_last_id(monkeypatch):
    monkeypatch.setattr(protocol, "RESULTS_PAGE", 2)  # more results than one page
    client = FakeResults(["done", "failed", "done", "done", "failed"])
    assert count_new_results(client, "r1") == NewResults(done=3, failed=2, last_id="5-0")
    assert count_new_results(client, "r1", "3-0") == (1, 1, "5-0")
    assert count_new_results(client, "r1", "5-0") == (0, 0, "5-0")
    assert count_new_results(FakeResults([]), "r1") == (0, 0, "0")


def test_count_new_results_refuses_a_record_of_another_version():
    client = FakeResults(["done"])
    client.entries = [(entry_id, _with({"record": entry["record"]}, v=1)) for entry_id, entry in client.entries]
    with pytest.raises(ProtocolError, match="another Tracekit version"):
        count_new_results(client, "r1")
