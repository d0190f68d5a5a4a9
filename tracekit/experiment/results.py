"""A run's headline figures in one place: ``results.json`` beside ``status.json``.

input:  a run folder: status.json, the controller's dispatch.json and
        terminal_records.jsonl (a workload with tasks), the load's
        summary.json (an HTTP workload), each node's collector.jsonl, the
        parse audit (cctf/audit.json)
output: ``results.json``: the run's final state; for tasks the makespan,
        tasks done / failed / timed out / unfinished, the done tasks'
        duration percentiles, the busy-time balance across workers and, per
        node, busy time and task CPU; for requests the count, achieved rate,
        success ratio and latency percentiles (from the intended send time,
        the open-loop latency); the collectors' own CPU; the parse audit's
        contention notes (nodes whose tasks shared saturated CPUs with other
        work: a note, not a warning, the run's state is not changed by it)
        and the tasks' contended share; and the summary's lines made from it

tracekit-run writes it when a run ends (also a failed one: what was
measured is said); the summary and the report read it. A figure whose file
is missing is null, never made up.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tracekit import runfolder
from tracekit.jsonl import read_jsonl
from tracekit.trace import cctf

RESULTS = "results.json"
PERCENTILES = ("p50", "p99", "p99.9")
TASK_PERCENTILES = {"p50": 50.0, "p99": 99.0}


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _nearest_rank(values: list[float], pct: float, per_unit: float) -> float | None:
    """The ``pct`` percentile of ``values`` by nearest rank (as the load's latency percentiles, a value that
    was measured), divided by ``per_unit``; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)] / per_unit, 3)


def busy_balance(busy_s: list[float]) -> float | None:
    """The workers' busy-time balance: the busiest one's busy time over the mean (1.0: even; 2.0 on two
    workers: one did all). The makespan cannot be shorter than the busiest worker's time, so this says how
    much longer than an even share it is; a worker given nothing counts (as 0). None without busy time."""
    if not busy_s or sum(busy_s) <= 0:
        return None
    return round(max(busy_s) / (sum(busy_s) / len(busy_s)), 3)


def _tasks(run_dir: Path) -> dict[str, Any] | None:
    found = sorted((run_dir / "nodes").glob(f"*/{runfolder.DISPATCH_SUMMARY}"))
    summary = read_json_object(found[0]) if found else None
    if summary is None:
        return None
    terminal = found[0].parent / runfolder.TERMINAL_RECORDS
    records = list(read_jsonl(terminal)) if terminal.exists() else []
    cpu_ms: dict[str, float] = {}
    timed_out = 0
    durations_ms: list[float] = []
    for record in records:
        if not isinstance(record, dict):
            continue
        node = str(record.get("node"))
        value = record.get("cpu_ms")
        cpu_ms[node] = cpu_ms.get(node, 0.0) + (float(value) if isinstance(value, int | float) else 0.0)
        timed_out += record.get("timed_out") is True
        start, end = record.get("ts_start"), record.get("ts_end")
        if record.get("state") == "done" and isinstance(start, int | float) and isinstance(end, int | float):
            durations_ms.append(max(0.0, float(end - start)))  # both on the worker's clock: a true duration
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
        # Done tasks only (a failed task's time says how soon it failed, not how long the work takes).
        "duration_s": {p: _nearest_rank(durations_ms, pct, 1000) for p, pct in TASK_PERCENTILES.items()},
        "busy_balance": busy_balance([counts["busy_s"] for counts in per_node.values()]),
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
    audit = cctf.read_audit(run_dir / cctf.CCTF) or {}
    nodes = (audit.get("contention") or {}).get("nodes") or {}
    return [str(n["note"]) for _, n in sorted(nodes.items()) if isinstance(n, dict) and n.get("note")]


def _contended_task_share(run_dir: Path) -> float | None:
    """The share of the run's task time on saturated CPUs beside other work (the audit's per-node
    contended_task_share, weighted by each node's task time); None where the audit has no such figure."""
    audit = cctf.read_audit(run_dir / cctf.CCTF) or {}
    nodes = (audit.get("contention") or {}).get("nodes") or {}
    weighted = [(n["contended_task_share"], n.get("task_time_s") or 0) for n in nodes.values()
                if isinstance(n, dict) and isinstance(n.get("contended_task_share"), int | float)]  # fmt: skip
    total = sum(time for _, time in weighted)
    return round(sum(share * time for share, time in weighted) / total, 3) if total > 0 else None


def _collector_node(path: Path) -> dict[str, Any] | None:
    """One node's collector CPU from its own records (collector.jsonl): from its start record (its
    imports and start-up already spent) to its last record (the stop record, with the final sample),
    summed over each collector process the file holds (a resumed run starts another)."""
    spans: dict[Any, list[dict[str, Any]]] = {}
    for record in read_jsonl(path):
        if all(isinstance(record.get(k), int | float) for k in ("ts_ms", "cpu_user_ms", "cpu_system_ms")):
            spans.setdefault(record.get("pid"), []).append(record)
    cpu_ms = wall_ms = 0.0
    for records in spans.values():
        first, last = records[0], records[-1]
        cpu_ms += (last["cpu_user_ms"] + last["cpu_system_ms"]) - (first["cpu_user_ms"] + first["cpu_system_ms"])
        wall_ms += last["ts_ms"] - first["ts_ms"]
    if wall_ms <= 0:
        return None
    return {"cpu_s": round(cpu_ms / 1000, 3), "wall_s": round(wall_ms / 1000, 3),
            "cpu_pct_of_core": round(100 * cpu_ms / wall_ms, 3)}  # fmt: skip


def _collectors(run_dir: Path) -> dict[str, Any] | None:
    """The collectors' own CPU, per node and as the mean over nodes (% of one core); None without records."""
    per_node = {}
    for path in sorted((run_dir / "nodes").glob(f"*/{runfolder.COLLECTOR_EVENTS}")):
        try:
            figures = _collector_node(path)
        except OSError:
            figures = None
        if figures is not None:
            per_node[path.parent.name] = figures
    if not per_node:
        return None
    mean = sum(n["cpu_pct_of_core"] for n in per_node.values()) / len(per_node)
    return {"cpu_pct_of_core": round(mean, 3), "per_node": per_node}


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
        "contended_task_share": _contended_task_share(run_dir),
        "collectors": _collectors(run_dir),
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
        durations, balance = tasks.get("duration_s") or {}, tasks.get("busy_balance")
        if durations.get("p50") is not None:
            lines.append(f"    done tasks' durations: p50 {durations['p50']:g} s, p99 {durations['p99']:g} s; busy "
                         f"balance (busiest / mean) {'-' if balance is None else format(balance, 'g')}")  # fmt: skip
    requests = figures.get("requests")
    if requests:
        latency = requests["latency_ms"]
        shown = ", ".join(f"{p} {latency[p]:g} ms" if latency.get(p) is not None else f"{p} -" for p in PERCENTILES)
        lines.append(f"  requests: {requests['requests']}, {requests['rate_per_s'] or 0:.1f}/s sent, success "
                     f"{100 * (requests['success_ratio'] or 0):.1f}%, latency from intended send {shown}; "
                     f"{requests['dropped']} dropped, {requests['errors']} errors")  # fmt: skip
    collectors = figures.get("collectors")
    if collectors:
        lines.append(f"  collectors: {collectors['cpu_pct_of_core']:g}% of a core on average per node (their own "
                     "CPU, start to stop)")  # fmt: skip
    # Not a warning: a run on a shared machine is what it measured; its reader must know the durations stretched.
    lines += [f"  contention: {note}" for note in figures.get("contention") or []]
    return lines
