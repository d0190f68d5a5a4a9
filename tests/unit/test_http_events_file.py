"""The middleware's events file: one line per write, reopened after a close (a lifespan that ended early)."""

from __future__ import annotations

import json

from tracekit.adapters.http import _EventFile


def test_events_are_lines_and_a_closed_file_is_opened_again(tmp_path):
    events = _EventFile(tmp_path / "events.http.jsonl")
    events.write({"task_id": "a"})
    events.close()
    events.write({"task_id": "b"})  # before the fix: os.write(None, ...) raised TypeError
    events.close()
    events.close()
    lines = (tmp_path / "events.http.jsonl").read_text().splitlines()
    assert [json.loads(line)["task_id"] for line in lines] == ["a", "b"]


def test_an_unwritable_events_file_is_said_once_and_never_fails_the_request(tmp_path, capsys):
    events = _EventFile(tmp_path / "missing-folder" / "events.http.jsonl")
    events.write({"task_id": "a"})
    events.write({"task_id": "b"})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "request events are lost" in err[0]


def test_a_path_that_is_not_valid_unicode_is_still_written(tmp_path):
    # ASGI servers may pass undecodable path bytes on as lone surrogates; orjson refuses them.
    events = _EventFile(tmp_path / "events.http.jsonl")
    events.write({"task_id": "a", "path": "/caf\udce9"})
    events.write({"task_id": "b", "path": "/café"})
    events.close()
    lines = (tmp_path / "events.http.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["/caf\udce9", "/café"]
