"""The JSON Lines copy of the per-sample tables: ``cctf/*/<node>.parquet -> cctf/*.jsonl``.

input:  a cctf/ folder with its Parquet tables, the nodes in trace order
output: cctf/proc_metrics.jsonl, proc_cpu.jsonl, proc_rss.jsonl,
        host_metrics.jsonl, link_metrics.jsonl, task_metrics.jsonl, contention.jsonl
        (``tracekit parse --jsonl``, experiment key ``export.jsonl``)

The seed's files, for readers that want text: node by node (in trace
order); a node's process samples process by process (pid, create time)
and in time order, its host, link and task cgroup rows in time order. Formatted by Arrow
kernels (tracekit.trace.arrowjson): the same tables always give the same
bytes, and a line is what ``json.dumps`` would write.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.trace import cctf
from tracekit.trace.arrowjson import BackgroundWriter, joined_fields, json_text, jsonl_lines, object_lines
from tracekit.trace.procmetrics import first_of_each_process
from tracekit.trace.records import (
    PROC_CPU_COLUMNS,
    PROC_METRICS,
    PROC_METRICS_PER_PROCESS,
    PROC_NARROW_PER_PROCESS,
    PROC_RSS_COLUMNS,
)

PROC_FILES = ("proc_metrics.jsonl", "proc_cpu.jsonl", "proc_rss.jsonl")
# Tables copied row by row, in their files' order.
ROW_FILES = {"host_metrics": "host_metrics.jsonl", "link_metrics": "link_metrics.jsonl",
             "task_metrics": "task_metrics.jsonl", "contention": "contention.jsonl"}  # fmt: skip
JSONL_FILES = (*PROC_FILES, *ROW_FILES.values())
# task_slices is not copied: it is cut from these tables (tracekit.trace.slices), the exports' input.
COPIED_TABLES = ("proc_metrics", *ROW_FILES)
SLICE_ROWS = 1 << 19  # rows formatted at a time: bounded memory, and writing overlaps formatting


def write_jsonl_copy(cctf_dir: Path, nodes: list[str]) -> list[Path]:
    """Write the JSON Lines files of ``cctf_dir`` (replacing any); their paths."""
    outputs = {name: open(cctf_dir / name, "wb") for name in JSONL_FILES}  # noqa: SIM115
    writer = BackgroundWriter()
    try:
        for node in nodes:
            for lines in _proc_lines(cctf.read_table(cctf_dir, "proc_metrics", nodes=[node])):
                for name in list(lines):
                    writer.write_lines(lines.pop(name), outputs[name])
            for table, name in ROW_FILES.items():
                rows = cctf.read_table(cctf_dir, table, nodes=[node])
                for start in range(0, rows.num_rows, SLICE_ROWS):
                    writer.write_lines(jsonl_lines(rows.slice(start, SLICE_ROWS)), outputs[name])
        writer.close()
    finally:
        try:
            writer.close()
        finally:
            for out in outputs.values():
                out.close()
    return [cctf_dir / name for name in JSONL_FILES]


def _proc_lines(table: pa.Table):
    """The lines of proc_metrics.jsonl, proc_cpu.jsonl and proc_rss.jsonl of one node, a slice of rows at a time.

    The per-process fields are formatted once per process; a column's text
    is made once per slice and used by every file that has it.
    """
    if table.num_rows == 0:
        return
    table = table.sort_by([("pid", "ascending"), ("create_time_ms", "ascending"), ("ts_ms", "ascending")])
    table = table.combine_chunks()
    pid, ctime = table.column("pid").chunk(0), table.column("create_time_ms").chunk(0)
    first = first_of_each_process(pid, ctime)
    process_of_row = pc.subtract(pc.cumulative_sum(pc.cast(first, pa.int64())), 1)
    per_process = table.select(list(PROC_METRICS_PER_PROCESS)).filter(first)
    process_lead = joined_fields(per_process, PROC_METRICS_PER_PROCESS, first=True)
    narrow_lead = joined_fields(per_process, PROC_NARROW_PER_PROCESS, first=True)
    wide = PROC_METRICS.names[len(PROC_METRICS_PER_PROCESS) :]
    for start in range(0, table.num_rows, SLICE_ROWS):
        rows = table.slice(start, SLICE_ROWS)
        owner = process_of_row.slice(start, SLICE_ROWS)
        text = {name: json_text(rows.column(name)) for name in wide}
        text["cpu_ms"] = json_text(pc.add(rows.column("cpu_user_ms"), rows.column("cpu_system_ms")))
        narrow = pc.take(narrow_lead, owner)
        yield {
            "proc_metrics.jsonl": object_lines([(name, text[name]) for name in wide], lead=pc.take(process_lead, owner)),
            "proc_cpu.jsonl": object_lines([(name, text[name]) for name in PROC_CPU_COLUMNS], lead=narrow),
            "proc_rss.jsonl": object_lines([(name, text[name]) for name in PROC_RSS_COLUMNS], lead=narrow),
        }

