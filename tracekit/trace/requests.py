"""The load generator's requests joined to the services' invocations: ``load results + invocations -> requests``.

input:  each node folder's load results (load/**/results.jsonl, written by
        ``tracekit load``; timestamps on that node's clock) and the trace's
        invocations (controller clock)
output: cctf/requests.jsonl, one record per request the generator
        scheduled: what the client saw (intended and actual send, latency
        from each, status, error, dropped) next to what the first service
        it reached recorded (node, task id, server time, CPU); the joined
        invocations get client_latency_ms and client_send_lag_ms; figures
        for the audit

The key: each request carries a new traceparent whose parent id is the
request's own span id, so the server's event for it has the same trace id
and that span id as its parent_span_id. Hops further down a chain share the
trace id but have another parent: only the first hop is a request's server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tracekit.load.timestamps import parse_rfc3339_ns
from tracekit.trace.rawrun import BadLines, NodeFolder, read_records

RESULTS_GLOB = "load/**/results.jsonl"
RESULT_REQUIRED = ("seq", "code", "timestamp", "latency", "intended", "trace_id", "span_id", "error")


def result_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(RESULTS_GLOB))


def _request_record(result: dict[str, Any], source: str, node: NodeFolder | None) -> dict[str, Any]:
    offset_ns = int((node.clock_offset_ms or 0) * 1_000_000) if node is not None else 0
    intended_ns = parse_rfc3339_ns(result["intended"]) + offset_ns
    sent = not result.get("dropped")
    send_ns = parse_rfc3339_ns(result["timestamp"]) + offset_ns if sent else None
    return {
        "source": source,
        "seq": result["seq"],
        "client_node": node.node if node is not None else None,
        "trace_id": result["trace_id"],
        "span_id": result["span_id"],
        "method": result.get("method"),
        "url": result.get("url"),
        "warmup": bool(result.get("warmup")),
        "dropped": not sent,
        "ts_intended_ms": intended_ns // 1_000_000,
        "ts_send_ms": send_ns // 1_000_000 if send_ns is not None else None,
        "latency_ms": round(result["latency"] / 1e6, 3) if sent else None,
        "latency_intended_ms": round(result["latency_intended"] / 1e6, 3) if sent else None,
        "send_lag_ms": round(result["send_lag"] / 1e6, 3) if sent and result.get("send_lag") is not None else None,
        "code": result["code"],
        "error": result["error"] or None,
        "bytes_in": result.get("bytes_in"),
        "bytes_out": result.get("bytes_out"),
        "server_node": None,
        "server_task_id": None,
        "server_ms": None,
        "server_cpu_ms": None,
        "outside_server_ms": None,  # client latency minus server time: network, queues, the server's HTTP layer
    }


def read_requests(folders: list[tuple[Path, NodeFolder | None]], run_dir: Path, bad: BadLines) -> list[dict[str, Any]]:
    """Every request of every results file, with its node's clock offset applied."""
    records = []
    for folder, node in folders:
        for path in result_files(folder):
            source = str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)
            records += [_request_record(r, source, node) for r in read_records(path, bad, required=RESULT_REQUIRED)]
    records.sort(key=lambda r: (r["ts_intended_ms"], r["source"], r["seq"]))
    return records


def join(requests: list[dict[str, Any]], invocations: list[dict[str, Any]]) -> dict[str, int]:
    """Fill in each request's server side, and each joined invocation's client side; the counts."""
    first_hop = {
        (r["trace_id"], r["parent_span_id"]): r
        for r in invocations
        if r.get("module") == "http" and r.get("parent_span_id") is not None
    }
    joined = 0
    for request in requests:
        invocation = first_hop.get((request["trace_id"], request["span_id"]))
        if invocation is None:
            continue
        joined += 1
        server_ms = invocation["server_us"] / 1000 if invocation.get("server_us") is not None else invocation["duration_ms"]
        request.update(server_node=invocation["node"], server_task_id=invocation["task_id"],
                       server_ms=round(server_ms, 3), server_cpu_ms=invocation.get("cpu_ms"))  # fmt: skip
        if request["latency_ms"] is not None:
            request["outside_server_ms"] = round(request["latency_ms"] - server_ms, 3)
        invocation["client_latency_ms"] = request["latency_ms"]
        invocation["client_send_lag_ms"] = request["send_lag_ms"]
    # A warm-up request's invocations, every hop of its chain (its trace id), are flagged: no export takes them.
    warm = {r["trace_id"] for r in requests if r["warmup"]}
    for invocation in invocations:
        if invocation.get("module") == "http" and invocation.get("trace_id") in warm:
            invocation["warmup"] = True
    sent = sum(1 for r in requests if not r["dropped"])
    return {
        "requests": len(requests),
        "requests_sent": sent,
        "requests_joined": joined,
        "requests_without_server_event": sent - joined,
        # Hops further down a chain, and requests from other clients.
        "http_invocations_from_other_callers": sum(1 for r in invocations if r.get("module") == "http") - joined,
    }



def service_overhead(cctf_dir: Path, invocations: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Each traced service process's own work beside its requests' (the audit's service_overhead): the CPU its
    requests' steps measured (their cpu_ms, the middleware's) against the process's CPU in the collector's
    samples while it served them (rows ending from its first request's start to the first sample after its
    last request's end). The rest is the server's work outside request steps (HTTP parsing, the event loop):
    per "node pid@create_time_ms" key; None when no service recorded its requests' CPU."""
    import pyarrow.compute as pc

    from tracekit.trace import cctf

    served: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for r in invocations:
        if r.get("process_shared") and r.get("cpu_ms") is not None and r.get("pid") is not None:
            served.setdefault((r["node"], r["pid"], r["create_time_ms"]), []).append(r)
    if not served or not cctf.has_table(cctf_dir, "proc_metrics"):
        return None
    figures = {}
    for (node, pid, created), requests in sorted(served.items()):
        rows = cctf.read_table(cctf_dir, "proc_metrics", ["ts_ms", "cpu_user_ms", "cpu_system_ms"], nodes=[node],
                               where=(pc.field("pid") == pid) & (pc.field("create_time_ms") == created))  # fmt: skip
        first, last = min(r["ts_start"] for r in requests), max(r["ts_end"] for r in requests)
        ends = rows.column("ts_ms").to_pylist()
        closing = min((ts for ts in ends if ts >= last), default=None)
        window = [i for i, ts in enumerate(ends) if ts > first and (closing is None or ts <= closing)]
        user, system = rows.column("cpu_user_ms").to_pylist(), rows.column("cpu_system_ms").to_pylist()
        process_ms = sum((user[i] or 0) + (system[i] or 0) for i in window)
        request_ms = sum(r["cpu_ms"] for r in requests)
        figures[f"{node} {pid}@{created}"] = {  # a pid may serve twice (a restarted service, two containers)
            "node": node, "pid": pid, "create_time_ms": created, "requests": len(requests),
            "request_cpu_ms": round(request_ms, 3),
            "process_cpu_ms": process_ms, "samples": len(window),
            "outside_requests_share": round(1 - request_ms / process_ms, 3) if process_ms > 0 else None,
        }  # fmt: skip
    return figures
