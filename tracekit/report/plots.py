"""The report's figures, one function each: a RunView in, a PNG file out (or None with a note).

input:  a tracekit.report.data.RunView
output: <out>/timelines.png, gantt.png, queue.png, longest.png, http.png

matplotlib's object interface (a Figure per plot, no pyplot): no global
state, and the Agg canvas writes the PNG without a display.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from tracekit.report.data import RunView

DPI = 100
WIDTH_IN = 11
FAILED = "#d62728"
# Spans drawn one by one up to this many tasks per node; beyond, the count of running tasks says it.
MAX_SPANS = 200
PALETTE = ("#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def run_start_ms(view: RunView) -> float:
    """Time zero of every plot: the first moment anything in the trace happened."""
    moments = [t["ts_enqueue"] or t["ts_start"] for t in view.invocations if (t.get("ts_enqueue") or t.get("ts_start"))]
    moments += [series.ts_ms[0] for series in view.host.values() if len(series.ts_ms)]
    moments += [p["ts_ms"] for p in view.placements[:1]]
    return float(min(moments)) if moments else 0.0


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def profile_of(task: dict[str, Any]) -> str:
    """What colours a task: its scheduling profile where the trace has one, else its module."""
    return str(task.get("profile") or task.get("module") or "?")


def _colours(tasks: list[dict[str, Any]]) -> dict[str, str]:
    profiles = sorted({profile_of(t) for t in tasks})
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(profiles)}


def _running_count(tasks: list[dict[str, Any]], start: str, end: str, t0: float) -> tuple[np.ndarray, np.ndarray]:
    """A step function: how many tasks are between their ``start`` and ``end`` field, in s from t0."""
    changes = [(t[start], 1) for t in tasks if t.get(start) is not None and t.get(end) is not None]
    changes += [(t[end], -1) for t in tasks if t.get(start) is not None and t.get(end) is not None]
    if not changes:
        return np.array([]), np.array([])
    changes.sort()
    times = np.array([c[0] for c in changes], dtype=np.float64)
    return (times - t0) / 1000.0, np.cumsum([c[1] for c in changes])


def timelines(view: RunView, out: Path) -> Path | None:
    """Per node: CPU and memory use from the host samples, the node's task spans over them."""
    if not view.host:
        return None
    t0 = run_start_ms(view)
    nodes = sorted(view.host)
    figure = Figure(figsize=(WIDTH_IN, 2.3 * len(nodes) + 0.4))
    axes = figure.subplots(len(nodes), 1, sharex=True, squeeze=False)[:, 0]
    by_node = defaultdict(list)
    for invocation in view.invocations:  # tasks and HTTP requests alike
        by_node[invocation.get("node")].append(invocation)
    for ax, node in zip(axes, nodes):
        series = view.host[node]
        seconds = (series.ts_ms - t0) / 1000.0
        ax.plot(seconds, series.cpu_util_pct, color="#1f77b4", lw=1, label="CPU used %")
        ax.plot(seconds, series.mem_used_pct, color="#9467bd", lw=1, label="memory used %")
        ax.set_ylim(0, 105)
        ax.set_ylabel(node)
        tasks = by_node.get(node, [])
        if len(tasks) <= MAX_SPANS:
            for task in tasks:
                if task.get("ts_start") is not None and task.get("ts_end") is not None:
                    ax.axvspan((task["ts_start"] - t0) / 1000, (task["ts_end"] - t0) / 1000,
                               color=FAILED if not task.get("ok") else "#2ca02c", alpha=0.08, lw=0)  # fmt: skip
        running = ax.twinx()
        x, count = _running_count(tasks, "ts_start", "ts_end", t0)
        if len(x):
            running.step(x, count, where="post", color="#2ca02c", lw=1, label="invocations running")
        running.set_ylabel("running")
        running.set_ylim(0, max(1, int(count.max()) if len(count) else 1) * 1.15)
        if ax is axes[0]:
            handles = ax.get_legend_handles_labels()[0] + running.get_legend_handles_labels()[0]
            ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=8, ncol=3, frameon=False)
    axes[-1].set_xlabel("seconds since the run's first event")
    return _save(figure, out / "timelines.png")


def _lanes(tasks: list[dict[str, Any]]) -> list[int]:
    """A lane per task such that tasks in one lane never overlap (first free lane, in start order)."""
    lane_free_at: list[int] = []
    lanes = []
    for task in tasks:
        for lane, free_at in enumerate(lane_free_at):
            if free_at <= task["ts_start"]:
                lane_free_at[lane] = task["ts_end"]
                lanes.append(lane)
                break
        else:
            lane_free_at.append(task["ts_end"])
            lanes.append(len(lane_free_at) - 1)
    return lanes


