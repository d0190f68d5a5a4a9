"""Real nginx: a private server on 127.0.0.1 writes a ``combined`` and an
``extended`` access log of requests this module sends, and the nginx adapter
turns both logs into invocation events."""

from __future__ import annotations

import http.client
import math
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.helpers import read_jsonl
from tracekit import cli
from tracekit.adapters.nginx import adapt_nginx_log, parse_line
from tracekit.schemas import validation_errors

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")

HOST = "127.0.0.1"
NODE = "edge-1"
# Exactly the line documented in tracekit/adapters/nginx.py.
LOG_FORMAT = (
    "log_format tracekit '$remote_addr - $remote_user [$time_local] '\n"
    "                    '\"$request\" $status $body_bytes_sent '\n"
    "                    '\"$http_referer\" \"$http_user_agent\" '\n"
    "                    '$request_length $request_time \"$http_x_trace_id\"';"
)
FILES = {
    "index.html": b"<html><body>tracekit index</body></html>\n",
    "docs/readme.txt": b"read me\n" * 50,
    "quoted.txt": b"quoted user agent\n",
}
TRACE_ID = uuid.uuid4().hex  # 32 hex digits
QUOTED_UA = 'probe "quoted" \\back caf\u00e9/1.0'
POST_BODY = b"x" * 4096


@dataclass
class Sent:
    """One request the test sent, and what nginx must have logged for it."""

    method: str | None
    path: str | None
    query: str | None
    status: int
    bytes_out: int
    t_before: float
    t_after: float
    user_agent: str | None = None
    trace_id: str | None = None
    body_len: int = 0


@dataclass
class NginxRun:
    prefix: Path
    combined_log: Path
    extended_log: Path
    sent: list[Sent]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _write_config(prefix: Path, port: int) -> Path:
    html = prefix / "html"
    for name, content in FILES.items():
        (html / name).parent.mkdir(parents=True, exist_ok=True)
        (html / name).write_bytes(content)
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(exist_ok=True)
    # Workers would drop to 'nobody', who cannot read pytest's private tmp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes 1;
