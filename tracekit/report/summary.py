"""The report's tables: what the run was, what ran where, and how much of it the trace covers.

input:  a tracekit.report.data.RunView
output: plain dicts and lists of rows (page.py formats them)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tracekit.report.data import RunView


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value / 1000:.1f} s"


def _union_ms(spans: list[tuple[int, int]]) -> int:
    """The time covered by at least one span."""
    covered, reach = 0, None
    for start, end in sorted(spans):
        if reach is None or start > reach:
            covered += end - start
            reach = end
        elif end > reach:
            covered += end - reach
            reach = end
    return covered


def _task_cpu_ms(task: dict[str, Any]) -> float:
    """The CPU a task's own record claims (rusage for commands, the request's own for HTTP)."""
    if task.get("cpu_user_ms") is not None or task.get("cpu_system_ms") is not None:
        return (task.get("cpu_user_ms") or 0) + (task.get("cpu_system_ms") or 0)
    return task.get("cpu_ms") or 0.0


def is_http_run(view: RunView) -> bool:
    """A service under load: its invocations are requests, not tasks a dispatcher placed."""
    return view.requests is not None or (bool(view.invocations) and all(i.get("module") == "http" for i in view.invocations))


def run_rows(view: RunView) -> list[tuple[str, str]]:
    """The run as a two-column table: the run, its final state and headline figures (results.json, which
    tracekit-run writes at the end), then what the trace holds."""
    tasks = [t for t in view.tasks if t.get("ts_start") is not None and t.get("ts_end") is not None]
    requests = [i for i in view.invocations if i.get("module") == "http"]
    rows = [("experiment", view.name or "– (no resolved.json: a run by hand)"), ("run id", view.run_id)]
    if view.description:
        rows.append(("description", view.description))
    rows += [("state", view.state or "–"), ("start", view.start or "–"), ("end", view.end or "–")]
    headline = view.results or {}
    planned = headline.get("tasks")
    if planned:
        rows.append(("tasks planned / done / failed (timed out) / unfinished",
                     f"{planned.get('planned')} / {planned.get('done')} / {planned.get('failed')} "
                     f"({planned.get('timed_out', 0)}) / {planned.get('unfinished', 0)}"))  # fmt: skip
        if planned.get("makespan_s") is not None:
            rows.append(("makespan (the dispatcher's: first placement to last terminal record)", f"{planned['makespan_s']:.1f} s"))
    sent = headline.get("requests")
    if sent:
        latency = sent.get("latency_ms") or {}
        rows.append(("requests sent, achieved rate, success", f"{sent.get('requests')}, {sent.get('rate_per_s') or 0:.1f}/s, "
                     f"{100 * (sent.get('success_ratio') or 0):.1f} %"))  # fmt: skip
        rows.append(("latency from the intended send (p50 / p99 / p99.9)",
                     " / ".join(f"{latency[p]:g} ms" if latency.get(p) is not None else "–" for p in ("p50", "p99", "p99.9"))))  # fmt: skip
    if view.tasks or not is_http_run(view):
        ok = sum(1 for t in view.tasks if t.get("ok"))
        rows.append(("tasks in the trace: ok / failed", f"{ok} / {len(view.tasks) - ok}"))
    if tasks:
        first = min(t.get("ts_enqueue") or t["ts_start"] for t in tasks)
        rows.append(("makespan in the trace (first enqueue to last end)", _ms(max(t["ts_end"] for t in tasks) - first)))
    if requests:
        good = sum(1 for r in requests if r.get("ok"))
        rows.append(("HTTP requests served ok / failed", f"{good} / {len(requests) - good}"))
    if view.requests is not None:
        sent_after_warmup = [r for r in view.requests if not r.get("warmup")]
        joined = sum(1 for r in sent_after_warmup if r.get("server_task_id"))
        rows.append(("client requests (after warm-up) / joined to a server event", f"{len(sent_after_warmup)} / {joined}"))
    return rows


def node_rows(view: RunView) -> list[dict[str, Any]]:
    """Per node: its tasks, the time it had at least one, its CPU from the tasks and from the host samples."""
    dated = [i for i in view.invocations if i.get("ts_start") is not None and i.get("ts_end") is not None]
    if dated:
        first = min(i.get("ts_enqueue") or i["ts_start"] for i in dated)
        last = max(i["ts_end"] for i in dated)
    rows = []
    for node in sorted(set(view.nodes) | set(view.host) | {i.get("node") for i in view.invocations if i.get("node")}):
        facts = view.nodes.get(node, {})
        mine = [i for i in dated if i.get("node") == node]
        busy = _union_ms([(i["ts_start"], i["ts_end"]) for i in mine])
        host = view.host.get(node)
        host_pct = None
        if host is not None and dated:
            inside = (host.ts_ms >= first) & (host.ts_ms <= last)
            host_pct = float(np.mean(host.cpu_util_pct[inside])) if inside.any() else None
        rows.append({
            "node": node,
            "role": facts.get("role", "–"),
            "cores": facts.get("cores_usable", "–"),
            "tasks": len(mine),
            "failed": sum(1 for i in mine if not i.get("ok")),
            "busy": _ms(busy) if mine else "–",
            "busy_pct": f"{100 * busy / (last - first):.0f} %" if mine and last > first else "–",
            "task_cpu": f"{sum(_task_cpu_ms(i) for i in mine) / 1000:.1f} s" if mine else "–",
            "host_cpu": f"{host_pct:.0f} %" if host_pct is not None else "–",
            "clock": _clock(facts),
        })  # fmt: skip
    return rows


def _clock(facts: dict[str, Any]) -> str:
    offset = facts.get("clock_offset_ms")
    if offset is None:
        return "not measured"
    offset = round(offset, 2) + 0.0  # no "-0.00"
    uncertainty = facts.get("clock_uncertainty_ms")
    return f"{offset:+.2f} ± {uncertainty:.2f} ms" if uncertainty is not None else f"{offset:+.2f} ms"


def audit_rows(view: RunView) -> list[tuple[str, str]]:
    """The parse audit's figures that say how far to trust the trace."""
    audit = view.audit
    if not audit:
        return []
    rows = []
    http = is_http_run(view)
    unit = "request" if http else "task"
    if http:  # requests share the service's processes: none has samples of its own
        rows.append(("process samples of the services", f"{audit.get('proc_samples', 0)} (a request has none of its "
                     "own: the service's processes serve many at once)"))  # fmt: skip
    elif audit.get("invocations_with_samples_pct") is not None:
        rows.append(("invocations with process samples (coverage)",
                     f"{audit.get('invocations_with_samples', 0)} of {audit.get('invocations', 0)} "
                     f"({audit['invocations_with_samples_pct']} %)"))  # fmt: skip
    fragments = audit.get("fragments_per_task") or {}
    if fragments:
        rows.append((f"fragments per {unit}", f"median {fragments.get('median')}, min {fragments.get('min')}, max {fragments.get('max')}"))
    cpu = audit.get("cpu_ms_by_source") or {}
    if cpu:
        rows.append(("CPU-seconds by source", ", ".join(f"{name.replace('_', ' ')} {value / 1000:.1f} s" for name, value in cpu.items())))
    if not http:
        rows.append(("process samples (outside any task / on the wrong node)",
                     f"{audit.get('proc_samples', 0)} ({audit.get('proc_samples_outside_tasks', 0)} / "
                     f"{audit.get('proc_samples_wrong_node', 0)})"))  # fmt: skip
    else:
        rows.append(("process samples on the wrong node", str(audit.get("proc_samples_wrong_node", 0))))
    rows.append(("skipped lines", str(audit.get("bad_lines", 0))))
    if audit.get("nodes_without_clock_offset"):
        rows.append(("nodes without a clock offset", ", ".join(audit["nodes_without_clock_offset"])))
    return rows