def _worker_rows(node: str, tasks: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    """Row names and each task's row: the worker slot that ran it (``consumer``) where the trace says,
    else the first row free at its start."""
    if all(t.get("consumer") for t in tasks):
        names = sorted({t["consumer"] for t in tasks})
        return names, [names.index(t["consumer"]) for t in tasks]
    lanes = _lanes(tasks)
    return [f"{node} #{lane + 1}" for lane in range(max(lanes) + 1)], lanes


def gantt(view: RunView, out: Path) -> Path | None:
    """Tasks per worker slot over time, coloured by profile, failed ones red-edged."""
    tasks = [t for t in view.tasks if t.get("ts_start") is not None and t.get("ts_end") is not None]
    if not tasks:
        return None
    t0 = run_start_ms(view)
    colours = _colours(tasks)
    rows: list[str] = []
    bars: dict[tuple[int, str, bool], list[tuple[float, float]]] = defaultdict(list)
    for node in sorted({t["node"] for t in tasks}):
        mine = sorted((t for t in tasks if t["node"] == node), key=lambda t: (t["ts_start"], t["ts_end"]))
        row_names, lanes = _worker_rows(node, mine)
        base = len(rows)
        rows += row_names
        for task, lane in zip(mine, lanes):
            width = max(task["ts_end"] - task["ts_start"], 1) / 1000
            bars[(base + lane, profile_of(task), bool(task.get("ok")))].append(((task["ts_start"] - t0) / 1000, width))
    figure = Figure(figsize=(WIDTH_IN, min(12, 1.2 + 0.32 * len(rows))))
    ax = figure.subplots()
    for (row, profile, ok), spans in bars.items():
        ax.broken_barh(spans, (row - 0.4, 0.8), facecolors=colours[profile],
                       edgecolors=FAILED if not ok else "none", linewidth=1.2 if not ok else 0)  # fmt: skip
    ax.set_yticks(range(len(rows)), rows, fontsize=8 if len(rows) < 30 else 5)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run's first event")
    handles = [Patch(color=c, label=p) for p, c in colours.items()]
    if any(not t.get("ok") for t in tasks):
        handles.append(Patch(facecolor="white", edgecolor=FAILED, label="failed"))
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1, 1.0), fontsize=8, ncol=min(6, len(handles)), frameon=False)
    ax.set_title("Tasks per worker slot")
    return _save(figure, out / "gantt.png")


def queue(view: RunView, out: Path) -> Path | None:
    """The backlog (tasks placed, not started) and running tasks over time; every placement per node."""
    tasks = [t for t in view.tasks if t.get("ts_enqueue") is not None]
    if not tasks and not view.placements:
        return None
    t0 = run_start_ms(view)
    figure = Figure(figsize=(WIDTH_IN, 5.2))
    backlog_ax, placement_ax = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    for start, end, label, colour in (("ts_enqueue", "ts_start", "queued (placed, not started)", "#ff7f0e"),
                                      ("ts_start", "ts_end", "running", "#2ca02c")):  # fmt: skip
        x, count = _running_count(tasks, start, end, t0)
        if len(x):
            backlog_ax.step(x, count, where="post", label=label, color=colour, lw=1.2)
    backlog_ax.set_ylabel("tasks")
    backlog_ax.legend(loc="upper right", fontsize=8)
    backlog_ax.set_title("Queue backlog and placements")
    if view.placements:
        nodes = sorted({p["node"] for p in view.placements})
        for reason, marker in (("placed", "|"), ("reclaimed", "x")):
            mine = [p for p in view.placements if (p.get("reason") or "placed") == reason]
            if mine:
                placement_ax.scatter([(p["ts_ms"] - t0) / 1000 for p in mine], [nodes.index(p["node"]) for p in mine],
                                     marker=marker, s=30, label=reason, color="#1f77b4" if reason == "placed" else FAILED)  # fmt: skip
        others = [p for p in view.placements if (p.get("reason") or "placed") not in ("placed", "reclaimed")]
        if others:
            placement_ax.scatter([(p["ts_ms"] - t0) / 1000 for p in others], [nodes.index(p["node"]) for p in others],
                                 marker=".", s=20, label="other", color="#7f7f7f")  # fmt: skip
        placement_ax.set_yticks(range(len(nodes)), nodes)
        placement_ax.set_ylim(-0.6, len(nodes) - 0.4)
        placement_ax.legend(loc="upper right", fontsize=8, ncol=4)
        placement_ax.set_ylabel(f"placed on ({view.placements[0].get('policy', '?')})")
    placement_ax.set_xlabel("seconds since the run's first event")
    return _save(figure, out / "queue.png")


