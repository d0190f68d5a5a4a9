"""What a load run gives: ``LoadRun -> results.jsonl, summary (dict, JSON, text)``.

input:  a LoadRun (tracekit.load.generator)
output: per request one JSON line shaped like vegeta's ``encode --to json``
        (attack, seq, code, timestamp, latency in ns, bytes_out, bytes_in,
        error, body, method, url, headers) plus intended (the intended
        send time, RFC 3339), latency_intended (ns from the intended time),
        send_lag (ns), trace_id, span_id, warmup, dropped; and a summary
        like ``vegeta report``'s

The summary leaves out the warm-up. "latency" is from the actual send to
the end of the response, as vegeta's; "latency from intended" starts at the
intended send time, so it also holds the time a request waited because the
generator fell behind (the figure to quote for an open-loop test). Dropped
requests count as requests, as errors and against the success ratio.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from collections.abc import Callable
from typing import Any

from tracekit import runfolder
from tracekit.load.generator import LoadRun, LoadSpec, Result, run_load
from tracekit.load.timestamps import rfc3339

LATE_NS = 10_000_000  # sent more than this after its intended time: "late"
PERCENTILES = (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p99.9", 99.9))


def result_record(run: LoadRun, r: Result) -> dict[str, Any]:
    sent = r.send_ns is not None
    end = r.end_ns if r.end_ns is not None else (r.send_ns or r.intended_ns)
    return {
        "attack": run.spec.attack,
        "seq": r.seq,
        "code": r.status,
        "timestamp": rfc3339(run.start_wall_ns + (r.send_ns if sent else r.intended_ns)),
        "latency": end - r.send_ns if sent else 0,
        "bytes_out": r.bytes_out,
        "bytes_in": r.bytes_in,
        "error": r.error or "",
        "body": "",  # vegeta's response body (base64); not kept
        "method": run.spec.method,
        "url": run.spec.urls[r.target],
        "headers": None,
        "intended": rfc3339(run.start_wall_ns + r.intended_ns),
        "latency_intended": end - r.intended_ns if sent else 0,
        "send_lag": r.send_ns - r.intended_ns if sent else None,
        "trace_id": r.trace_id or None,
        "span_id": r.span_id or None,
        "warmup": r.warmup,
        "dropped": not sent,
    }


def write_results(run: LoadRun, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        out.writelines(json.dumps(result_record(run, r), separators=(",", ":")) + "\n" for r in run.results)


def _nearest_rank(ordered: list[int], pct: float) -> int:
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _distribution(values: list[int]) -> dict[str, float] | None:
    """min, mean, the percentiles and max, in ms (nearest rank); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    figures = {"min": ordered[0], "mean": sum(ordered) / len(ordered)}
    figures.update((name, _nearest_rank(ordered, pct)) for name, pct in PERCENTILES)
    figures["max"] = ordered[-1]
    return {name: round(value / 1e6, 3) for name, value in figures.items()}


def _scheduled(run: LoadRun, due: int) -> int | None:
    """Requests the plan has after its warm-up: all were due unless the run was interrupted; then
    only constant arrivals know their number (Poisson ones are drawn as they are sent: None)."""
    if not run.interrupted:
        return due
    count, warmups = run.schedule.count, run.schedule.warmup_count
    return None if count is None or warmups is None else count - warmups


