import math

import pytest

from tracekit.jsonl import BadLine, LineWriter, append_line, read_jsonl


def test_round_trip(tmp_path):
    path = tmp_path / "x.jsonl"
    records = [{"a": 1, "b": "two", "c": [1.5, None]}, {"a": 2, "nested": {"k": True}}]
    with LineWriter(path) as writer:
        for record in records:
            writer.write(record)
    append_line(path, {"a": 3})
    assert list(read_jsonl(path)) == [*records, {"a": 3}]
    assert path.read_text().count("\n") == 3


def test_truncated_last_line_and_garbage_are_reported(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\nnot json\n[1, 2]\n{"a": 2}\n{"a": 3, "b"')
    bad: list[BadLine] = []
    assert list(read_jsonl(path, bad)) == [{"a": 1}, {"a": 2}]
    assert [(b.line_no, b.reason == "truncated last line") for b in bad] == [(2, False), (3, False), (5, True)]


def test_nan_is_refused(tmp_path):
    with pytest.raises(ValueError):
        append_line(tmp_path / "x.jsonl", {"v": math.nan})