def longest(view: RunView, out: Path) -> Path | None:
    """The longest tasks' CPU demand per OpenDC fragment, next to their node's CPU use in the same window."""
    if not view.longest:
        return None
    figure = Figure(figsize=(WIDTH_IN, 2.2 * len(view.longest) + 0.4))
    axes = figure.subplots(len(view.longest), 1, squeeze=False)[:, 0]
    for ax, demand in zip(axes, view.longest):
        task = demand.invocation
        start = task["ts_start"]
        if len(demand.fragment_cores):
            x = (demand.fragment_start_ms - start) / 1000
            ax.stairs(demand.fragment_cores, x, baseline=None, color="#d62728", lw=1.5, label="task demand (fragments)")
        if len(demand.host_ts_ms):
            # A host sample covers the interval ending at its time.
            ax.plot((demand.host_ts_ms - start) / 1000, demand.host_busy_cores, color="#1f77b4", lw=1,
                    marker=".", ms=3, label="node's CPUs busy (host samples)")  # fmt: skip
        ax.set_ylabel("cores")
        ax.set_title(f"{task['task_id']} on {task['node']} ({profile_of(task)}, {(task['ts_end'] - start) / 1000:.1f} s)",
                     fontsize=9, loc="left")  # fmt: skip
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds since the task started")
    return _save(figure, out / "longest.png")


def _percentiles_per_window(times_s: np.ndarray, values: np.ndarray, window_s: float) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    buckets = np.floor(times_s / window_s).astype(np.int64)
    keys = np.unique(buckets)
    per = {q: np.array([np.percentile(values[buckets == k], q) for k in keys]) for q in (50, 90, 99)}
    return (keys + 0.5) * window_s, per


def http(view: RunView, out: Path) -> Path | None:
    """Request rate, latency percentiles over time, and client-observed latency next to the server's time."""
    requests = [r for r in (view.requests or []) if not r.get("warmup") and r.get("ts_send_ms") is not None]
    if not requests:
        return None
    t0 = run_start_ms(view)
    sent = np.array([r["ts_send_ms"] for r in requests], dtype=np.float64)
    seconds = (sent - t0) / 1000
    span = max(1.0, float(seconds.max() - seconds.min()))
    window = max(1.0, span / 60)
    figure = Figure(figsize=(WIDTH_IN, 7.5))
    rate_ax, latency_ax, versus_ax = figure.subplots(3, 1, height_ratios=(2, 2, 3))
    edges = np.arange(np.floor(seconds.min()), seconds.max() + window, window)
    answered = np.array([r.get("code") not in (None, 0) and not r.get("error") for r in requests])
    for mask, label, colour in ((np.ones(len(requests), bool), "sent", "#1f77b4"), (answered, "answered", "#2ca02c"),
                                (~answered, "errors", FAILED)):  # fmt: skip
        if mask.any():
            counts, _ = np.histogram(seconds[mask], bins=edges)
            rate_ax.stairs(counts / window, edges, label=label, color=colour)
    rate_ax.set_ylabel("requests/s")
    rate_ax.legend(loc="upper right", fontsize=8)
    rate_ax.set_title(f"HTTP requests ({len(requests)} after warm-up), per {window:.3g} s")
    latency = np.array([r.get("latency_intended_ms") if r.get("latency_intended_ms") is not None else np.nan for r in requests])
    ok = ~np.isnan(latency)
    if ok.any():
        centres, per = _percentiles_per_window(seconds[ok], latency[ok], window)
        for q, colour in ((50, "#2ca02c"), (90, "#ff7f0e"), (99, FAILED)):
            latency_ax.plot(centres, per[q], label=f"p{q}", color=colour, lw=1.2, marker=".", ms=3)
        latency_ax.set_yscale("log")
        latency_ax.legend(loc="upper right", fontsize=8, ncol=3)
    latency_ax.set_ylabel("latency ms\n(from intended send)")
    latency_ax.set_xlabel("seconds since the run's first event")
    joined = [(r["latency_ms"], r["server_ms"]) for r in requests if r.get("latency_ms") is not None and r.get("server_ms") is not None]
    if joined:
        client, server = np.array(joined).T
        versus_ax.scatter(server, client, s=4, alpha=0.4, color="#1f77b4", label="a request")
        top = float(max(client.max(), server.max()))
        versus_ax.plot([0, top], [0, top], color="#7f7f7f", lw=0.8, ls="--", label="client = server")
        versus_ax.legend(loc="upper left", fontsize=8)
    else:
        versus_ax.text(0.5, 0.5, "no request joined to a server event", ha="center", va="center", transform=versus_ax.transAxes)
    versus_ax.set_xlabel("server time ms (arrival to last byte)")
    versus_ax.set_ylabel("client latency ms")
    return _save(figure, out / "http.png")
