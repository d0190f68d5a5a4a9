"""The audit's service_overhead (tracekit.trace.requests.service_overhead): a traced service process's CPU
beside its requests' own steps, from the process's samples while it served them."""

from __future__ import annotations

import jsonschema
import pyarrow as pa

from tracekit.schemas import load_schema
from tracekit.trace import cctf
from tracekit.trace.records import PROC_METRICS
from tracekit.trace.requests import service_overhead


def request(ts_start: int, ts_end: int, cpu_ms: float, pid: int = 40) -> dict:
    return {"node": "cloud1", "pid": pid, "create_time_ms": 500, "process_shared": True, "module": "http",
            "ts_start": ts_start, "ts_end": ts_end, "cpu_ms": cpu_ms}  # fmt: skip


def samples(tmp_path, rows: list[tuple[int, int, int]]) -> None:
    """The server's process samples: (ts_ms, pid, CPU ms in the interval)."""
    table = pa.Table.from_pylist([{f.name: None for f in PROC_METRICS} | {
        "node": "cloud1", "pid": pid, "create_time_ms": 500, "ts_ms": ts, "dt_ms": 1000, "cpu_user_ms": cpu,
        "cpu_system_ms": 0, "rss_kb": 1, "num_threads": 1} for ts, pid, cpu in rows], schema=PROC_METRICS)  # fmt: skip
    cctf.write_table(cctf.node_file(tmp_path, "proc_metrics", "cloud1"), "proc_metrics", table)


def test_the_server_s_work_outside_its_requests_is_the_rest_of_its_cpu(tmp_path):
    # Start-up (1000: before the first request), three samples while serving, one after the last request.
    samples(tmp_path, [(1000, 40, 300), (2000, 40, 50), (3000, 40, 50), (4000, 40, 100), (5000, 40, 20), (3000, 41, 999)])
    figures = service_overhead(tmp_path, [request(1500, 1600, 40.0), request(3500, 3700, 80.0),
                                          {**request(1500, 1600, 5.0), "process_shared": False}])  # fmt: skip
    assert figures == {"cloud1 40@500": {"node": "cloud1", "pid": 40, "create_time_ms": 500, "requests": 2, "request_cpu_ms": 120.0,
                                     "process_cpu_ms": 200, "samples": 3, "outside_requests_share": 0.4}}  # fmt: skip
    declared = load_schema("cctf/audit")["properties"]["service_overhead"]
    jsonschema.validate(figures, declared)
    jsonschema.validate(None, declared)


def test_no_service_that_measured_its_requests_cpu_gives_none(tmp_path):
    samples(tmp_path, [(1000, 40, 300)])
    assert service_overhead(tmp_path, [{**request(100, 200, 1.0), "cpu_ms": None}]) is None
    assert service_overhead(tmp_path, []) is None


def test_two_processes_of_one_pid_are_two_services(tmp_path):
    """A restarted service (or two containers' pid 1) reuses a pid: each process is its own entry."""
    samples(tmp_path, [(2000, 40, 50)])
    later = {**request(1500, 1600, 10.0), "create_time_ms": 9000}
    figures = service_overhead(tmp_path, [request(1500, 1600, 40.0), later])
    assert sorted(figures) == ["cloud1 40@500", "cloud1 40@9000"]
    assert figures["cloud1 40@9000"]["process_cpu_ms"] == 0 and figures["cloud1 40@9000"]["outside_requests_share"] is None
