"""tracekit.adapters.http on real uvicorn over 127.0.0.1: a bare ASGI app and the example FastAPI service."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from tests.helpers import read_jsonl, wait_until
from tests.httpserve import example_service, stop_group, uvicorn
from tracekit.schemas import validation_errors

DATA = Path(__file__).parent.parent / "data"
EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "fastapi_svc"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def get(url: str, headers: dict | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def events(run_folder: Path, count: int) -> list[dict]:
    path = run_folder / "events.http.jsonl"
    return wait_until(lambda: path.exists() and len(read_jsonl(path)) >= count and read_jsonl(path),
                      what=f"{count} events in {path}")  # fmt: skip


@pytest.fixture
def bare(tmp_path):
    run = tmp_path / "logs" / "r1"
    run.mkdir(parents=True)
    with uvicorn("asgi_apps:app", DATA, tmp_path / "uvicorn.log", {"TEST_RUN_FOLDER": str(run)}) as server:
        yield server, run


def test_bytes_are_counted_as_received_and_sent_not_as_declared(bare):
    server, run = bare
    host = urlsplit(server.url)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
    connection.request("POST", "/echo?x=1", body=iter([b"x" * 700, b"y" * 300]), encode_chunked=True)
    reply = connection.getresponse()
    assert reply.status == 200 and reply.read() == b"x" * 700 + b"y" * 300
    connection.request("GET", "/stream")
    streamed = connection.getresponse()
    assert len(streamed.read()) == 6000 and streamed.getheader("content-length") is None
    connection.close()
    echo, stream = events(run, 2)
    assert (echo["method"], echo["path"], echo["query"], echo["status"]) == ("POST", "/echo", "x=1", 200)
    assert (echo["bytes_in"], echo["bytes_out"]) == (1000, 1000)
    assert (stream["bytes_in"], stream["bytes_out"], stream["complete"]) == (0, 6000, True)
    # The stream's three chunks were 10 ms apart: it ends with its last chunk, not its first.
    assert stream["ts_end"] - stream["ts_start"] >= 20
    for event in (echo, stream):
        assert event["ts_enqueue"] <= event["ts_start"] <= event["ts_end"]
        assert event["node"] == "cloud1" and event["module"] == "http" and event["process_shared"] is True
        assert event["pid"] == server.process.pid and event["create_time_ms"] > 0
        assert event["client"].startswith("127.0.0.1:") and event["error"] is None
        assert event["task_id"] == event["span_id"] and event["cpu_measured"] == "coroutine-steps"
        assert validation_errors("raw/invocation_event", event) == []


def test_an_exception_ends_the_event_with_status_500_and_its_type(bare):
    server, run = bare
    assert get(server.url + "/fail")[0] == 500
    with pytest.raises(http.client.IncompleteRead):  # the server cut the response short
        host = urlsplit(server.url)
        connection = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        connection.request("GET", "/fail-midstream")
        connection.getresponse().read()
    assert get(server.url + "/nowhere")[0] == 404
    failed, midstream, missing = events(run, 3)
    assert (failed["status"], failed["status_sent"], failed["error"], failed["complete"]) == (500, None, "RuntimeError", False)
    assert (midstream["status"], midstream["status_sent"], midstream["error"]) == (500, 200, "ValueError")
    assert midstream["bytes_out"] == len(b"partial") and not midstream["complete"]
    assert (missing["status"], missing["error"], missing["complete"]) == (404, None, True)


def test_trace_context_is_continued_or_started(bare):
    server, run = bare
    tracestate = "vendor=abc"
    _, body = get(server.url + "/span", {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": tracestate})
    assert body.decode().split() == [TRACE, body.decode().split()[1], PARENT, tracestate]
    status, body = get(server.url + "/span", {"traceparent": f"00-{'0' * 32}-{PARENT}-01", "tracestate": tracestate})
    assert status == 200 and body.decode().split()[0] != TRACE and body.decode().split()[2:] == ["None", "None"]
    _, body = get(server.url + "/span", {"X-Trace-Id": TRACE})
    assert body.decode().split()[0] == TRACE
    continued, malformed, alias = events(run, 3)
    assert (continued["trace_id"], continued["parent_span_id"], continued["trace_origin"]) == (TRACE, PARENT, "traceparent")
    assert malformed["trace_id"] != TRACE and malformed["parent_span_id"] is None and malformed["trace_origin"] == "new"
    assert (alias["trace_id"], alias["trace_origin"]) == (TRACE, "x-trace-id")


# -- the example service ----------------------------------------------------------


@pytest.fixture
def service(tmp_path):
    run = tmp_path / "logs" / "r1"
    with example_service(run, "cloud1", tmp_path / "svc.log") as server:
        yield server, run


def test_a_request_counts_its_own_cpu_not_what_ran_beside_it(service):
    """An async request that only sleeps, while another burns the event loop's CPU: the sleeper's
    coroutine steps used next to nothing. A sync request's thread CPU is counted as its own."""
    server, run = service
    host = urlsplit(server.url)
    sleeper = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
    sleeper.request("GET", "/work?sleep_ms=800")
    # The loop answered a later request: it has read the sleeper's, which is now asleep.
    assert get(server.url + "/health")[0] == 200
    assert get(server.url + "/work?cpu_ms=150")[0] == 200
    assert sleeper.getresponse().status == 200
    sleeper.close()
    assert get(server.url + "/work/sync?cpu_ms=120")[0] == 200
    by_query = {e["query"]: e for e in events(run, 4)}
    asleep, burnt, sync = by_query["sleep_ms=800"], by_query["cpu_ms=150"], by_query["cpu_ms=120"]
    assert asleep["ts_enqueue"] <= burnt["ts_enqueue"] and burnt["ts_end"] <= asleep["ts_end"]  # they overlapped
    assert asleep["cpu_ms"] < 30 and asleep["cpu_measured"] == "coroutine-steps"
    assert 150 <= burnt["cpu_ms"] < 150 * 1.5
    assert 120 <= sync["cpu_ms"] < 120 * 1.5 and sync["cpu_measured"] == "coroutine-steps+thread"
    assert json.loads(get(server.url + "/work?cpu_ms=5")[1])["cpu_ms"] >= 5


