"""The parse audit: ``what parse saw -> audit.json + audit.md``.

Counts and coverage a researcher checks before trusting a trace: how many
invocations have process samples, CPU-seconds by source (interval samples
vs. the exact rusage totals), failed tasks, skipped lines (with file and
line), clock offsets (and which nodes have none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.jsonl import BadLine

MAX_LISTED_BAD_LINES = 200  # audit.json names this many; the count covers all


@dataclass
class Audit:
    run_dir: Path
    per_node: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_samples: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def add_node(self, node, metrics, processes: int) -> None:
        table = metrics.table
        cpu_ms = pc.add(table.column("cpu_user_ms"), table.column("cpu_system_ms"))
        with_cpu = pa.table({"task_id": table.column("task_id"), "cpu_ms": cpu_ms})
        attributed = with_cpu.filter(pc.is_valid(with_cpu.column("task_id")))
        grouped = attributed.group_by("task_id").aggregate([("cpu_ms", "count"), ("cpu_ms", "sum")])
        for task_id, count, total in zip(
            grouped.column("task_id").to_pylist(),
            grouped.column("cpu_ms_count").to_pylist(),
            grouped.column("cpu_ms_sum").to_pylist(),
        ):
            self.task_samples[(node.node, task_id)] = (count, total)
        cpu_total = pc.sum(cpu_ms).as_py() or 0
        self.per_node[node.node] = {
            "proc_samples": table.num_rows,
            "processes_followed": processes,
            "cpu_ms_samples": cpu_total,
            "cpu_ms_samples_unattributed": cpu_total - (pc.sum(attributed.column("cpu_ms")).as_py() or 0),
            "negative_steps_clamped": metrics.negative_deltas,
            "clock_offset_ms": node.clock_offset_ms,
            "cpu_mhz": node.facts.get("cpu_mhz"),
            "cpu_mhz_source": node.facts.get("cpu_mhz_source"),
        }

    def finish(self, nodes, invocations: list[dict[str, Any]], bad_lines: list[BadLine]) -> None:
        with_samples = 0
        cpu_rusage = 0.0
        cpu_sampled = 0
        for record in invocations:
            count, total = self.task_samples.get((record["node"], record["task_id"]), (0, 0))
            record["samples"] = count
            record["sampled_cpu_ms"] = total
            with_samples += count > 0
            cpu_sampled += total
            cpu_rusage += (record.get("cpu_user_ms") or 0) + (record.get("cpu_system_ms") or 0)
        failed = [r for r in invocations if not r["ok"]]
        notes = []
        missing_clock = [n.node for n in nodes if n.clock_offset_ms is None]
        if missing_clock and len(nodes) > 1:
            notes.append(
                f"no clock offset for {', '.join(missing_clock)}: their timestamps are taken as the "
                "controller's (offset 0); tracekit-run measures offsets, by-hand runs do not"
            )
        unknown_mhz = [n.node for n in nodes if not n.facts.get("cpu_mhz")]
        if unknown_mhz:
            notes.append(f"no CPU speed for {', '.join(unknown_mhz)}: pass --cpu-mhz to the collector")
        no_samples = len(invocations) - with_samples
        if no_samples:
            notes.append(
                f"{no_samples} invocations have no process samples (shorter than an interval, or not "
                "followed): they keep their exact rusage totals"
            )
        self.summary = {
            "run_dir": str(self.run_dir),
            "nodes": len(nodes),
            "invocations": len(invocations),
            "invocations_ok": len(invocations) - len(failed),
            "invocations_failed": len(failed),
            "failed_task_ids": sorted({r["task_id"] for r in failed})[:MAX_LISTED_BAD_LINES],
            "invocations_with_samples": with_samples,
            "invocations_with_samples_pct": round(100.0 * with_samples / len(invocations), 2) if invocations else None,
            "processes_followed": sum(n["processes_followed"] for n in self.per_node.values()),
            "proc_samples": sum(n["proc_samples"] for n in self.per_node.values()),
            "cpu_ms_by_source": {
                "rusage": round(cpu_rusage, 3),
                "samples_attributed": cpu_sampled,
                "samples_unattributed": sum(n["cpu_ms_samples_unattributed"] for n in self.per_node.values()),
            },
            "bad_lines": len(bad_lines),
            "bad_lines_listed": [
                {"file": _relative(b.path, self.run_dir), "line": b.line_no, "reason": b.reason}
                for b in bad_lines[:MAX_LISTED_BAD_LINES]
            ],
            "clock_offsets_ms": {n.node: n.clock_offset_ms for n in nodes},
            "nodes_without_clock_offset": missing_clock,
            "per_node": self.per_node,
            "notes": notes,
        }

    def as_dict(self) -> dict[str, Any]:
        return self.summary

    def as_markdown(self) -> str:
        s = self.summary
        cpu = s["cpu_ms_by_source"]
        lines = [
            f"# Parse audit: {s['run_dir']}",
            "",
            f"- nodes: {s['nodes']}",
            f"- invocations: {s['invocations']} ({s['invocations_ok']} ok, {s['invocations_failed']} failed)",
            f"- invocations with process samples: {s['invocations_with_samples']} "
            f"({s['invocations_with_samples_pct']}%)",
            f"- processes followed: {s['processes_followed']}, process samples: {s['proc_samples']}",
            f"- CPU-seconds: rusage {cpu['rusage'] / 1000:.3f} s, samples of tasks "
            f"{cpu['samples_attributed'] / 1000:.3f} s, samples of other followed processes "
            f"{cpu['samples_unattributed'] / 1000:.3f} s",
            f"- skipped lines: {s['bad_lines']}",
        ]
        lines += [f"  - {b['file']}:{b['line']}: {b['reason']}" for b in s["bad_lines_listed"][:20]]
        lines += ["", "| node | samples | processes | clock offset ms | cpu MHz (source) |", "|---|---|---|---|---|"]
        for node, n in sorted(s["per_node"].items()):
            lines.append(
                f"| {node} | {n['proc_samples']} | {n['processes_followed']} | {n['clock_offset_ms']} "
                f"| {n['cpu_mhz']} ({n['cpu_mhz_source']}) |"
            )
        if s["notes"]:
            lines += ["", "Notes:", *[f"- {note}" for note in s["notes"]]]
        return "\n".join(lines) + "\n"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
