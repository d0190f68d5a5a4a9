"""nginx access logs as invocations: ``access.log -> events.nginx.jsonl``.

Two formats are understood. ``combined`` is nginx's default. ``extended``
appends what a trace needs, the request size, its duration and a trace id;
put this in the ``http`` block of nginx.conf::

    log_format tracekit '$remote_addr - $remote_user [$time_local] '
                        '"$request" $status $body_bytes_sent '
                        '"$http_referer" "$http_user_agent" '
                        '$request_length $request_time "$http_x_trace_id"';
    access_log /var/log/nginx/access.log tracekit;

``$time_local`` is when the request ENDED (nginx logs at completion), so
``ts_end = time_local`` and ``ts_start = ts_end - request_time``. With the
combined format the duration is unknown and ``ts_start = ts_end``.
``$time_local`` has one-second resolution; ``$request_time`` milliseconds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tracekit.errors import TracekitError, UsageError
from tracekit.jsonl import dumps

FORMATS = ("combined", "extended")

_QUOTED = r'"((?:[^"\\]|\\.)*)"'  # nginx escapes '"' as \x22, so a quote ends the field
_COMBINED = (
    r"^(?P<remote_addr>\S+) - (?P<remote_user>\S+) \[(?P<time_local>[^\]]+)\] "
    + _QUOTED.replace("(", "(?P<request>", 1)
    + r" (?P<status>\d{3}) (?P<body_bytes_sent>\d+|-) "
    + _QUOTED.replace("(", "(?P<referer>", 1)
    + " "
    + _QUOTED.replace("(", "(?P<user_agent>", 1)
)
_EXTENDED = (
    _COMBINED
    + r" (?P<request_length>\d+|-) (?P<request_time>\d+(?:\.\d+)?|-) "
    + _QUOTED.replace("(", "(?P<trace_id>", 1)
)
_PATTERNS = {"combined": re.compile(_COMBINED + r"\s*$"), "extended": re.compile(_EXTENDED + r"\s*$")}
_REQUEST_LINE = re.compile(r"^(?P<method>[A-Z][A-Z0-9_-]*) (?P<target>\S+)(?: (?P<protocol>HTTP/\d(?:\.\d)?))?$")
_ESCAPE_RUN = re.compile(r"(?:\\x[0-9A-Fa-f]{2})+")


@dataclass
class AdaptReport:
    lines: int = 0
    events: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def _decode_escapes(match: re.Match) -> str:
    data = bytes.fromhex(match.group(0).replace("\\x", ""))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def unescape(value: str) -> str:
    """Undo nginx's ``\\xHH`` escaping (escape=default).

    nginx escapes byte by byte (``é`` is logged as ``\\xC3\\xA9``), so each run
    of escapes is decoded as UTF-8 (latin-1 if the bytes are not UTF-8).
    """
    return _ESCAPE_RUN.sub(_decode_escapes, value)


def _time_local_ms(text: str) -> int:
    return int(datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").timestamp() * 1000)


def _null(value: str | None) -> str | None:
    return None if value in (None, "-", "") else value


def parse_line(line: str, fmt: str, node: str, source: str, line_no: int) -> dict:
    """One access-log line -> one invocation event; ValueError if it is not one."""
    match = _PATTERNS[fmt].match(line)
    if match is None:
        raise ValueError(f"not an nginx '{fmt}' log line")
    fields = match.groupdict()
    ts_end = _time_local_ms(fields["time_local"])
    request_time = _null(fields.get("request_time"))
    duration_ms = round(float(request_time) * 1000) if request_time is not None else None
    request = unescape(fields["request"])
    request_line = _REQUEST_LINE.match(request)
    method = path = query = protocol = None
    if request_line is not None:  # else: a request nginx rejected, e.g. "GARBAGE" -> 400
        method, protocol = request_line["method"], request_line["protocol"]
        path, _, query = request_line["target"].partition("?")
    # Ids are derived from the line, so that adapting the same log twice gives
    # the same events (and parse stays byte-identical).
    digest = hashlib.sha256(f"{node}\0{source}\0{line_no}\0{line}".encode()).hexdigest()
    trace_id = _null(unescape(fields["trace_id"])) if fields.get("trace_id") is not None else None
    request_length = _null(fields.get("request_length"))
    body_bytes = _null(fields["body_bytes_sent"])
    return {
        "task_id": f"nginx-{digest[:20]}",
        "trace_id": trace_id or digest[:32],
        "node": node,
        "module": "nginx",
        "attempt": 1,
        "pid": None,
        "create_time_ms": None,
        "ts_enqueue": ts_end - (duration_ms or 0),
        "ts_start": ts_end - (duration_ms or 0),
        "ts_end": ts_end,
        "ts_enqueue_given": False,
        "duration_known": duration_ms is not None,
        "status": int(fields["status"]),
        "method": method,
        "path": path,
        "query": query or None,
        "protocol": protocol,
        "request": request,
        "remote_addr": fields["remote_addr"],
        "user_agent": _null(unescape(fields["user_agent"])),
        "bytes_in": int(request_length) if request_length is not None else 0,
        "bytes_out": int(body_bytes) if body_bytes is not None else 0,
        "cpu_user_ms": None,
        "cpu_system_ms": None,
        "max_rss_kb": None,
        "source": f"{source}:{line_no}",
    }


def adapt_lines(lines: Iterable[str], fmt: str, node: str, source: str, report: AdaptReport) -> Iterator[dict]:
    for line_no, line in enumerate(lines, start=1):
        report.lines += 1
        if not line.strip():
            continue
        try:
            event = parse_line(line.rstrip("\n"), fmt, node, source, line_no)
        except ValueError as exc:
            report.bad_lines.append((line_no, str(exc)))
            continue
        report.events += 1
        yield event


def adapt_nginx_log(
    input_path: str | Path, output_path: str | Path, fmt: str = "combined", node: str = "nginx", strict: bool = False
) -> AdaptReport:
    """Convert a whole access log; lines that are not log lines are reported."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    input_path, output_path = Path(input_path), Path(output_path)
    report = AdaptReport()
    try:
        with open(input_path, encoding="utf-8", errors="replace") as src:
            lines = list(adapt_lines(src, fmt, node, str(input_path), report))
    except OSError as exc:
        raise TracekitError(f"cannot read nginx log {str(input_path)!r}: {exc.strerror}") from None
    if strict and report.bad_lines:
        line_no, reason = report.bad_lines[0]
        raise TracekitError(
            f"{input_path}:{line_no}: {reason} ({len(report.bad_lines)} bad lines; "
            f"check --format, or drop --strict to skip them)"
        )
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        with open(output_path, "w") as out:
            out.writelines(dumps(event) + "\n" for event in lines)
    except OSError as exc:
        raise TracekitError(f"cannot write {str(output_path)!r}: {exc.strerror}") from None
    return report