def contention_rows(view: RunView) -> list[list[str]]:
    """Per node: whether its tasks shared saturated CPUs with other work (the audit's contention section,
    tracekit.trace.contention); none for a trace parsed before it was measured."""
    section = (view.audit or {}).get("contention") or {}

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.0f} %"

    rows = []
    for node, n in sorted((section.get("nodes") or {}).items()):
        other = n.get("other_cores_mean")
        rows.append([node, "task cgroups" if n.get("source") == "task_cgroups" else "process samples",
                     pct(n.get("saturated_task_share")), pct(n.get("contended_task_share")),
                     "–" if other is None else f"{other:.2f}", pct(n.get("task_run_delay_share"))])  # fmt: skip
    return rows


def contention_notes(view: RunView) -> list[str]:
    section = (view.audit or {}).get("contention") or {}
    return [n["note"] for _, n in sorted((section.get("nodes") or {}).items()) if n.get("note")]


def container_rows(view: RunView) -> list[list[str]]:
    """One row per container of the run: a task's (its cgroup's exact CPU and memory peak, which hold the
    engine's client and monitor too) or a service's (its processes' samples)."""
    rows = []
    seen = set()
    for task in view.tasks:
        if not task.get("container_engine"):
            continue
        container = task.get("container_id")
        seen.add(container)
        sampled = view.container_samples.get(container or "", {})
        cgroup_cpu = task.get("cgroup_cpu_ms")
        peak = task.get("cgroup_memory_peak_bytes")
        rows.append([(container or "-")[:12], task.get("node") or "-", f"task {task.get('task_id')}", task.get("image") or "-",
                     _ms(cgroup_cpu) if cgroup_cpu is not None else "-",
                     f"{peak / 2**20:.1f} MiB" if peak is not None else "-",
                     _ms(sampled["cpu_ms"]) if sampled else "-"])  # fmt: skip
    for container in sorted({*view.container_samples, *view.service_containers} - seen):
        sampled = view.container_samples.get(container, {})
        service = view.service_containers.get(container, {})
        totals = service.get("container_cgroup_totals") or {}
        peak_rss, peak = sampled.get("peak_rss_kb"), totals.get("cgroup_memory_peak_bytes")
        what = f"service ({sampled.get('processes', 0)} processes)" if service else f"{sampled.get('processes', 0)} processes"
        rows.append([container[:12], sampled.get("node") or service.get("node") or "-", what, service.get("image") or "-",
                     _ms(totals["cgroup_cpu_ms"]) if "cgroup_cpu_ms" in totals else "-",
                     f"{peak / 2**20:.1f} MiB" if peak is not None
                     else f"{peak_rss / 1024:.1f} MiB (RSS)" if peak_rss is not None else "-",
                     _ms(sampled["cpu_ms"]) if sampled else "-"])  # fmt: skip
    return rows
