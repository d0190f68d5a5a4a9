import json
import math

import pytest

from tracekit.jsonl import BadLine, LineWriter, append_line, printable, read_jsonl


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


def test_the_reader_gives_what_json_gives_for_lines_orjson_reads_differently(tmp_path):
    # orjson reads the lines; NaN, lone surrogates and garbled lines it refuses go to json (a garbled
    # line is reported with json's own reason), and a file with an integer past 64 bits, which
    # orjson would read as a float, is read by json.
    lines = ['{"v": NaN}', '{"v": "\\ud800"}', '{"v": 1.5e300}', '{"v": 1e400}', '{"v": 1, "v": 2}', '{"v": 1,}']
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(lines) + "\n")
    bad: list[BadLine] = []
    records = list(read_jsonl(path, bad))
    expected = [json.loads(line) for line in lines[:-1]]
    assert math.isnan(records[0]["v"]) and records[1:] == expected[1:] == [{"v": "\ud800"}, {"v": 1.5e300}, {"v": math.inf}, {"v": 2}]
    with pytest.raises(ValueError) as refused:
        json.loads(lines[-1])
    assert [(b.line_no, b.reason) for b in bad] == [(6, str(refused.value))]
    big = tmp_path / "big.jsonl"
    big.write_text('{"v": 18446744073709551616}\n{"v": -9223372036854775809}\n')
    assert [r["v"] for r in read_jsonl(big)] == [18446744073709551616, -9223372036854775809]
    # Past 64 bits wherever a number can stand (each file has only that one).
    for text in ('{"v":18446744073709551617}', '{"v": [18446744073709551617]}', '{"v": [1,18446744073709551617]}',
                 '{"v": [1,  -18446744073709551617]}'):  # fmt: skip
        one = tmp_path / "one.jsonl"
        one.write_text(text + "\n")
        assert list(read_jsonl(one)) == [json.loads(text)], text


def test_digits_inside_strings_keep_the_fast_reader(tmp_path, monkeypatch):
    # Hex trace ids hold 19 digits in a row now and then: that is no reason to read the whole
    # file with json (5x slower), which the first files of a real run all were.
    path = tmp_path / "events.jsonl"
    records = [{"trace_id": "51052ae78591234567890123456789fc", "argv": ["-t", "12345678901234567890"]}, {"n": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))

    def refuse(raw):
        raise AssertionError("read with json")

    monkeypatch.setattr("tracekit.jsonl._json_loads", refuse)
    assert list(read_jsonl(path)) == records


def test_printable_escapes_control_characters_and_bytes_that_were_not_utf8():
    text = "ok é 日本 \x1b[31mred\x07\x00 \x85 \udcff\r\nnext\tcol"
    assert printable(text) == "ok é 日本 \\x1b[31mred\\x07\\x00 \\x85 \\udcff\\r\\nnext\\tcol"
    assert printable("a\nb\tc", keep_newlines=True) == "a\nb\tc"
    assert printable("plain text, nothing to escape") == "plain text, nothing to escape"


def test_a_line_of_bytes_that_are_not_utf8_is_reported_not_raised(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\xff\xfe\x1b garbage\n{"a": 2}\n')
    bad: list[BadLine] = []
    assert list(read_jsonl(path, bad)) == [{"a": 1}, {"a": 2}]
    assert [b.line_no for b in bad] == [2]
