"""W3C traceparent rules (the specification's receiving rules, one case each)."""

from __future__ import annotations

import pytest

from tracekit.tracecontext import parse_trace_id_alias, parse_traceparent, span_for_request

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"


def test_a_valid_traceparent_is_continued():
    parent = parse_traceparent(VALID)
    assert (parent.trace_id, parent.span_id, parent.flags) == (TRACE, PARENT, 1)
    span = span_for_request([VALID], ["vendor=abc", "other=1"])
    assert (span.trace_id, span.parent_span_id, span.origin) == (TRACE, PARENT, "traceparent")
    assert len(span.span_id) == 16 and span.span_id != PARENT
    assert span.outgoing_headers() == {"traceparent": f"00-{TRACE}-{span.span_id}-01", "tracestate": "vendor=abc,other=1"}


@pytest.mark.parametrize("value", [
    f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
    f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
    f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly 55 characters
    f"00-{TRACE[:-1]}-{PARENT}-01",  # short trace id
    f"00-{TRACE.upper()}-{PARENT}-01",  # ids are lowercase hex
    f"00-{TRACE}-{PARENT[:-1]}g-01",  # not hex
    f"00-{TRACE}-{PARENT}-0x",  # bad flags
    f"cc-{TRACE}-{PARENT}-01x",  # a later version: more fields only after a '-'
    f"0-{TRACE}-{PARENT}-001",  # field lengths
    "", "garbage",
])  # fmt: skip
def test_an_invalid_traceparent_starts_a_new_trace(value):
    assert parse_traceparent(value) is None
    span = span_for_request([value], ["vendor=abc"])
    assert span.trace_id != TRACE and span.parent_span_id is None and span.origin == "new"
    assert span.tracestate is None  # tracestate means nothing without its parent
    assert len(span.trace_id) == 32 and span.trace_id.strip("0")


def test_a_later_version_with_more_fields_is_read_by_its_known_fields():
    parent = parse_traceparent(f"cc-{TRACE}-{PARENT}-01-whatever-comes")
    assert (parent.trace_id, parent.span_id) == (TRACE, PARENT)


def test_two_traceparent_headers_are_invalid():
    assert span_for_request([VALID, VALID], []).trace_id != TRACE


def test_x_trace_id_is_an_alias_when_there_is_no_valid_traceparent():
    assert parse_trace_id_alias(TRACE.upper()) == TRACE
    assert parse_trace_id_alias("not-a-trace-id") is None and parse_trace_id_alias("0" * 32) is None
    span = span_for_request([], [], TRACE)
    assert (span.trace_id, span.parent_span_id, span.origin) == (TRACE, None, "x-trace-id")
    other = "a" * 32
    assert span_for_request([VALID], [], other).trace_id == TRACE  # traceparent wins