def test_the_example_endpoints(service):
    server, run = service
    blob = b"tracekit " * 1000
    status, packed = get(server.url + "/blob/gzip", data=blob)
    assert status == 200 and gzip.decompress(packed) == blob
    assert get(server.url + "/blob/gunzip", data=packed) == (200, blob)
    assert get(server.url + "/blob/gunzip", data=b"not gzip")[0] == 422
    assert json.loads(get(server.url + "/hash/sha256", data=blob)[1])["sha256"] == hashlib.sha256(blob).hexdigest()
    assert json.loads(get(server.url + "/json/validate", data=b'{"a": [1, {"b": 2}]}')[1])["depth"] == 3
    assert get(server.url + "/json/validate", data=b"{nope")[0] == 422
    assert get(server.url + "/kv/set/k1", data=b"value one")[0] == 200
    assert get(server.url + "/kv/get/k1") == (200, b"value one")
    assert get(server.url + "/kv/get/missing")[0] == 404
    assert (run / "kv.sqlite3").is_file()
    status, body = get(server.url + "/work?resp_kb=4", data=b'{"cpu_ms": 1}')
    assert status == 200 and len(body) == 4096 and json.loads(body)["cpu_ms"] >= 1
    assert get(server.url + "/work?cpu_ms=-1")[0] == 422
    assert json.loads(get(server.url + "/health")[1])["status"] == "ok"
    recorded = events(run, 12)
    assert len(recorded) == 12
    assert [e["route"] for e in recorded[:2]] == ["/blob/gzip", "/blob/gunzip"]
    assert {e["route"] for e in recorded} >= {"/kv/set/{key}", "/kv/get/{key}", "/work", "/health"}
    assert recorded[0]["bytes_in"] == len(blob) and recorded[0]["bytes_out"] == len(packed)


def test_a_three_hop_chain_is_one_trace_with_parent_links(tmp_path):
    """endpoint -> edge -> cloud, each its own service, node and run folder; the first hop is
    called with a traceparent, the second by X-Next-Url, the third by DEFAULT_NEXT_URL."""
    logs = tmp_path / "logs"
    with example_service(logs / "cloud" / "r1", "cloud1", tmp_path / "cloud.log") as cloud:
        last = cloud.url + "/work/sync?cpu_ms=2"
        with example_service(logs / "edge" / "r1", "edge1", tmp_path / "edge.log",
                             {"DEFAULT_NEXT_URL": last}) as edge:  # fmt: skip
            with example_service(logs / "endpoint" / "r1", "endpoint1", tmp_path / "endpoint.log",
                                 {"NEXT_URL_ALLOWED": edge.url + "/work"}) as endpoint:  # fmt: skip
                headers = {"traceparent": f"00-{TRACE}-{PARENT}-01", "X-Next-Url": edge.url + "/work?cpu_ms=1"}
                status, body = get(endpoint.url + "/work?sleep_ms=1", headers)
                assert status == 200
                reply = json.loads(body)
                # The next hop's status and time, not its body.
                assert set(reply["next"]) == {"url", "status", "ms"} and reply["next"]["status"] == 200
                [first] = events(logs / "endpoint" / "r1", 1)
            [second] = events(logs / "edge" / "r1", 1)
        [third] = events(logs / "cloud" / "r1", 1)
    assert [e["trace_id"] for e in (first, second, third)] == [TRACE] * 3
    assert [e["node"] for e in (first, second, third)] == ["endpoint1", "edge1", "cloud1"]
    assert first["parent_span_id"] == PARENT
    assert second["parent_span_id"] == first["span_id"] and third["parent_span_id"] == second["span_id"]
    assert len({e["span_id"] for e in (first, second, third)}) == 3
    # Each hop ends after the one it called.
    assert first["ts_end"] >= second["ts_end"] >= third["ts_end"]


