"""A run's headline figures in one place: ``results.json`` beside ``status.json``.

input:  a run folder: status.json, the controller's dispatch.json and
        terminal_records.jsonl (a workload with tasks), the load's
        summary.json (an HTTP workload)
output: ``results.json``: the run's final state; for tasks the makespan,
        tasks done / failed / timed out / unfinished and, per node, busy
        time and task CPU; for requests the count, achieved rate, success
        ratio and latency percentiles (from the intended send time, the
        open-loop latency); the parse audit's contention notes (nodes whose
        tasks shared saturated CPUs with other work: a note, not a warning,
        the run's state is not changed by it); and the summary's lines made
        from it

tracekit-run writes it when a run ends (also a failed one: what was
measured is said); the summary and the report read it. A figure whose file
is missing is null, never made up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tracekit import runfolder
from tracekit.jsonl import read_jsonl
from tracekit.trace import cctf

RESULTS = "results.json"
PERCENTILES = ("p50", "p99", "p99.9")


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _tasks(run_dir: Path) -> dict[str, Any] | None:
    found = sorted((run_dir / "nodes").glob(f"*/{runfolder.DISPATCH_SUMMARY}"))
    summary = read_json_object(found[0]) if found else None
    if summary is None:
        return None
    terminal = found[0].parent / runfolder.TERMINAL_RECORDS
    records = list(read_jsonl(terminal)) if terminal.exists() else []
    cpu_ms: dict[str, float] = {}
    timed_out = 0
    for record in records:
        if not isinstance(record, dict):
            continue
        node = str(record.get("node"))
        value = record.get("cpu_ms")
        cpu_ms[node] = cpu_ms.get(node, 0.0) + (float(value) if isinstance(value, int | float) else 0.0)
        timed_out += record.get("timed_out") is True
    per_node = {
        node: {"done": counts.get("done", 0), "failed": counts.get("failed", 0),
               "busy_s": round(counts.get("busy_ms", 0) / 1000, 3),
               "task_cpu_s": round(cpu_ms.get(node, 0.0) / 1000, 3)}
        for node, counts in sorted((summary.get("per_node") or {}).items())
    }  # fmt: skip
    makespan = summary.get("makespan_ms")
    return {
        "policy": summary.get("policy"),
        "planned": summary.get("tasks"),
        "done": summary.get("done"),
        "failed": summary.get("failed"),
        "timed_out": timed_out,  # failed past their own time-out (counted in failed)
        "unfinished": summary.get("unfinished") or summary.get("timed_out") or 0,  # no terminal record by the end
        "makespan_s": round(makespan / 1000, 3) if isinstance(makespan, int | float) else None,
        "per_node": per_node,
    }


def _requests(run_dir: Path) -> dict[str, Any] | None:
    found = sorted((run_dir / "nodes").glob(f"*/{runfolder.LOAD_SUMMARY}"))
    load = read_json_object(found[0]) if found else None
    if load is None:
        return None
    latency = load.get("latency_from_intended_ms") or {}
    return {
        "requests": load.get("requests"),
        "rate_per_s": load.get("rate"),  # achieved sending rate
        "throughput_per_s": load.get("throughput"),  # answered per second
        "success_ratio": load.get("success_ratio"),
        "latency_ms": {p: latency.get(p) for p in PERCENTILES},
        "dropped": load.get("dropped"),
        "errors": sum((load.get("errors") or {}).values()),
    }


def _contention(run_dir: Path) -> list[str]:
    """The audit's note on each node whose tasks shared saturated CPUs with other work (tracekit.trace.contention)."""
    audit = read_json_object(run_dir / cctf.CCTF / cctf.AUDIT) or {}
    nodes = (audit.get("contention") or {}).get("nodes") or {}
    return [str(n["note"]) for _, n in sorted(nodes.items()) if isinstance(n, dict) and n.get("note")]


def headline(run_dir: Path) -> dict[str, Any]:
    """The run's headline figures, from its files as they are now."""
    status = read_json_object(run_dir / "status.json") or {}
    return {
        "run_id": status.get("run_id", run_dir.name),
        "state": status.get("state"),
        "warnings": status.get("warnings") or [],
        "tasks": _tasks(run_dir),
        "requests": _requests(run_dir),
        "contention": _contention(run_dir),
    }


def write_results(run_dir: Path) -> dict[str, Any]:
    figures = headline(run_dir)
    path = run_dir / RESULTS
    staged = path.with_name(f".{RESULTS}.tmp")
    staged.write_text(json.dumps(figures, indent=2) + "\n")
    staged.replace(path)
    return figures


def summary_lines(figures: dict[str, Any]) -> list[str]:
    """The summary's lines of the figures (none for what the run did not measure)."""
    lines = []
    tasks = figures.get("tasks")
    if tasks:
        makespan = f"{tasks['makespan_s']:.1f} s" if tasks.get("makespan_s") is not None else "-"
        extra = (f", {tasks['timed_out']} of them timed out" if tasks.get("timed_out") else "") + (
            f", {tasks['unfinished']} unfinished" if tasks.get("unfinished") else "")
        lines.append(f"  tasks: {tasks['done']}/{tasks['planned']} done, {tasks['failed']} failed{extra}; "
                     f"makespan {makespan} ({tasks['policy']})")  # fmt: skip
        for node, counts in tasks["per_node"].items():
            lines.append(f"    {node}: {counts['done']} done, {counts['failed']} failed, busy {counts['busy_s']:.1f} s, "
                         f"task CPU {counts['task_cpu_s']:.1f} s")  # fmt: skip
    requests = figures.get("requests")
    if requests:
        latency = requests["latency_ms"]
        shown = ", ".join(f"{p} {latency[p]:g} ms" if latency.get(p) is not None else f"{p} -" for p in PERCENTILES)
        lines.append(f"  requests: {requests['requests']}, {requests['rate_per_s'] or 0:.1f}/s sent, success "
                     f"{100 * (requests['success_ratio'] or 0):.1f}%, latency from intended send {shown}; "
                     f"{requests['dropped']} dropped, {requests['errors']} errors")  # fmt: skip
    # Not a warning: a run on a shared machine is what it measured; its reader must know the durations stretched.
    lines += [f"  contention: {note}" for note in figures.get("contention") or []]
    return lines
