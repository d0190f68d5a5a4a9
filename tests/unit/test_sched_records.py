"""The queue's message and record envelopes: exact wire format and round trips."""

from __future__ import annotations

import json

import pytest

from tracekit.sched.protocol import TaskMessage, TerminalRecord


def test_task_message_wire_format_and_round_trip():
    message = TaskMessage("t1", "a" * 32, ["true", "-x"], 1700000000000, attempt=2, profile="p1", size=4.5,
                          expected_ms=120.25)  # fmt: skip
    encoded = {"task": message.payload()}
    assert encoded == {
        "task": '{"v":2,"task_id":"t1","trace_id":"' + "a" * 32 + '","argv":["true","-x"],'
        '"ts_enqueue":1700000000000,"attempt":2,"module":"task","profile":"p1","env":null,"cwd":null,'
        '"timeout_s":null,"inputs":null,"outputs":null,"size":4.5,"expected_ms":120.25,"params":null,"container":null,"nonce":""}'
    }
    assert TaskMessage.decode(encoded) == message


def test_task_message_of_another_envelope_version_is_refused():
    from tracekit.errors import ProtocolError

    fields = {"task": json.dumps({**json.loads(TaskMessage("t", "0", ["true"], 0).payload()), "v": 99})}
    with pytest.raises(ProtocolError, match="another Tracekit version .envelope 99, this one reads"):
        TaskMessage.decode(fields)


def test_terminal_record_flattens_its_extra_fields():
    record = TerminalRecord("t1", "cloud1", "cloud1-0", 1, "failed", 3, "sh exit status 3", 10, 25,
                            extra={"cpu_ms": 1.5, "profile": "p1", "media_s": 0.0})  # fmt: skip
    assert record.encode() == (
        '{"v":2,"task_id":"t1","node":"cloud1","consumer":"cloud1-0","attempt":1,"state":"failed",'
        '"exit_status":3,"reason":"sh exit status 3","ts_start":10,"ts_end":25,"cpu_ms":1.5,"profile":"p1",'
        '"media_s":0.0}'
    )
    assert record.extra == {"cpu_ms": 1.5, "profile": "p1", "media_s": 0.0}  # encoding leaves the record as it was


def test_duplicate_task_ids_are_found_once_each_among_the_largest_workload():
    # The dispatcher counted each id over the whole list: 100,000 tasks (the largest a workload may have)
    # spent minutes before the first placement. Each id is counted once now.
    from tracekit.sched.dispatcher import duplicate_task_ids
    from tracekit.workloads.command import MAX_TASKS

    ids = [f"t{i:06d}" for i in range(MAX_TASKS)]
    assert duplicate_task_ids(ids) == []
    assert duplicate_task_ids([*ids, "t000007", "t000003", "t000007"]) == ["t000003", "t000007"]