def test_only_the_configured_next_hops_are_called_and_their_bodies_are_not_passed_on(tmp_path):
    """Before the fix /work called any call_url / X-Next-Url and returned its body: an open relay
    (SSRF) to whatever the service can reach, here another service's key-value store."""
    logs = tmp_path / "logs"
    with example_service(logs / "inside" / "r1", "inside1", tmp_path / "inside.log") as inside:
        assert get(inside.url + "/kv/set/secret", data=b"s3cr3t-value")[0] == 200
        allowed = inside.url + "/work"
        with example_service(logs / "front" / "r1", "front1", tmp_path / "front.log",
                             {"NEXT_URL_ALLOWED": allowed}) as front:  # fmt: skip
            secret = inside.url + "/kv/get/secret"
            for path, kwargs in (("/work?call_url=" + quote(secret, safe=""), {}),
                                 ("/work/sync?call_url=" + quote(secret, safe=""), {}),
                                 ("/work", {"headers": {"X-Next-Url": secret}}),
                                 ("/work", {"data": json.dumps({"call_url": "file:///etc/passwd"}).encode()}),
                                 ("/work", {"headers": {"X-Next-Url": allowed + "/../kv/get/secret"}})):  # fmt: skip
                status, body = get(front.url + path, **kwargs)
                assert status == 403 and b"s3cr3t" not in body and b"root:" not in body, (path, body)
                assert json.loads(body)["detail"].startswith("next hop "), body
            # What is allowed is called: its status and time come back, never its body.
            for path in ("/work", "/work/sync"):
                status, body = get(front.url + path + "?call_url=" + quote(allowed + "?resp_kb=1", safe=""))
                assert status == 200 and set(json.loads(body)["next"]) == {"url", "status", "ms"}
                assert json.loads(body)["next"]["status"] == 200 and json.loads(body)["next"]["ms"] > 0
            # A redirect from the next hop is its answer, not followed (FastAPI redirects /work/ to /work).
            for path in ("/work", "/work/sync"):
                status, body = get(front.url + path + "?call_url=" + quote(allowed + "/", safe=""))
                assert status == 200 and json.loads(body)["next"]["status"] == 307
            assert get(front.url + "/work", data=b'{"call_url": 5}')[0] == 422
    served = [e["path"] for e in events(logs / "inside" / "r1", 5)]
    assert served == ["/kv/set/secret", "/work", "/work", "/work/", "/work/"]  # never /kv/get/secret


