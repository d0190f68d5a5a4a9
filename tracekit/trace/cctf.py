"""Where each table of the normalized trace ``cctf/`` lives, and how it is written and read.

    cctf/
      invocations.jsonl  nodes.json  links.json  placement_events.jsonl  audit.json  audit.md
      proc_metrics/<node>.parquet   per process and sampling interval
      host_metrics/<node>.parquet   per node and interval
      link_metrics/<node>.parquet   per node, interval and network interface
      task_metrics/<node>.parquet   per task in a cgroup of its own and interval
      contention/<node>.parquet     per node and interval: its CPU used outside the run's tasks
      (with --jsonl also proc_metrics.jsonl, proc_cpu.jsonl, proc_rss.jsonl,
      host_metrics.jsonl, link_metrics.jsonl, task_metrics.jsonl, contention.jsonl:
      tracekit.trace.jsonl_copy)

One Parquet file per node and table (schemas: tracekit.trace.records): a
node's part made on the node itself is its file as it is, so putting a
trace together costs no re-encoding; a reader of one node opens one file;
and pyarrow, pandas, polars, DuckDB and Spark read a folder of files of one
schema as one table (``pq.read_table("cctf/proc_metrics")``). Each file
holds the node column too and is sorted by records.CCTF_SORT_KEYS.
Every reader in Tracekit goes through ``read_table``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tracekit.errors import RunFolderError, TracekitError
from tracekit.trace.records import CCTF_TABLES, parquet_write_options

CCTF = "cctf"
SUFFIX = ".parquet"
AUDIT = "audit.json"  # tracekit.trace.audit: how far to trust the trace


def node_file(cctf_dir: Path, table: str, node: str) -> Path:
    """cctf/<table>/<node>.parquet"""
    return cctf_dir / table / f"{node}{SUFFIX}"


def write_table(path: Path, table: str, rows: pa.Table) -> None:
    """Write one node's rows of ``table`` (its declared schema, its Parquet options)."""
    schema = CCTF_TABLES[table]
    if not rows.schema.equals(schema):
        raise TracekitError(f"{path}: rows do not have the {table} schema: {rows.schema}")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, path, **parquet_write_options(schema))


def node_files(cctf_dir: Path, table: str) -> list[Path]:
    """The node files of ``table``, by node name."""
    folder = cctf_dir / table
    if not folder.is_dir():
        raise RunFolderError(f"{cctf_dir} has no {table}/ folder; run 'tracekit parse {cctf_dir.parent}' first")
    return sorted(folder.glob(f"*{SUFFIX}"))


def read_table(
    cctf_dir: Path,
    table: str,
    columns: list[str] | None = None,
    nodes: list[str] | None = None,
    where: ds.Expression | None = None,
) -> pa.Table:
    """Rows of ``table`` (all nodes, or those in ``nodes``), node by node, each node's in its file's order."""
    files = node_files(cctf_dir, table)
    if nodes is not None:
        wanted = {node_file(cctf_dir, table, node) for node in nodes}
        files = [path for path in files if path in wanted]
    schema = CCTF_TABLES[table]
    if not files:
        empty = schema.empty_table()
        return empty.select(columns) if columns is not None else empty
    dataset = ds.dataset([str(path) for path in files], schema=schema, format="parquet")
    return dataset.to_table(columns=columns, filter=where, use_threads=True)


def check_schemas(cctf_dir: Path) -> None:
    """Every node file of every table has its declared schema."""
    for table, schema in CCTF_TABLES.items():
        for path in node_files(cctf_dir, table):
            found = pq.read_schema(path)
            if not found.equals(schema):
                raise TracekitError(f"{path}: schema differs from the declared {table} schema: {found}")


def read_audit(cctf_dir: Path) -> dict | None:
    """audit.json as parse wrote it; None when it is missing or unreadable."""
    import json

    try:
        audit = json.loads((cctf_dir / AUDIT).read_text())
    except (OSError, ValueError):
        return None
    return audit if isinstance(audit, dict) else None
