"""The parse audit: ``what parse saw -> audit.json + audit.md``.

Counts and coverage a researcher checks before trusting a trace: tasks in
the trace out of the tasks the scheduler ran (must be all of them), how many
invocations have process samples and how many fragments the export will
cut them into, process samples outside any task and on the wrong node
(another node's task on a shared machine: must be none), CPU-seconds by
source (interval samples vs. the exact rusage totals), failed tasks,
skipped lines (with file and line), what parse refused to use as it was
(node folders of another run, damaged parts, clock offsets past belief,
conflicting or foreign invocation events, empty files) and the identical
invocation events it took once, clock offsets (and which nodes have none),
and per node whether its tasks shared saturated CPUs with other work
(tracekit.trace.contention: a note, the trace's durations are stretched there).
Every text in audit.md has its control characters escaped: file names and
reasons may hold any bytes a node wrote.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.jsonl import BadLine, printable
from tracekit.trace import contention

MAX_LISTED_BAD_LINES = 200  # audit.json names this many; the count covers all
MAX_LISTED_TASKS = 100
MAX_NAMED_IN_NOTE = 3  # a note names this many of what it is about
# A task's cgroup CPU and its rusage farther apart than this share (and the floor) is listed. The floor:
# the child's first millisecond or so (spawn, exec of the trampoline, before its move into the cgroup) is
# in rusage and, as the kernel settles CPU accounts at ticks and switches, mostly not in the cgroup
# (measured: -1 ms median, -2.4 to +1 ms, tracekit.taskcgroup).
CGROUP_TOLERANCE = 0.01
CGROUP_FLOOR_MS = 2.5


class TaskSamples(NamedTuple):
    """One task's process samples on one node (controller clock)."""

    rows: int  # samples of its processes
    cpu_ms: int  # CPU in them