def test_a_load_run_parses_joins_and_exports(tmp_path):
    """Collector + example service + tracekit load in one run folder -> parse -> export -> verify.
    Every request is an invocation joined to what the client saw; the service process, which
    served them all, is sampled but belongs to no one request; each request is an OpenDC task
    with its own CPU."""
    from tracekit import cli
    from tracekit.collect import daemon
    from tracekit.collect.daemon import CollectorConfig
    from tracekit.trace import cctf
    from tracekit.trace.export.opendc import export_opendc
    from tracekit.trace.parse import parse_run
    from tracekit.trace.verify import verify_opendc

    logs = tmp_path / "logs"
    cfg = CollectorConfig(run_id="h1", node_id="cloud1", interval_ms=100, match_cmdline="uvicorn", logs_dir=logs,
                          cpu_mhz=2000)  # fmt: skip
    daemon.start_collector(cfg)
    try:
        with example_service(cfg.run_folder, "cloud1", tmp_path / "svc.log") as server:
            assert cli.main(["load", "--url", server.url + "/work?cpu_ms=8", "--rate", "40", "--duration", "1s",
                             "--warmup", "250ms", "--run-id", "h1", "--logs-dir", str(logs), "--quiet"]) == 0  # fmt: skip
            served = events(cfg.run_folder, 50)
    finally:
        daemon.stop_collector("h1", logs)
    trace = parse_run(cfg.run_folder).cctf_dir
    invocations = read_jsonl(trace / "invocations.jsonl")
    assert sorted(r["task_id"] for r in invocations) == sorted(e["span_id"] for e in served)
    assert all(r["module"] == "http" and r["ok"] and r["cpu_ms"] >= 8 for r in invocations)
    samples = cctf.read_table(trace, "proc_metrics").to_pylist()
    of_server = [s for s in samples if s["pid"] == served[0]["pid"]]
    assert of_server and all(s["task_id"] is None for s in of_server)
    # The client's view next to the server's.
    requests = read_jsonl(trace / "requests.jsonl")
    results = read_jsonl(logs / "h1" / "load" / "results.jsonl")
    assert len(requests) == len(results) == 50 and sum(r["warmup"] for r in requests) == 10
    by_task = {r["task_id"]: r for r in invocations}
    for request in requests:
        server = by_task[request["server_task_id"]]
        assert server["parent_span_id"] == request["span_id"] and server["trace_id"] == request["trace_id"]
        assert request["server_node"] == "cloud1" and request["server_cpu_ms"] == server["cpu_ms"]
        assert 0 < request["server_ms"] <= request["latency_ms"] <= request["latency_intended_ms"]
        assert server["client_latency_ms"] == request["latency_ms"]
    audit = json.loads((trace / "audit.json").read_text())
    assert audit["requests"] == {"requests": 50, "requests_sent": 50, "requests_joined": 50,
                                 "requests_without_server_event": 0, "http_invocations_from_other_callers": 0}
    assert not any("no process samples" in note for note in audit["notes"])
    # One OpenDC task per measured request, carrying the request's own CPU; the warm-up's 10 are flagged in
    # the trace and left out.
    warm = {request["server_task_id"] for request in requests if request["warmup"]}
    assert {r["task_id"] for r in invocations if r.get("warmup")} == warm and len(warm) == 10
    out = tmp_path / "opendc"
    summary = export_opendc(cfg.run_folder, out).summary
    measured = [r for r in invocations if r["task_id"] not in warm]
    assert summary["tasks"] == 40 and summary["excluded_warmup"] == 10
    assert abs(summary["cpu_ms_total"] - sum(r["cpu_ms"] for r in measured)) < 0.01
    assert verify_opendc(out, against=cfg.run_folder).ok


def test_make_run_serves_with_several_workers_into_one_events_file(tmp_path):
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "make.log"
    command = ["make", "-C", str(EXAMPLE), "run", f"PORT={port}", "WORKERS=2", "NODE_ID=edge1", "RUN_ID=m1",
               f"LOGS_DIR={tmp_path / 'logs'}"]  # fmt: skip
    with open(log, "wb") as out:
        make = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: make.poll() is None and "Application startup complete" in log.read_text() and
                   _answers(url + "/health"), what="make run serving")  # fmt: skip
        for _ in range(20):
            assert get(url + "/work?cpu_ms=1")[0] == 200
        recorded = events(tmp_path / "logs" / "m1", 21)
        assert {e["node"] for e in recorded} == {"edge1"} and len({e["span_id"] for e in recorded}) == len(recorded)
    finally:
        stop_group(make)


def _answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:
        return False


