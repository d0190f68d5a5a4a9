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

import re
import secrets
from dataclasses import dataclass

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_ID_ALIAS = "x-trace-id"

_HEX = re.compile(r"^[0-9a-f]+$")
_SAMPLED = 0x01


@dataclass(frozen=True)
class Parent:
    """A valid incoming traceparent."""

    trace_id: str  # 32 lowercase hex digits, not all zeros
    span_id: str  # 16 lowercase hex digits, not all zeros (the caller's span)
    flags: int


def _is_id(value: str, length: int) -> bool:
    return len(value) == length and bool(_HEX.match(value)) and value.strip("0") != ""


def parse_traceparent(value: str | None) -> Parent | None:
    """The parent a ``traceparent`` header names, or None if it is absent or invalid."""
    if value is None:
        return None
    value = value.strip(" \t")  # optional whitespace around a header value (RFC 9110)
    if len(value) < 55:
        return None
    version = value[:2]
    if not _is_hex(version) or version == "ff":
        return None
    if version == "00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55] != "-":
        return None  # a later version may add fields, each after a '-'
    parts = value[:55].split("-")
    if len(parts) != 4 or [len(p) for p in parts] != [2, 32, 16, 2]:
        return None
    _, trace_id, span_id, flags = parts
    if not (_is_id(trace_id, 32) and _is_id(span_id, 16) and _is_hex(flags)):
        return None
    return Parent(trace_id, span_id, int(flags, 16))


def _is_hex(value: str) -> bool:
    return bool(_HEX.match(value))


def parse_trace_id_alias(value: str | None) -> str | None:
    """``X-Trace-Id``: a trace id (32 hex digits, any case) to continue, or None."""
    if value is None:
        return None
    value = value.strip().lower()
    return value if _is_id(value, 32) else None


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class SpanContext:
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
