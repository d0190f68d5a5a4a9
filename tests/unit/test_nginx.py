"""Golden nginx access-log lines -> invocation events."""

import pytest

from tracekit.adapters.nginx import AdaptReport, adapt_lines, adapt_nginx_log, parse_line, unescape
from tracekit.errors import TracekitError, UsageError

COMBINED_OK = '127.0.0.1 - - [25/Nov/2026:10:15:00 +0000] "GET /videos/a.mp4?quality=hd&t=3 HTTP/1.1" 200 612 "-" "curl/7.88.1"'
COMBINED_400 = '127.0.0.1 - - [25/Nov/2026:10:15:01 +0000] "GARBAGE" 400 157 "-" "-"'
COMBINED_EMPTY = '127.0.0.1 - - [25/Nov/2026:10:15:02 +0000] "" 400 0 "-" "-"'
EXTENDED_OK = (
    '10.1.2.3 - alice [25/Nov/2026:11:15:00 +0100] "POST /api/v1/jobs HTTP/1.1" 201 45 '
    '"http://example.test/" "Mozilla/5.0 \\x22quoted\\x22" 348 0.125 "4bf92f3577b34da6a3ce929d0e0e4736"'
)
EXTENDED_NO_TRACE = '127.0.0.1 - - [25/Nov/2026:10:15:00 +0000] "GET / HTTP/1.0" 404 153 "-" "-" 75 0.000 "-"'


def test_combined_line():
    event = parse_line(COMBINED_OK, "combined", "web1", "access.log", 1)
    assert event["ts_end"] == event["ts_start"] == 1795601700000
    assert event["duration_known"] is False
    assert (event["method"], event["path"], event["query"], event["protocol"]) == (
        "GET", "/videos/a.mp4", "quality=hd&t=3", "HTTP/1.1",
    )  # fmt: skip
    assert (event["status"], event["bytes_out"], event["bytes_in"]) == (200, 612, 0)
    assert event["node"] == "web1" and event["module"] == "nginx" and event["user_agent"] == "curl/7.88.1"


def test_time_local_is_the_end_of_the_request():
    event = parse_line(EXTENDED_OK, "extended", "web1", "access.log", 7)
    # 11:15:00 +0100 is 10:15:00 UTC; the request took 125 ms before that.
    assert event["ts_end"] == 1795601700000
    assert event["ts_start"] == event["ts_enqueue"] == 1795601700000 - 125
    assert event["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert event["user_agent"] == 'Mozilla/5.0 "quoted"'
    assert event["bytes_in"] == 348 and event["status"] == 201 and event["method"] == "POST"


@pytest.mark.parametrize("line", [COMBINED_400, COMBINED_EMPTY])
def test_rejected_requests_are_kept(line):
    event = parse_line(line, "combined", "web1", "access.log", 2)
    assert event["status"] == 400 and event["method"] is None and event["path"] is None


def test_missing_trace_id_gets_a_stable_one():
    first = parse_line(EXTENDED_NO_TRACE, "extended", "web1", "access.log", 3)
    again = parse_line(EXTENDED_NO_TRACE, "extended", "web1", "access.log", 3)
    assert first == again and len(first["trace_id"]) == 32
    assert first["ts_end"] - first["ts_start"] == 0 and first["duration_known"] is True


@pytest.mark.parametrize(
    "line, fmt",
    [
        ("garbage", "combined"),
        (COMBINED_OK, "extended"),  # combined line read as extended: fields missing
        ('127.0.0.1 - - [99/Nov/2026:10:15:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-"', "combined"),
    ],
)
def test_not_a_log_line(line, fmt):
    with pytest.raises(ValueError):
        parse_line(line, fmt, "n", "s", 1)


def test_bad_lines_are_counted_with_their_numbers():
    report = AdaptReport()
    events = list(adapt_lines([COMBINED_OK + "\n", "oops\n", "\n", COMBINED_400 + "\n"], "combined", "n", "f", report))
    assert len(events) == 2 and report.lines == 4 and report.bad_lines == [(2, "not an nginx 'combined' log line")]


def test_file_round_trip_and_strict(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(COMBINED_OK + "\nnot a line\n")
    out = tmp_path / "events.nginx.jsonl"
    report = adapt_nginx_log(log, out, "combined", "web1")
    assert report.events == 1 and len(report.bad_lines) == 1 and out.read_text().count("\n") == 1
    with pytest.raises(TracekitError, match="access.log:2"):
        adapt_nginx_log(log, out, "combined", "web1", strict=True)
    with pytest.raises(UsageError):
        adapt_nginx_log(log, out, "json", "web1")
    with pytest.raises(TracekitError, match="cannot read nginx log"):
        adapt_nginx_log(tmp_path / "missing.log", out)


def test_unescape():
    assert unescape(r"a\x22b\x5Cc") == 'a"b\\c'


def test_events_match_the_invocation_schema():
    from tracekit.schemas import validation_errors

    for line, fmt in [(COMBINED_OK, "combined"), (COMBINED_400, "combined"), (EXTENDED_OK, "extended")]:
        assert validation_errors("raw/invocation_event", parse_line(line, fmt, "n", "s", 1)) == []
