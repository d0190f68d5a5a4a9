"""W3C Trace Context (https://www.w3.org/TR/trace-context/): ``traceparent`` in and out.

input:  the ``traceparent`` / ``tracestate`` header values of a request (and
        the ``X-Trace-Id`` alias the seed's tools sent)
output: a SpanContext: the trace this request belongs to, its own new span
        id, the caller's span id; and the headers for a call to the next hop

The receiving rules are the specification's: version ``ff`` is invalid; a
version-00 header is exactly 55 characters; a later version may be longer
only with a ``-`` after the four known fields; ids are lowercase hex of the
right length and not all zeros. An invalid or absent header starts a new
trace (and drops ``tracestate``, which is only meaningful with its parent);
it is never an error for the request.
"""

from __future__ import annotations

import os
import random
import re
import secrets
from typing import NamedTuple

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_ID_ALIAS = "x-trace-id"

_HEX = re.compile(r"^[0-9a-f]+$")
_SAMPLED = 0x01


# NamedTuples, not frozen dataclasses: made on every request, and a tuple is built in a fifth of the time.
class Parent(NamedTuple):
    """A valid incoming traceparent."""

    trace_id: str  # 32 lowercase hex digits, not all zeros
    span_id: str  # 16 lowercase hex digits, not all zeros (the caller's span)
    flags: int


def _is_id(value: str, length: int) -> bool:
    return len(value) == length and bool(_HEX.match(value)) and value.strip("0") != ""


# version-trace_id-parent_id-flags, then (a later version only) more fields after a '-'.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def parse_traceparent(value: str | None) -> Parent | None:
    """The parent a ``traceparent`` header names, or None if it is absent or invalid."""
    if value is None:
        return None
    # Optional whitespace around a header value (RFC 9110); one regex: this runs on every request.
    found = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if found is None:
        return None
    version, trace_id, span_id, flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None  # ff is invalid; version 00 has exactly 55 characters
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return Parent(trace_id, span_id, int(flags, 16))


def parse_trace_id_alias(value: str | None) -> str | None:
    """``X-Trace-Id``: a trace id (32 hex digits, any case) to continue, or None."""
    if value is None:
        return None
    value = value.strip().lower()
    return value if _is_id(value, 32) else None


class _Ids:
    """Random ids from a generator seeded by the OS once per process (a fork reseeds): no system
    call per request, and ids need to be unique, not secret."""

    def __init__(self) -> None:
        self._pid = 0
        self._random = random.Random()

    def bits(self, count: int) -> int:
        if self._pid != os.getpid():
            self._random.seed(secrets.token_bytes(32))
            self._pid = os.getpid()
        while True:
            value = self._random.getrandbits(count)
            if value:  # an all-zero id is invalid
                return value


_ids = _Ids()


def new_trace_id() -> str:
    return f"{_ids.bits(128):032x}"


def new_span_id() -> str:
    return f"{_ids.bits(64):016x}"


class SpanContext(NamedTuple):
    """The span of one request as this service handles it."""

    trace_id: str
    span_id: str
    parent_span_id: str | None  # the caller's span (None: this request starts the trace or came by X-Trace-Id)
    flags: int = _SAMPLED
    tracestate: str | None = None  # passed on unchanged
    origin: str = "new"  # traceparent | x-trace-id | new: where the trace id came from

    def traceparent(self) -> str:
        """The ``traceparent`` for a call this span makes: same trace, this span as the parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    def outgoing_headers(self) -> dict[str, str]:
        headers = {TRACEPARENT: self.traceparent()}
        if self.tracestate:
            headers[TRACESTATE] = self.tracestate
        return headers


def span_for_request(
    traceparent: list[str], tracestate: list[str], trace_id_alias: str | None = None
) -> SpanContext:
    """The span of a request with these header values (every occurrence of each header).

    More than one ``traceparent`` is invalid (the specification allows no
    combining); several ``tracestate`` headers are one list, joined by commas.
    """
    parent = parse_traceparent(traceparent[0]) if len(traceparent) == 1 else None
    if parent is not None:
        state = ",".join(tracestate) if tracestate else None
        return SpanContext(parent.trace_id, new_span_id(), parent.span_id, parent.flags, state, "traceparent")
    alias = parse_trace_id_alias(trace_id_alias)
    if alias is not None:
        return SpanContext(alias, new_span_id(), None, origin="x-trace-id")
    return SpanContext(new_trace_id(), new_span_id(), None)
