"""Arrow-built JSON text is exactly what json.dumps writes."""

from __future__ import annotations

import io
import json
import random

import pyarrow as pa
import pytest

from tracekit.jsonl import dumps
from tracekit.trace.arrowjson import BackgroundWriter, float_text, json_text, object_lines, write_lines

# Whole numbers, ties at the 3rd decimal (2.675 is below it in binary, 0.0005 above),
# the edges of the fixed layout (1e-4, 1e10, 1e16), negative zero.
AWKWARD = [0.0, -0.0, 1.0, 100.0, 2.675, 0.0005, 12.3455, 1 / 3, 1e-4, 9.9e-5, 2.5e-7, 9_999_999_999.9996,
           1e10, 123_456_789_012.5, 1e16, 1.5e21, -42.0625, 5e-324]  # fmt: skip


def _random_floats(count: int) -> list[float]:
    rng = random.Random(3)
    values = []
    for _ in range(count):
        value = rng.random() * 10 ** rng.randrange(-6, 18)
        if rng.random() < 0.3:
            value = round(value, rng.randrange(0, 5))
        if rng.random() < 0.3:
            value = 100.0 * rng.randrange(0, 1000) / rng.randrange(1, 3000)
        values.append(-value if rng.random() < 0.1 else value)
    return values


@pytest.mark.parametrize("digits", [None, 0, 3])
def test_float_text_is_json_dumps_of_round(digits):
    values = [*AWKWARD, None, *_random_floats(20_000)]
    expected = [json.dumps(v if v is None or digits is None else round(v, digits)) for v in values]
    assert float_text(pa.array(values, pa.float64()), digits).to_pylist() == expected


def test_json_text_of_ints_strings_and_bools():
    assert json_text(pa.array([0, -5, 2**62, None], pa.int64())).to_pylist() == ["0", "-5", str(2**62), "null"]
    strings = ['a"b', "é\n", None, 'a"b', "/x/y"]
    assert json_text(pa.array(strings)).to_pylist() == [json.dumps(s) for s in strings]
    assert json_text(pa.array([True, None, False])).to_pylist() == ["true", "null", "false"]


def test_object_lines_match_dumps():
    rows = [{"ts_ms": 1, "node": "n1", "x": 0.5, "s": None}, {"ts_ms": 2, "node": "n1", "x": 100.0, "s": "q\""}]
    lines = object_lines([
        ("ts_ms", json_text(pa.array([1, 2]))), ("node", json.dumps("n1")),
        ("x", float_text(pa.array([0.5, 100.0]))), ("s", json_text(pa.array([None, 'q"'], pa.string()))),
    ])  # fmt: skip
    assert lines.to_pylist() == [dumps(r) + "\n" for r in rows]


def test_background_writer_keeps_order_and_reports_errors():
    out = io.BytesIO()
    writer = BackgroundWriter(depth=1)
    for k in range(20):
        writer.write_lines(pa.array([f"{k}\n", f"{k}b\n"]).slice(1), out)
    writer.close()
    assert out.getvalue() == b"".join(b"%db\n" % k for k in range(20))

    def fail() -> None:
        raise OSError("disk full")

    writer = BackgroundWriter()
    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.close()


def test_write_lines_writes_a_slice_without_its_neighbours():
    out = io.BytesIO()
    write_lines(pa.chunked_array([pa.array(["a\n", "b\n", "c\n"]).slice(1, 1), pa.array(["d\n"])]), out)
    assert out.getvalue() == b"b\nd\n"