def test_tracekit_serve_starts_once_answers_and_stops(tmp_path, capsys):
    import socket

    from tracekit import cli

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    logs = tmp_path / "logs"
    start = ["serve", "--run-id", "s1", "--logs-dir", str(logs), "--app-dir", str(EXAMPLE), "--port", port,
             "--node-id", "cloud2", "--next-url", "http://127.0.0.1:1/never-called-without-call_url"]  # fmt: skip
    try:
        assert cli.main(start) == 0
        assert "started (pid" in capsys.readouterr().out
        assert cli.main(start) == 0 and "already running" in capsys.readouterr().out
        assert get(f"http://127.0.0.1:{port}/work?cpu_ms=1")[0] == 502  # the next hop is refused: said, not hidden
        [event] = events(logs / "s1", 1)
        assert event["node"] == "cloud2" and event["status"] == 502
        # Another run on the same port: a clear error, not a second server.
        assert cli.main([*start[:2], "s2", *start[3:]]) == 1
        err = capsys.readouterr().err
        # Who holds the port (s1's service, by its pid) and the keys that give another.
        from tracekit.adapters.http_service import PIDFILE
        from tracekit.detach import read_pidfile

        holder = read_pidfile(logs / "s1" / PIDFILE).pid
        assert f"127.0.0.1:{port} is already in use by " in err and f"(pid {holder})" in err, err
        assert "workload.http.port" in err and "tracekit_http_port" in err and err.count("\n") == 1
    finally:
        assert cli.main(["serve", "--run-id", "s1", "--logs-dir", str(logs), "--stop"]) == 0
    assert "stopped" in capsys.readouterr().out and not _answers(f"http://127.0.0.1:{port}/health")
    assert cli.main(["serve", "--run-id", "s1", "--logs-dir", str(logs), "--stop"]) == 0
    assert "was not running" in capsys.readouterr().out
    # An app that cannot be loaded: its own error, from its log.
    assert cli.main(["serve", "--run-id", "s3", "--logs-dir", str(logs), "--app-dir", str(EXAMPLE), "--app",
                     "app:no_such_factory", "--port", port]) == 1  # fmt: skip
    assert "no_such_factory" in capsys.readouterr().err


# -- issue 23: a client that gives up is not a complete 200 ---------------------------------------


def _send_and_close(url: str, request: bytes) -> None:
    """A raw socket client: ``request`` (perhaps only part of one), then close without reading."""
    import socket

    host = urlsplit(url)
    with socket.create_connection((host.hostname, host.port), timeout=30) as client:
        client.sendall(request)


def test_a_client_that_leaves_before_the_response_is_recorded_as_aborted_and_parsed(tmp_path):
    """The whole request, then the client closes while the handler sleeps: the handler's 200 went
    nowhere (uvicorn drops what is sent after a disconnect). Before the fix: complete, status 200.
    Parse keeps the event's fields; the request is an invocation like any other (its CPU was used)."""
    from tracekit.collect import daemon
    from tracekit.collect.daemon import CollectorConfig
    from tracekit.trace.parse import parse_run

    logs = tmp_path / "logs"
    cfg = CollectorConfig(run_id="a1", node_id="cloud1", interval_ms=100, match_cmdline="uvicorn", logs_dir=logs)
    daemon.start_collector(cfg)
    try:
        with example_service(cfg.run_folder, "cloud1", tmp_path / "svc.log") as server:
            _send_and_close(server.url, b"GET /work?sleep_ms=1500&resp_kb=2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert get(server.url + "/health")[0] == 200  # a request that stays: complete, as before
            by_path = {e["path"]: e for e in events(cfg.run_folder, 2)}
    finally:
        daemon.stop_collector("a1", logs)
    left, stayed = by_path["/work"], by_path["/health"]
    assert (left["status"], left["status_sent"], left["complete"]) == (499, 200, False) and left["aborted"] is True
    assert left["error"] == "client disconnected before the response was complete"
    assert left["ts_end"] - left["ts_start"] >= 1500  # the handler's time is still the request's
    assert left["bytes_out"] == 0  # what the handler answered was not sent
    assert (stayed["status"], stayed["complete"], stayed["error"]) == (200, True, None) and stayed["aborted"] is False
    assert stayed["ts_start"] == stayed["ts_enqueue"] and stayed["bytes_out"] > 0  # it never read a body
    for event in (left, stayed):
        assert validation_errors("raw/invocation_event", event) == []
    invocations = {r["path"]: r for r in read_jsonl(parse_run(cfg.run_folder).cctf_dir / "invocations.jsonl")}
    assert (invocations["/work"]["status"], invocations["/work"]["aborted"]) == (499, True)
    assert invocations["/health"]["aborted"] is False


def test_a_client_that_leaves_before_its_body_was_sent_is_recorded_as_aborted(bare):
    """Headers and 10 of 1000 body bytes, then the client closes. /echo reads the body (it gets the
    disconnect), /stream does not; each answered 200 to no one. Before the fix both were complete 200s."""
    server, run = bare
    for path in ("/echo", "/stream"):
        _send_and_close(server.url, f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n".encode()
                        + b"x" * 10)  # fmt: skip
        [event] = [e for e in events(run, 1 if path == "/echo" else 2) if e["path"] == path]
        assert (event["status"], event["status_sent"], event["complete"]) == (499, 200, False), path
        assert event["aborted"] is True
        assert event["bytes_in"] == (10 if path == "/echo" else 0) and event["error"].startswith("client disconnected")
        assert validation_errors("raw/invocation_event", event) == []