def summarize(run: LoadRun) -> dict[str, Any]:
    measured = [r for r in run.results if not r.warmup]
    sent = [r for r in measured if r.send_ns is not None]
    answered = [r for r in sent if r.error is None and r.end_ns is not None]
    success = [r for r in answered if 200 <= r.status < 400]
    first = min((r.intended_ns for r in measured), default=0)
    last_send = max((r.send_ns for r in sent), default=first)
    last_end = max((r.end_ns for r in sent if r.end_ns is not None), default=last_send)
    attack_s = (last_send - first) / 1e9
    total_s = (last_end - first) / 1e9
    scheduled = _scheduled(run, len(measured))
    errors = Counter(r.error.split(":", 1)[0] for r in measured if r.error)
    lags = [r.send_ns - r.intended_ns for r in sent]
    return {
        "urls": list(run.spec.urls),
        "method": run.spec.method,
        "arrival": run.spec.arrival,
        "target_rate": [{"rate": step.rate, "duration_s": step.duration_ns / 1e9} for step in run.spec.plan],
        "warmup_requests": len(run.results) - len(measured),
        "scheduled": scheduled,
        "requests": len(measured),
        "not_due": None if scheduled is None else scheduled - len(measured),  # interrupted before their time
        "interrupted": run.interrupted,
        "sent": len(sent),
        "rate": round(len(sent) / attack_s, 3) if attack_s > 0 else None,
        "throughput": round(len(success) / total_s, 3) if total_s > 0 else None,
        "duration_s": round(attack_s, 6),
        "wait_s": round((last_end - last_send) / 1e9, 6),
        "success_ratio": round(len(success) / len(measured), 6) if measured else None,
        "status_codes": {str(code): n for code, n in sorted(Counter(r.status for r in answered).items())},
        "errors": dict(sorted(errors.items())),
        "dropped": sum(1 for r in measured if r.send_ns is None),
        "late": sum(1 for lag in lags if lag > LATE_NS),
        "late_after_ms": LATE_NS / 1e6,
        "latency_ms": _distribution([r.end_ns - r.send_ns for r in answered]),
        "latency_from_intended_ms": _distribution([r.end_ns - r.intended_ns for r in answered]),
        "send_lag_ms": _distribution(lags),
        "bytes_in": {"total": sum(r.bytes_in for r in answered),
                     "mean": round(sum(r.bytes_in for r in answered) / len(answered), 3) if answered else None},
        "bytes_out": {"total": sum(r.bytes_out for r in sent),
                      "mean": round(sum(r.bytes_out for r in sent) / len(sent), 3) if sent else None},
    }  # fmt: skip


def summary_text(summary: dict[str, Any]) -> str:
    """The summary as ``vegeta report`` lays it out, with the open-loop figures added."""

    def row(figures: dict[str, float] | None) -> str:
        if figures is None:
            return "-"
        return ", ".join(f"{figures[name]:.3f}" for name in ("min", "mean", "p50", "p90", "p95", "p99", "p99.9", "max"))

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    codes = " ".join(f"{code}:{n}" for code, n in summary["status_codes"].items()) or "-"
    errors = " ".join(f"{kind}:{n}" for kind, n in summary["errors"].items()) or "-"
    ratio = "-" if summary["success_ratio"] is None else f"{100 * summary['success_ratio']:.2f}%"
    lines = [
        f"Requests      [total, rate, throughput]         {summary['requests']}, {number(summary['rate'])}, "
        f"{number(summary['throughput'])}",
        f"Duration      [total, attack, wait]             {summary['duration_s'] + summary['wait_s']:.3f}s, "
        f"{summary['duration_s']:.3f}s, {summary['wait_s']:.3f}s",
        f"Latencies ms  [min, mean, 50, 90, 95, 99, 99.9, max]  {row(summary['latency_ms'])}",
        f"From intended [min, mean, 50, 90, 95, 99, 99.9, max]  {row(summary['latency_from_intended_ms'])}",
        f"Send lag ms   [min, mean, 50, 90, 95, 99, 99.9, max]  {row(summary['send_lag_ms'])}",
        f"Bytes In      [total, mean]                     {summary['bytes_in']['total']}, "
        f"{number(summary['bytes_in']['mean'])}",
        f"Bytes Out     [total, mean]                     {summary['bytes_out']['total']}, "
        f"{number(summary['bytes_out']['mean'])}",
        f"Success       [ratio]                           {ratio}",
        f"Status Codes  [code:count]                      {codes}",
        f"Shortfall     [dropped, late > {summary['late_after_ms']:g} ms]            "
        f"{summary['dropped']}, {summary['late']}",
        f"Error Set     [kind:count]                      {errors}",
    ]
    if summary["interrupted"] and summary["not_due"] is not None:
        lines.append(f"Interrupted: {summary['not_due']} scheduled requests were not yet due and were not sent")
    elif summary["interrupted"]:
        lines.append("Interrupted: the rest of the schedule was not yet due and was not sent")
    return "\n".join(lines)


def write_summary(summary: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")


def run_and_write(
    spec: LoadSpec,
    results_path: Path | None,
    summary_path: Path | None,
    progress: Callable[[dict], None] | None = None,
) -> tuple[LoadRun, dict[str, Any]]:
    """Run the load, then write its results and summary (also when it was interrupted)."""
    for path in (results_path, summary_path):
        if path is not None:
            runfolder.ensure_writable_dir(path.parent, "output folder")
    run = run_load(spec, progress)
    summary = summarize(run)
    if results_path is not None:
        write_results(run, results_path)
    if summary_path is not None:
        write_summary(summary, summary_path)
    return run, summary
