"""``tracekit load`` against the real example service on 127.0.0.1 (uvicorn), through the CLI."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from tests.helpers import read_jsonl, tracekit_cmd, wait_until
from tests.httpserve import example_service
from tracekit import cli

VEGETA_FIELDS = ("attack", "seq", "code", "timestamp", "latency", "bytes_out", "bytes_in", "error", "body",
                 "method", "url", "headers")  # fmt: skip


@pytest.fixture
def service(tmp_path):
    run = tmp_path / "logs" / "svc"
    with example_service(run, "cloud1", tmp_path / "svc.log") as server:
        yield server, run


def test_results_are_vegeta_lines_that_join_the_server_events_on_trace_id(service, tmp_path, capsys):
    server, served_into = service
    logs = tmp_path / "logs"
    assert cli.main(["load", "--url", server.url + "/work?cpu_ms=1", "--rate", "100", "--duration", "2s",
                     "--warmup", "500ms", "--run-id", "r1", "--logs-dir", str(logs), "--quiet",
                     "--name", "smoke"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "Requests      [total, rate, throughput]         200," in out and "Status Codes  [code:count]" in out
    results = read_jsonl(logs / "r1" / "load" / "results.jsonl")
    assert len(results) == 250 and sum(r["warmup"] for r in results) == 50
    for r in results:
        assert set(VEGETA_FIELDS) <= set(r) and r["attack"] == "smoke" and r["method"] == "GET"
        assert (r["code"], r["error"], r["dropped"]) == (200, "", False)
        assert r["latency_intended"] == r["latency"] + r["send_lag"] and r["latency"] > 0
        assert r["timestamp"].endswith("Z") and r["intended"] <= r["timestamp"]
    assert [r["seq"] for r in results] == list(range(250))
    summary = json.loads((logs / "r1" / "load" / "summary.json").read_text())
    assert (summary["requests"], summary["sent"], summary["success_ratio"], summary["dropped"]) == (200, 200, 1.0, 0)
    assert summary["status_codes"] == {"200": 200} and summary["warmup_requests"] == 50
    assert summary["latency_ms"]["p99"] <= summary["latency_ms"]["max"]
    events = {e["trace_id"]: e for e in wait_until(lambda: len(read_jsonl(served_into / "events.http.jsonl")) >= 250
                                                   and read_jsonl(served_into / "events.http.jsonl"), what="events")}
    for r in results:
        event = events[r["trace_id"]]
        assert event["parent_span_id"] == r["span_id"] and event["trace_origin"] == "traceparent"
        assert event["bytes_out"] == r["bytes_in"]


def test_a_post_body_from_a_file_and_headers_are_sent(service, tmp_path):
    server, served_into = service
    body = tmp_path / "body.bin"
    body.write_bytes(b"tracekit" * 512)
    done = subprocess.run(tracekit_cmd("load", "--url", server.url + "/hash/sha256", "--rate", "20", "--duration",
                                       "1s", "--method", "post", "--body", f"@{body}", "--header",
                                       "X-Trace-Id: ignored-when-traceparent-is-valid", "--output",
                                       str(tmp_path / "out" / "r.jsonl"), "--quiet"),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = read_jsonl(tmp_path / "out" / "r.jsonl")
    assert len(results) == 20 and {r["bytes_out"] for r in results} == {4096} and {r["method"] for r in results} == {"POST"}
    assert (tmp_path / "out" / "summary.json").is_file()
    events = wait_until(lambda: len(read_jsonl(served_into / "events.http.jsonl")) >= 20
                        and read_jsonl(served_into / "events.http.jsonl"), what="events")  # fmt: skip
    assert {e["bytes_in"] for e in events} == {4096} and {e["method"] for e in events} == {"POST"}


def test_more_than_max_in_flight_is_dropped_and_counted(service, tmp_path):
    server, _ = service
    out = tmp_path / "r.jsonl"
    assert cli.main(["load", "--url", server.url + "/work?sleep_ms=300", "--rate", "50", "--duration", "1s",
                     "--max-in-flight", "2", "--output", str(out), "--quiet"]) == 0  # fmt: skip
    results = read_jsonl(out)
    dropped = [r for r in results if r["dropped"]]
    assert len(results) == 50 and len(dropped) >= 40
    assert all(r["code"] == 0 and r["error"].startswith("dropped:") and r["latency"] == 0 for r in dropped)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dropped"] == len(dropped) == summary["errors"]["dropped"]
    assert summary["success_ratio"] == (50 - len(dropped)) / 50


def test_a_slow_service_times_out_and_the_load_ends(service, tmp_path):
    server, _ = service
    out = tmp_path / "r.jsonl"
    assert cli.main(["load", "--url", server.url + "/work?sleep_ms=3000", "--rate", "10", "--duration", "500ms",
                     "--timeout", "300ms", "--output", str(out), "--quiet"]) == 1  # fmt: skip
    results = read_jsonl(out)
    assert len(results) == 5 and all(r["error"].startswith("timeout:") and r["code"] == 0 for r in results)
    # Each request was cut off at its time-out, by the generator's own clock.
    assert all(300e6 <= r["latency"] < 3000e6 for r in results)


def test_an_unreachable_target_is_a_one_line_error_and_results_are_kept(tmp_path, capsys):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/work"
    out = tmp_path / "r.jsonl"
    assert cli.main(["load", "--url", url, "--rate", "50", "--duration", "1s", "--output", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tracekit load: error: no request to {url} got a response (connect: Connection refused); "
                   "is the service running there?"]  # fmt: skip
    results = read_jsonl(out)
    assert len(results) == 50 and all(r["error"].startswith("connect:") for r in results)


def test_a_service_that_dies_mid_run_gives_counted_errors_and_the_load_ends(tmp_path):
    logs = tmp_path / "logs"
    with example_service(logs / "svc", "cloud1", tmp_path / "svc.log") as server:
        load = subprocess.Popen(tracekit_cmd("load", "--url", server.url + "/work?cpu_ms=1", "--rate", "50",
                                             "--duration", "3s", "--run-id", "r1", "--logs-dir", str(logs), "--quiet"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        events = logs / "svc" / "events.http.jsonl"
        wait_until(lambda: events.exists() and len(read_jsonl(events)) >= 20, what="the first requests served")
    # The service is gone (stopped and reaped); the load goes on to its end.
    out, err = load.communicate(timeout=60)
    assert load.returncode == 0, err
    summary = json.loads((logs / "r1" / "load" / "summary.json").read_text())
    assert summary["requests"] == summary["sent"] == 150
    assert summary["status_codes"]["200"] >= 20 and summary["errors"].get("connect", 0) > 0
    assert summary["status_codes"]["200"] + sum(summary["errors"].values()) == 150
    assert "Error Set     [kind:count]                      connect:" in out


def test_sigint_ends_the_load_early_and_keeps_what_was_sent(service, tmp_path):
    server, served_into = service
    load = subprocess.Popen(tracekit_cmd("load", "--url", server.url + "/health", "--rate", "50", "--duration", "60s",
                                         "--output", str(tmp_path / "r.jsonl"), "--quiet"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        events = served_into / "events.http.jsonl"
        wait_until(lambda: events.exists() and len(read_jsonl(events)) >= 10, what="the first requests served")
        load.send_signal(signal.SIGINT)
        out, err = load.communicate(timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == 130, err
    results = read_jsonl(tmp_path / "r.jsonl")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 10 <= len(results) < 3000 and summary["interrupted"] is True
    assert summary["not_due"] == 3000 - len(results) and "Interrupted:" in out


def test_several_urls_are_sent_to_in_turn(service, tmp_path):
    server, served_into = service
    out = tmp_path / "r.jsonl"
    urls = [server.url + "/health", server.url + "/work?cpu_ms=1"]
    assert cli.main(["load", "--url", urls[0], "--url", urls[1], "--rate", "20", "--duration", "1s", "--output",
                     str(out), "--quiet"]) == 0  # fmt: skip
    results = read_jsonl(out)
    assert [r["url"] for r in results] == urls * 10
    events = wait_until(lambda: len(read_jsonl(served_into / "events.http.jsonl")) >= 20
                        and read_jsonl(served_into / "events.http.jsonl"), what="events")  # fmt: skip
    assert sorted(e["route"] for e in events) == ["/health"] * 10 + ["/work"] * 10
    assert json.loads((tmp_path / "summary.json").read_text())["urls"] == urls


def test_the_open_file_limit_is_raised_for_max_in_flight_or_named(tmp_path):
    import resource
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/"

    def load_with_limits(soft: int, hard: int) -> subprocess.CompletedProcess:
        return subprocess.run(tracekit_cmd("load", "--url", url, "--rate", "10", "--duration", "200ms", "--max-in-flight",
                                           "1000", "--output", str(tmp_path / f"r{hard}.jsonl"), "--quiet"),
                              capture_output=True, text=True, timeout=60,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))  # fmt: skip

    # The hard limit allows it: the soft one is raised, the load runs (to a target that is not there).
    raised = load_with_limits(256, 4096)
    assert raised.returncode == 1 and "got a response (connect: Connection refused)" in raised.stderr
    # It does not: one line that says what to do, nothing sent.
    refused = load_with_limits(256, 512)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "tracekit load: error: --max-in-flight 1000 needs 1064 open files; this process may open 512 "
        "(ulimit -Hn): give a lower --max-in-flight")  # fmt: skip
    assert not (tmp_path / "r512.jsonl").exists()


# -- issue 23 -------------------------------------------------------------------------------------


def test_a_week_long_load_sends_at_once_in_bounded_memory(service, tmp_path):
    """Before the fix the whole schedule was a list made before the first request (--rate 1000
    --duration 100h: 4.8 GB and no request yet after 15 s). Under a 1 GiB address-space limit it
    died of MemoryError; now it sends at once, and Ctrl-C ends it as usual."""
    import resource

    server, served_into = service
    limit = 1 << 30
    load = subprocess.Popen(tracekit_cmd("load", "--url", server.url + "/health", "--rate", "100", "--duration", "168h",
                                         "--output", str(tmp_path / "r.jsonl"), "--quiet"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))  # fmt: skip
    try:
        events = served_into / "events.http.jsonl"
        wait_until(lambda: load.poll() is None and events.exists() and len(read_jsonl(events)) >= 20
                   or load.poll() is not None, timeout_s=60, what="the first requests served")  # fmt: skip
        assert load.poll() is None, load.communicate()[1]
        load.send_signal(signal.SIGINT)
        out, err = load.communicate(timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == 130, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["scheduled"] == 100 * 168 * 3600 and summary["interrupted"] is True
    assert summary["not_due"] == summary["scheduled"] - summary["requests"] and summary["status_codes"]["200"] >= 20


@pytest.mark.parametrize("flags, message", [
    (["--url", "http://[::1", "--rate", "10", "--duration", "1s"],
     "--url 'http://[::1' is not a URL (Invalid IPv6 URL): give e.g. http://127.0.0.1:8080/work"),
    (["--url", "http://127.0.0.1:9/", "--rate", "1e-9", "--duration", "1s"],
     "--rate '1e-9': 1e-9 must be at least 0.001 and at most 1,000,000 per second"),
    (["--url", "http://127.0.0.1:9/", "--rate", "20", "--duration", "99999999h"],
     "--rate 20 --duration 99999999h: 99,999,999.0 h is longer than a load may last (168 h, 7 days)"),
    (["--url", "http://127.0.0.1:9/", "--rate", "10", "--duration", "100h", "--warmup", "100h"],
     "--warmup and --rate together: 200.0 h is longer than a load may last (168 h, 7 days)"),
    (["--url", "http://127.0.0.1:9/", "--rate", "0.5", "--duration", "1s"],
     "--rate 0.5: 0.5 per second for 1 s plans no request; raise the rate or lengthen --duration"),
], ids=["unclosed-ipv6-url", "rate-1e-9", "duration-99999999h", "warmup-and-plan-too-long", "no-request-planned"])  # fmt: skip
def test_a_bad_url_or_an_absurd_plan_is_one_line_and_nothing_is_sent(flags, message, tmp_path, capsys):
    assert cli.main(["load", *flags, "--output", str(tmp_path / "r.jsonl"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"tracekit load: error: {message}"]
    assert not (tmp_path / "r.jsonl").exists()


def test_a_load_that_sent_no_request_does_not_exit_0(tmp_path, capsys):
    """Poisson arrivals at 1/s for 1 s with seed 0 draw no request (its first gap is 1.3 s): before
    the fix the load printed an empty summary and exited 0."""
    out = tmp_path / "r.jsonl"
    assert cli.main(["load", "--url", "http://127.0.0.1:9/", "--rate", "1", "--duration", "1s", "--arrival", "poisson",
                     "--seed", "0", "--output", str(out), "--quiet"]) == 1  # fmt: skip
    assert capsys.readouterr().err.strip().splitlines() == [
        "tracekit load: error: no request was sent: --rate 1 drew none in the load's time (0 of warm-up); "
        "raise --rate or --duration"]  # fmt: skip
    assert read_jsonl(out) == [] and json.loads((tmp_path / "summary.json").read_text())["sent"] == 0