pid {prefix}/logs/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
    types {{ text/html html; text/plain txt; }}
    default_type application/octet-stream;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    {LOG_FORMAT}
    server {{
        listen {HOST}:{port};
        server_name localhost;
        root {html};
        access_log {prefix}/logs/access.log combined;
        access_log {prefix}/logs/access.extended.log tracekit;
        # proxying reads the whole body first, so $request_length counts it
        # ('return' alone would log before discarding the body).
        location = /submit {{ proxy_pass http://unix:{prefix}/backend.sock:/stored; }}
    }}
    server {{
        listen unix:{prefix}/backend.sock;
        access_log off;
        location = /stored {{ return 201 "stored\\n"; }}
    }}
}}
"""
    )
    return conf


def _nginx_argv(prefix: Path, conf: Path) -> list[str]:
    return [NGINX, "-p", f"{prefix}/", "-c", str(conf), "-e", f"{prefix}/logs/error.log",
            "-g", "daemon off; master_process on;"]  # fmt: skip


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _start(prefix: Path) -> tuple[subprocess.Popen, int]:
    """Start nginx on a free port (retrying if another process took it first)."""
    for _ in range(5):
        port = _free_port()
        conf = _write_config(prefix, port)
        process = subprocess.Popen(_nginx_argv(prefix, conf), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline:
            if _port_answers(port):
                return process, port
            time.sleep(0.05)
        _kill(process)
        stderr = process.stderr.read().decode(errors="replace")
        if "Address already in use" not in stderr:
            raise AssertionError(f"nginx did not start: {stderr}")
    raise AssertionError("nginx found no free port")


def _kill(process: subprocess.Popen) -> None:
    """Kill the master and its workers, and reap the master."""
    try:
        workers = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        workers = []
    if process.poll() is None:
        process.kill()
    for worker in workers:
        try:
            worker.kill()
        except psutil.Error:
            pass
    process.wait(timeout=10)


def _get(port: int, target: str, headers: dict | None = None) -> tuple[int, int]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", target, headers=headers or {})
        response = conn.getresponse()
        return response.status, len(response.read())
    finally:
        conn.close()


def _send_all(port: int) -> list[Sent]:
    sent: list[Sent] = []

    def timed(call):
        before = time.time()
        result = call()
        return before, time.time(), result

    before, after, (status, size) = timed(lambda: _get(port, '/index.html?lang=en&page=2&q="x"'))
    assert (status, size) == (200, len(FILES["index.html"]))
    sent.append(Sent("GET", "/index.html", 'lang=en&page=2&q="x"', 200, size, before, after))

    before, after, (status, size) = timed(lambda: _get(port, "/docs/readme.txt"))
    assert (status, size) == (200, len(FILES["docs/readme.txt"]))
    sent.append(Sent("GET", "/docs/readme.txt", None, 200, size, before, after))

    before, after, (status, size) = timed(lambda: _get(port, "/missing.html?from=test"))
    assert status == 404 and size > 0
    sent.append(Sent("GET", "/missing.html", "from=test", 404, size, before, after))

    def post():
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            conn.request("POST", "/submit", body=POST_BODY, headers={"Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            return response.status, len(response.read())
        finally:
            conn.close()

    before, after, (status, size) = timed(post)
    assert (status, size) == (201, len(b"stored\n"))
    sent.append(Sent("POST", "/submit", None, 201, size, before, after, body_len=len(POST_BODY)))

    before, after, (status, size) = timed(lambda: _get(port, "/index.html", {"X-Trace-Id": TRACE_ID}))
    assert status == 200
    sent.append(Sent("GET", "/index.html", None, 200, size, before, after, trace_id=TRACE_ID))

    # http.client sends header values as latin-1; give it the UTF-8 bytes.
    ua = {"User-Agent": QUOTED_UA.encode("utf-8")}
    before, after, (status, size) = timed(lambda: _get(port, "/quoted.txt", ua))
    assert (status, size) == (200, len(FILES["quoted.txt"]))
    sent.append(Sent("GET", "/quoted.txt", None, 200, size, before, after, user_agent=QUOTED_UA))

    def garbage():
        with socket.create_connection((HOST, port), timeout=10) as sock:
            sock.sendall(b"GARBAGE\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), len(body)

    before, after, (status, size) = timed(garbage)
    assert status == 400 and size > 0
    sent.append(Sent(None, None, None, 400, size, before, after))
    return sent


@pytest.fixture(scope="module")
def nginx_run(tmp_path_factory) -> NginxRun:
    prefix = tmp_path_factory.mktemp("nginx")
    process, port = _start(prefix)
    try:
        sent = _send_all(port)
        process.send_signal(signal.SIGQUIT)  # graceful: finish requests, close logs
        assert process.wait(timeout=15) == 0, process.stderr.read().decode(errors="replace")
    finally:
        _kill(process)
        process.stderr.close()
    assert not _port_answers(port)
    return NginxRun(prefix, prefix / "logs" / "access.log", prefix / "logs" / "access.extended.log", sent)


def _adapt(run: NginxRun, fmt: str, out_dir: Path) -> list[dict]:
    log = run.extended_log if fmt == "extended" else run.combined_log
    out = out_dir / f"events.nginx.{fmt}.jsonl"
    report = adapt_nginx_log(log, out, fmt, NODE)
    assert report.bad_lines == []
    assert report.events == report.lines == len(run.sent)
    return read_jsonl(out)


def _log_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


FORMATS = ["combined", "extended"]


def test_raw_logs_hold_one_escaped_line_per_request(nginx_run):
    for path in (nginx_run.combined_log, nginx_run.extended_log):
        lines = _log_lines(path)
        assert len(lines) == len(nginx_run.sent)
        quoted = lines[5]
        # nginx escapes '"', '\' and non-ASCII bytes in the log
        assert "\\x22quoted\\x22" in quoted and "\\x5Cback" in quoted and "caf\\xC3\\xA9" in quoted
        assert '"GARBAGE" 400 ' in lines[6]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_request_is_one_event(nginx_run, fmt, tmp_path):
    events = _adapt(nginx_run, fmt, tmp_path)
    assert len(events) == len(nginx_run.sent)
    for event, sent in zip(events, nginx_run.sent):
        got = (event["method"], event["path"], event["query"], event["status"], event["bytes_out"])
        assert got == (sent.method, sent.path, sent.query, sent.status, sent.bytes_out)
        assert event["node"] == NODE and event["module"] == "nginx" and event["remote_addr"] == HOST
        assert event["protocol"] == (None if sent.method is None else "HTTP/1.1")
    assert len({event["task_id"] for event in events}) == len(events)


@pytest.mark.parametrize("fmt", FORMATS)
def test_garbage_request_is_a_400_without_method(nginx_run, fmt, tmp_path):
    (event,) = [e for e in _adapt(nginx_run, fmt, tmp_path) if e["status"] == 400]
    assert event["method"] is event["path"] is event["query"] is event["protocol"] is None
    assert event["request"] == "GARBAGE"
    assert event["user_agent"] is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_quoted_user_agent_is_unescaped(nginx_run, fmt, tmp_path):
    events = _adapt(nginx_run, fmt, tmp_path)
    (event,) = [e for e in events if e["path"] == "/quoted.txt"]
    assert event["user_agent"] == QUOTED_UA
    # http.client sends no User-Agent of its own: nginx logs "-"
    assert all(e["user_agent"] is None for e in events if e is not event)


def test_trace_id_header_is_carried_in_extended_events(nginx_run, tmp_path):
    extended = _adapt(nginx_run, "extended", tmp_path)
    combined = _adapt(nginx_run, "combined", tmp_path)
    for ext, comb, sent in zip(extended, combined, nginx_run.sent):
        if sent.trace_id:
            assert ext["trace_id"] == TRACE_ID
            assert comb["trace_id"] != TRACE_ID  # combined has no such field
        else:
            assert ext["trace_id"] != TRACE_ID
        assert len(ext["trace_id"]) == len(comb["trace_id"]) == 32
    assert sum(e["trace_id"] == TRACE_ID for e in extended) == 1


def test_extended_events_know_their_duration(nginx_run, tmp_path):
    events = _adapt(nginx_run, "extended", tmp_path)
    for event, line in zip(events, _log_lines(nginx_run.extended_log)):
        _, request_length, request_time, _ = line.rsplit(" ", 3)
        assert event["duration_known"] is True
        assert event["ts_start"] == event["ts_enqueue"] == event["ts_end"] - round(float(request_time) * 1000)
        assert event["ts_end"] % 1000 == 0  # $time_local has 1 s resolution
        assert event["bytes_in"] == int(request_length)
        # nginx counts nothing for a request line it rejected
        assert (event["bytes_in"] > 0) is (event["method"] is not None)


def test_combined_events_do_not_know_their_duration(nginx_run, tmp_path):
    for event in _adapt(nginx_run, "combined", tmp_path):
        assert event["duration_known"] is False
        assert event["ts_start"] == event["ts_enqueue"] == event["ts_end"]
        assert event["bytes_in"] == 0


def test_post_body_grows_request_length(nginx_run, tmp_path):
    events = _adapt(nginx_run, "extended", tmp_path)
    (post,) = [e for e in events if e["method"] == "POST"]
    gets = [e["bytes_in"] for e in events if e["method"] == "GET"]
    assert post["bytes_in"] >= len(POST_BODY)
    assert post["bytes_in"] > max(gets) + len(POST_BODY) // 2


def test_both_logs_agree_on_each_request(nginx_run, tmp_path):
    combined = _adapt(nginx_run, "combined", tmp_path)
    extended = _adapt(nginx_run, "extended", tmp_path)
    keys = ("method", "path", "query", "protocol", "status", "bytes_out", "request", "user_agent", "ts_end")
    for comb, ext in zip(combined, extended):
        assert {k: comb[k] for k in keys} == {k: ext[k] for k in keys}


@pytest.mark.parametrize("fmt", FORMATS)
def test_events_validate_against_the_schema(nginx_run, fmt, tmp_path):
    for event in _adapt(nginx_run, fmt, tmp_path):
        assert validation_errors("raw/invocation_event", event) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_adapt_matches_the_api(nginx_run, fmt, tmp_path, capsys):
    log = nginx_run.extended_log if fmt == "extended" else nginx_run.combined_log
    out = tmp_path / "run" / "events.nginx.jsonl"
    argv = ["adapt", "nginx", "--input", str(log), "--output", str(out), "--format", fmt, "--node", NODE, "--strict"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    n = len(nginx_run.sent)
    assert f"{n} events from {n} lines" in captured.out
    assert captured.err == ""
    assert read_jsonl(out) == _adapt(nginx_run, fmt, tmp_path / "api")


@pytest.mark.parametrize("fmt", FORMATS)
def test_parse_line_timestamps_follow_the_wall_clock(nginx_run, fmt):
    log = nginx_run.extended_log if fmt == "extended" else nginx_run.combined_log
    for line_no, (line, sent) in enumerate(zip(_log_lines(log), nginx_run.sent), start=1):
        event = parse_line(line, fmt, NODE, str(log), line_no)
        # nginx logs after the response; $time_local is truncated to the second.
        low = math.floor(sent.t_before) * 1000 - 2000
        high = math.ceil(sent.t_after) * 1000 + 2000
        assert low <= event["ts_end"] <= high, (line, sent)
        assert event["ts_start"] <= event["ts_end"]
    ends = [parse_line(line, fmt, NODE, str(log), 1)["ts_end"] for line in _log_lines(log)]
    assert ends == sorted(ends)  # requests were sent one after the other