@dataclass
class Audit:
    run_dir: Path
    run_id: str | None = None  # the run the trace is of (tracekit.trace.parse), None when nothing records one
    duplicate_invocations: int = 0  # identical copies of an invocation event, taken once
    per_node: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_samples: dict[tuple[str, str], TaskSamples] = field(default_factory=dict)
    # (node, task, attempt) -> its task cgroup's samples (task_metrics): the export's slices where they exist
    task_cgroup_samples: dict[tuple[str, str, int], TaskSamples] = field(default_factory=dict)
    # (node, task, attempt) -> its slices (cctf's task_slices, tracekit.trace.slices): what every export cuts
    task_slices: dict[tuple[str, str, int], int] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    requests: dict[str, int] | None = None  # an HTTP load's requests and how many joined (tracekit.trace.requests)
    # "node pid" -> a traced service process's CPU outside its requests' steps (tracekit.trace.requests)
    service_overhead: dict[str, dict[str, Any]] | None = None
    collectors_died: list[str] = field(default_factory=list)  # nodes whose collector never wrote its stop record
    queue_entries_rejected: dict[str, int] = field(default_factory=dict)  # node -> entries its worker deleted unrun
    services_without_spans: list[str] = field(default_factory=list)  # nodes whose service left no server-side spans
    # node -> matching processes its collector left alone: {"other_runs": n, "other_nodes": m} (a node scope)
    foreign_processes: dict[str, dict[str, int]] = field(default_factory=dict)

    def add_node(self, node, metrics, processes: int) -> None:
        table = metrics.table
        cpu_ms = pc.add(table.column("cpu_user_ms"), table.column("cpu_system_ms"))
        with_cpu = pa.table({"task_id": table.column("task_id"), "cpu_ms": cpu_ms, "ts_ms": table.column("ts_ms")})
        attributed = with_cpu.filter(pc.is_valid(with_cpu.column("task_id")))
        grouped = attributed.group_by("task_id").aggregate([("cpu_ms", "count"), ("cpu_ms", "sum")])
        for task_id, *figures in zip(*(grouped.column(name).to_pylist() for name in (
                "task_id", "cpu_ms_count", "cpu_ms_sum"))):  # fmt: skip
            self.task_samples[(node.node, task_id)] = TaskSamples(*figures)
        cpu_total = pc.sum(cpu_ms).as_py() or 0
        self.per_node[node.node] = {
            "proc_samples": table.num_rows - metrics.closing_rows,  # a task's closing row (its rusage) is no sample
            "proc_samples_outside_tasks": table.num_rows - attributed.num_rows,
            "processes_followed": processes,
            "process_scope": node.facts.get("process_scope"),
            "cores_usable": node.facts.get("cores_usable"),
            "cpu_ms_samples": cpu_total,
            "cpu_ms_samples_unattributed": cpu_total - (pc.sum(attributed.column("cpu_ms")).as_py() or 0),
            "negative_steps_clamped": metrics.negative_deltas,
            "clock_offset_ms": node.clock_offset_ms,
            "cpu_mhz": node.facts.get("cpu_mhz"),
            "cpu_mhz_source": node.facts.get("cpu_mhz_source"),
        }

    def add_task_metrics(self, node: str, metrics) -> None:
        """A node's task cgroup samples (tracekit.trace.taskmetrics): how many, how many not used."""
        figures = self.per_node.setdefault(node, {})
        figures["task_cgroup_samples"] = metrics.table.num_rows
        figures["task_cgroup_samples_left_out"] = metrics.rows_without_task + metrics.rows_left_out
        grouped = metrics.table.group_by(["task_id", "attempt"]).aggregate([("cpu_ms", "count"), ("cpu_ms", "sum")])
        for task_id, attempt, rows, cpu_ms in zip(*(grouped.column(name).to_pylist() for name in (
                "task_id", "attempt", "cpu_ms_count", "cpu_ms_sum"))):  # fmt: skip
            self.task_cgroup_samples[(node, task_id, attempt)] = TaskSamples(rows, round(cpu_ms))

    def add_task_slices(self, node: str, slices: pa.Table) -> None:
        """A node's task_slices: how many slices each invocation has."""
        grouped = slices.group_by(["task_id", "attempt"], use_threads=False).aggregate([("ts_ms", "count")])
        for task_id, attempt, count in zip(*(grouped.column(name).to_pylist() for name in (
                "task_id", "attempt", "ts_ms_count"))):  # fmt: skip
            self.task_slices[(node, task_id, attempt)] = count

    def finish(
        self,
        nodes,
        invocations: list[dict[str, Any]],
        bad_lines: list[BadLine],
        terminal_records: list[dict[str, Any]] | None = None,
        rejected: list | None = None,
    ) -> None:
        """Count everything but ownership (``add_ownership``, once the samples are written).

        ``terminal_records``: the dispatcher's record of every task that ran
        (none in a run by hand): each should be in the trace as an invocation.
        ``rejected``: what parse did not use as it was (tracekit.trace.rawrun.Rejected).
        """
        rejected = rejected or []
        with_samples = 0
        cpu_rusage = 0.0
        cpu_sampled = 0
        fragments = []
        for record in invocations:
            samples = self.task_samples.get((record["node"], record["task_id"]), TaskSamples(0, 0))
            record["samples"] = samples.rows
            record["sampled_cpu_ms"] = samples.cpu_ms
            with_samples += samples.rows > 0
            cpu_sampled += samples.cpu_ms
            cpu_rusage += (record.get("cpu_user_ms") or 0) + (record.get("cpu_system_ms") or 0)
            in_cgroup = self.task_cgroup_samples.get((record["node"], record["task_id"], record["attempt"]))
            if in_cgroup is not None or "cgroup_cpu_ms" in record:
                record["cgroup_samples"] = in_cgroup.rows if in_cgroup else 0
            if record["ok"]:  # what the export cuts it into
                fragments.append(self.task_slices.get((record["node"], record["task_id"], record["attempt"]), 0))
        failed = [r for r in invocations if not r["ok"]]
        cgroups = _cgroup_accounting(nodes, invocations)
        missing_clock = [n.node for n in nodes if n.clock_offset_ms is None]
        tasks = _tasks_in_trace(invocations, terminal_records)
        notes = _notes(nodes, invocations, with_samples, missing_clock, tasks["tasks_missing_from_trace"])
        notes += _rejection_notes(rejected, self.duplicate_invocations, self.run_dir)
        notes += _cgroup_notes(cgroups)
        if self.collectors_died:
            notes.append(f"the collector of {', '.join(self.collectors_died)} ended without its stop record (killed, or "
                         "its machine went down): that node's samples end at its last flush")  # fmt: skip
        if self.services_without_spans:
            notes.append(f"the HTTP service of {', '.join(self.services_without_spans)} is a command with no access log "
                         "Tracekit reads: no server-side spans; its requests are in the client's results, its "
                         "processes in the samples")  # fmt: skip
        other_runs = {node: n["other_runs"] for node, n in sorted(self.foreign_processes.items()) if n["other_runs"]}
        if other_runs:
            counts = ", ".join(f"{node} {n}" for node, n in other_runs.items())
            notes.append(f"processes of another run with the same node id matched the collectors' patterns and were "
                         f"left out of the trace: {counts} (a concurrent run on these machines; its CPU use is "
                         "contention this trace does not show as tasks)")  # fmt: skip
        if any(self.queue_entries_rejected.values()):
            counts = ", ".join(f"{node} {n}" for node, n in sorted(self.queue_entries_rejected.items()) if n)
            notes.append(f"queue entries not signed by this run's dispatcher, deleted unrun by the workers: {counts} "
                         "(someone else wrote to the run's Redis; see each node's rejected.jsonl)")  # fmt: skip
        self.summary = {
            "run_dir": str(self.run_dir),
            "run_id": self.run_id,
            "nodes": len(nodes),
            **tasks,
            "invocations": len(invocations),
            "invocations_ok": len(invocations) - len(failed),
            "invocations_failed": len(failed),
            "failed_task_ids": sorted({r["task_id"] for r in failed})[:MAX_LISTED_BAD_LINES],
            "invocations_duplicate": self.duplicate_invocations,
            "invocations_with_samples": with_samples,
            "invocations_with_samples_pct": round(100.0 * with_samples / len(invocations), 2) if invocations else None,
            # The export's slices of each successful invocation (task_slices): one per sampling tick inside
            # it, and the tail.
            "fragments_per_task": {
                "median": statistics.median(fragments) if fragments else None,
                "min": min(fragments, default=None),
                "max": max(fragments, default=None),
            },
            "tasks_with_interior_samples": sum(1 for f in fragments if f > 1),
            "processes_followed": sum(n["processes_followed"] for n in self.per_node.values()),
            "proc_samples": sum(n["proc_samples"] for n in self.per_node.values()),
            "proc_samples_outside_tasks": sum(n["proc_samples_outside_tasks"] for n in self.per_node.values()),
            "proc_samples_wrong_node": None,  # add_ownership
            "cpu_ms_by_source": {
                "rusage": round(cpu_rusage, 3),
                "samples_attributed": cpu_sampled,
                "samples_unattributed": sum(n["cpu_ms_samples_unattributed"] for n in self.per_node.values()),
                "cgroups": cgroups["cpu_ms"],
            },
            "cgroup_accounting": cgroups,
            "bad_lines": len(bad_lines),
            "bad_lines_listed": [
                {"file": _relative(b.path, self.run_dir), "line": b.line_no, "reason": b.reason}
                for b in bad_lines[:MAX_LISTED_BAD_LINES]
            ],
            "rejected": len(rejected),
            "rejected_listed": [
                {"path": _relative(r.path, self.run_dir), "line": r.line, "kind": r.kind, "reason": r.reason}
                for r in rejected[:MAX_LISTED_BAD_LINES]
            ],
            "clock_offsets_ms": {n.node: n.clock_offset_ms for n in nodes},
            "requests": self.requests,
            "service_overhead": self.service_overhead,
            "nodes_without_clock_offset": missing_clock,
            "collectors_died": sorted(self.collectors_died),
            "foreign_processes": dict(sorted(self.foreign_processes.items())),
            "queue_entries_rejected": dict(sorted(self.queue_entries_rejected.items())),
            "contention": None,  # add_contention
            "per_node": self.per_node,
            "notes": notes,
        }

    def add_ownership(self, wrong_node: dict[str, int]) -> None:
        """Per node: its samples of processes that belong to another node's task (tracekit.trace.ownership)."""
        for node, count in wrong_node.items():
            self.per_node.setdefault(node, {})["proc_samples_wrong_node"] = count
        self.summary["proc_samples_wrong_node"] = sum(wrong_node.values())
        if self.summary["proc_samples_wrong_node"]:
            holders = ", ".join(f"{n} {c}" for n, c in sorted(wrong_node.items()) if c)
            self.summary["notes"].append(
                f"process samples of another node's tasks: {holders}; these nodes share a machine and their "
                "collectors followed every matching process: run them with --scope node (tracekit-run does)"
            )

    def add_contention(self, per_node: dict[str, dict[str, Any]]) -> None:
        """Per node: whether its tasks shared saturated CPUs with other work (tracekit.trace.contention).
        Its notes say so; they do not change a run's state (a shared machine is a fact of the trace)."""
        self.summary["contention"] = {
            "saturated_busy_pct": contention.SATURATED_BUSY_PCT,
            "other_share_pct": round(100 * contention.OTHER_SHARE, 3),
            "noted_task_share_pct": round(100 * contention.NOTED_TASK_SHARE, 3),
            "nodes": dict(sorted(per_node.items())),
        }
        self.summary["notes"] += [figures["note"] for _, figures in sorted(per_node.items()) if figures["note"]]

    def as_dict(self) -> dict[str, Any]:
        return self.summary

    def as_markdown(self) -> str:
        """audit.md: the summary for a reader; every text from the nodes with its control characters escaped."""
        s = self.summary
        cpu = s["cpu_ms_by_source"]
        fragments = s["fragments_per_task"]
        if s["tasks_run"] is not None:
            tasks = f"{s['tasks_in_trace']} of {s['tasks_run']} the scheduler ran ({s['tasks_in_trace_pct']}%)"
        elif s.get("requests"):  # a service under load: its invocations are the requests it served
            tasks = "none: the invocations are the requests the services served (the HTTP load below)"
        else:
            tasks = "no scheduler record (a run by hand)"
        lines = [
            f"# Parse audit: {printable(s['run_dir'])}",
            "",
            f"- run: {printable(str(s['run_id']))}",
            f"- nodes: {s['nodes']}",
            f"- tasks in the trace: {tasks}",
            f"- invocations: {s['invocations']} ({s['invocations_ok']} ok, {s['invocations_failed']} failed); "
            f"identical copies taken once: {s['invocations_duplicate']}",
            f"- invocations with process samples: {s['invocations_with_samples']} "
            f"({s['invocations_with_samples_pct']}%); with interior samples: {s['tasks_with_interior_samples']} "
            f"of {s['invocations_ok']} ok",
            f"- fragments per task: median {fragments['median']}, min {fragments['min']}, max {fragments['max']}",
            f"- processes followed: {s['processes_followed']}, process samples: {s['proc_samples']}, "
            f"outside any task: {s['proc_samples_outside_tasks']}, of another node's tasks: {s['proc_samples_wrong_node']}",
            f"- CPU-seconds: rusage {cpu['rusage'] / 1000:.3f} s, samples of tasks "
            f"{cpu['samples_attributed'] / 1000:.3f} s, samples of other followed processes "
            f"{cpu['samples_unattributed'] / 1000:.3f} s; task cgroups {cpu['cgroups'] / 1000:.3f} s",
            _cgroup_line(s["cgroup_accounting"]),
            f"- skipped lines: {s['bad_lines']}",
        ]
        if s.get("requests"):
            r = s["requests"]
            lines.insert(-1, f"- HTTP load: {r['requests']} requests, {r['requests_sent']} sent, {r['requests_joined']} "
                             f"joined to a server event, {r['requests_without_server_event']} without one; "
                             f"{r['http_invocations_from_other_callers']} HTTP invocations from other callers "
                             "(further hops, other clients)")  # fmt: skip
        for name, service in (s.get("service_overhead") or {}).items():
            share = service["outside_requests_share"]
            lines.insert(-1, f"- service {name}: {service['requests']} requests whose own steps took "
                             f"{service['request_cpu_ms'] / 1000:.3f} CPU-s of the process's {service['process_cpu_ms'] / 1000:.3f} s"
                             + ("" if share is None else f": {share:.0%} is the server's own work outside them (HTTP "
                                                         "parsing, the event loop), no one request's"))  # fmt: skip
        lines += [f"  - {printable(b['file'])}:{b['line']}: {printable(b['reason'])}" for b in s["bad_lines_listed"][:20]]
        lines.append(f"- not used as they were: {s['rejected']}")
        lines += [
            f"  - {printable(r['path'])}{'' if r['line'] is None else ':' + str(r['line'])} ({r['kind']}): "
            f"{printable(r['reason'])}"
            for r in s["rejected_listed"][:20]
        ]
        lines += ["", "| node | samples | outside tasks | wrong node | processes | scope | cores | clock offset ms "
                  "| cpu MHz (source) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for node, n in sorted(s["per_node"].items()):
            lines.append(
                f"| {printable(node)} | {n['proc_samples']} | {n['proc_samples_outside_tasks']} | {n.get('proc_samples_wrong_node')} "
                f"| {n['processes_followed']} | {n['process_scope']} | {n['cores_usable']} | {n['clock_offset_ms']} "
                f"| {n['cpu_mhz']} ({n['cpu_mhz_source']}) |"
            )
        lines += _contention_lines(s.get("contention"))
        if s["notes"]:
            lines += ["", "Notes:", *[f"- {printable(note)}" for note in s["notes"]]]
        return "\n".join(lines) + "\n"


def _contention_lines(section: dict[str, Any] | None) -> list[str]:
    """audit.md's table of the nodes' contention (none when not computed)."""
    if not section or not section["nodes"]:
        return []

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    lines = ["", f"Contention (tasks' time on CPUs busy >= {section['saturated_busy_pct']:g}% with other work holding "
             f">= {section['other_share_pct']:g}% of them):", "",
             "| node | run's CPU from | tasks' time s | saturated | contended | other work, cores | run-queue wait |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for node, n in section["nodes"].items():
        other = "-" if n["other_cores_mean"] is None else f"{n['other_cores_mean']:.2f}"
        lines.append(f"| {printable(node)} | {n['source']} | {n['task_time_s']:g} | {pct(n['saturated_task_share'])} "
                     f"| {pct(n['contended_task_share'])} | {other} | {pct(n['task_run_delay_share'])} |")  # fmt: skip
    return lines


def _notes(nodes, invocations: list[dict[str, Any]], with_samples: int, missing_clock: list[str],
           missing_tasks: list[str]) -> list[str]:  # fmt: skip
    """What a reader of the trace should know before trusting it."""
    notes = []
    if missing_clock and len(nodes) > 1:
        notes.append(
            f"no clock offset for {', '.join(missing_clock)}: their timestamps are taken as the "
            "controller's (offset 0); tracekit-run measures offsets, by-hand runs do not"
        )
    unknown_mhz = [n.node for n in nodes if not n.facts.get("cpu_mhz")]
    if unknown_mhz:
        notes.append(f"no CPU speed for {', '.join(unknown_mhz)}: pass --cpu-mhz to the collector")
    # A request served by a shared server process has no samples of its own, by design.
    no_samples = sum(1 for r in invocations if not r.get("process_shared")) - with_samples
    if no_samples:
        notes.append(
            f"{no_samples} invocations have no process samples (shorter than an interval, or not "
            "followed): they keep their exact rusage totals"
        )
    if missing_tasks:
        notes.append(
            f"{len(missing_tasks)} tasks the scheduler ran are not in the trace "
            f"(first: {missing_tasks[0]}): their node's events file is missing or garbled"
        )
    return notes


def cgroup_counted(invocation: dict[str, Any]) -> bool:
    """Did the task's own cgroup count it (tracekit.taskcgroup)? Not when its total falls short of its
    rusage beyond the spawn's share (the move into the cgroup failed: the task ran uncounted)."""
    cgroup = invocation.get("cgroup_cpu_ms")
    if not isinstance(cgroup, (int, float)) or isinstance(cgroup, bool):
        return False
    if invocation.get("cpu_user_ms") is None:
        return True
    rusage = invocation["cpu_user_ms"] + (invocation.get("cpu_system_ms") or 0)
    return cgroup >= rusage * (1 - CGROUP_TOLERANCE) - CGROUP_FLOOR_MS


def exact_cpu_ms(invocation: dict[str, Any]) -> float | None:
    """An invocation's exact CPU total: its task cgroup's (every process it started: cgroup_counted), else
    its rusage (the processes it waited for), else a request's own CPU (the HTTP middleware); None when
    nothing measured it."""
    if cgroup_counted(invocation):
        return float(invocation["cgroup_cpu_ms"])
    if invocation.get("cpu_user_ms") is not None:
        return invocation["cpu_user_ms"] + (invocation.get("cpu_system_ms") or 0)
    if invocation.get("cpu_ms") is not None:
        return invocation["cpu_ms"]
    return None


def _cgroup_accounting(nodes, invocations: list[dict[str, Any]]) -> dict[str, Any]:
    """Each task's cgroup total against its rusage (tracekit.taskcgroup), and the nodes whose tasks had none.

    The two count the same waited-for processes; a cgroup also counts what a task did not wait for
    (a daemon it left, a setsid child): more than CGROUP_TOLERANCE apart, a task is listed. Not a task
    in a container: its rusage is the engine's client's, its cgroup holds the container.
    """
    in_cgroups = [r for r in invocations if isinstance(r.get("cgroup_cpu_ms"), (int, float))]
    apart = []
    for record in in_cgroups:
        if record.get("container_engine"):
            continue
        rusage = (record.get("cpu_user_ms") or 0) + (record.get("cpu_system_ms") or 0)
        if abs(record["cgroup_cpu_ms"] - rusage) > max(CGROUP_TOLERANCE * rusage, CGROUP_FLOOR_MS):
            apart.append({"task_id": record["task_id"], "node": record["node"], "attempt": record["attempt"],
                          "cgroup_cpu_ms": record["cgroup_cpu_ms"], "rusage_cpu_ms": round(rusage, 3)})  # fmt: skip
    return {
        "nodes": {n.node: n.task_cgroups for n in nodes if n.task_cgroups is not None},
        "tasks_in_cgroups": len(in_cgroups),
        "tasks_with_cgroup_samples": sum(1 for r in in_cgroups if r.get("cgroup_samples")),
        "tasks_cgroup_error": sorted(r["task_id"] for r in invocations if r.get("cgroup_error"))[:MAX_LISTED_TASKS],
        "cpu_ms": round(sum(r["cgroup_cpu_ms"] for r in in_cgroups), 3),
        "rusage_cpu_ms": round(sum((r.get("cpu_user_ms") or 0) + (r.get("cpu_system_ms") or 0) for r in in_cgroups), 3),
        "tasks_in_containers": sum(1 for r in invocations if r.get("container_engine")),
        "tasks_apart": len(apart),
        "tasks_apart_listed": apart[:MAX_LISTED_TASKS],
        "tasks_left_processes": sorted(r["task_id"] for r in in_cgroups if r.get("cgroup_kept"))[:MAX_LISTED_TASKS],
    }


def _cgroup_line(cgroups: dict[str, Any]) -> str:
    if not cgroups["tasks_in_cgroups"]:
        return "- tasks in cgroups of their own: none"
    return (f"- tasks in cgroups of their own: {cgroups['tasks_in_cgroups']}, their cgroups "
            f"{cgroups['cpu_ms'] / 1000:.3f} CPU-s against rusage {cgroups['rusage_cpu_ms'] / 1000:.3f} s; "
            f"apart by more than {CGROUP_TOLERANCE:.0%}: {cgroups['tasks_apart']}"
            + (f"; in containers: {cgroups['tasks_in_containers']} (their cgroups hold the container, the "
               "engine's client and monitor)" if cgroups.get("tasks_in_containers") else ""))  # fmt: skip


def _cgroup_notes(cgroups: dict[str, Any]) -> list[str]:
    notes = []
    for node, described in sorted(cgroups["nodes"].items()):
        if not described["available"]:
            notes.append(f"the tasks of {node} ran without cgroups of their own ({described['why']}): their CPU is "
                         "their rusage (waited-for processes) and the samples of the processes followed")  # fmt: skip
    if cgroups["tasks_apart"]:
        named = ", ".join(f"{t['task_id']} ({t['cgroup_cpu_ms']:g} ms against {t['rusage_cpu_ms']:g})"
                          for t in cgroups["tasks_apart_listed"][:MAX_NAMED_IN_NOTE])  # fmt: skip
        notes.append(f"{cgroups['tasks_apart']} tasks' cgroup CPU differs from their rusage by more than "
                     f"{CGROUP_TOLERANCE:.0%}: {named}; more in the cgroup: processes the task did not wait for "
                     "(left running or detached), which rusage misses; less: the task's move into its cgroup "
                     "failed, and its rusage and process samples stand for it in the export")  # fmt: skip
    if cgroups["tasks_left_processes"]:
        notes.append(f"{len(cgroups['tasks_left_processes'])} tasks left processes running after they ended "
                     f"(first: {cgroups['tasks_left_processes'][0]}); their worker ended them when it stopped")  # fmt: skip
    if cgroups["tasks_cgroup_error"]:
        notes.append(f"{len(cgroups['tasks_cgroup_error'])} tasks have no cgroup totals although their worker makes "
                     f"task cgroups (first: {cgroups['tasks_cgroup_error'][0]}; see its event's cgroup_error)")  # fmt: skip
    return notes


def _rejection_notes(rejected: list, duplicates: int, run_dir: Path) -> list[str]:
    """One note per kind of thing parse did not use as it was, naming the first few."""
    notes = []
    if duplicates:
        notes.append(f"{duplicates} invocation events were identical copies of others (a copied events file?): "
                     "each taken once")  # fmt: skip
    what = {
        "node_folder": "node folders of another run",
        "node_part": "node parts not taken as they were",
        "invocation": "invocation events left out",
        "clock_offset": "clock offsets refused",
        "empty_file": "empty raw files",
        "task_cgroups": "workers' task cgroup records unreadable",
    }
    for kind, text in what.items():
        of_kind = [r for r in rejected if r.kind == kind]
        if of_kind:
            named = "; ".join(
                f"{_relative(r.path, run_dir)}{'' if r.line is None else f':{r.line}'}: {r.reason}"
                for r in of_kind[:MAX_NAMED_IN_NOTE]
            )
            more = f"; and {len(of_kind) - MAX_NAMED_IN_NOTE} more" if len(of_kind) > MAX_NAMED_IN_NOTE else ""
            notes.append(f"{text}: {len(of_kind)} ({named}{more})")
    return notes


def _tasks_in_trace(invocations: list[dict[str, Any]], terminal_records: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Tasks the scheduler ran (a terminal record) and how many of them the trace holds."""
    if not terminal_records:
        return {"tasks_run": None, "tasks_in_trace": None, "tasks_in_trace_pct": None, "tasks_missing_from_trace": []}
    traced = {(r["task_id"], r["node"], r["attempt"]) for r in invocations}
    ran = {(r["task_id"], r["node"], r["attempt"]) for r in terminal_records}
    missing = sorted(f"{task} (attempt {attempt} on {node})" for task, node, attempt in ran - traced)
    return {
        "tasks_run": len(ran),
        "tasks_in_trace": len(ran) - len(missing),
        "tasks_in_trace_pct": round(100.0 * (len(ran) - len(missing)) / len(ran), 2),
        "tasks_missing_from_trace": missing[:MAX_LISTED_TASKS],
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
