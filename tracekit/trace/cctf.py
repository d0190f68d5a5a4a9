"""Where each table of the normalized trace ``cctf/`` lives, and how it is written and read.

    cctf/
      invocations.jsonl  nodes.json  links.json  placement_events.jsonl  audit.json  audit.md
      proc_metrics/<node>.parquet   per process and sampling interval
      host_metrics/<node>.parquet   per node and interval
      link_metrics/<node>.parquet   per node, interval and network interface
      task_metrics/<node>.parquet   per task in a cgroup of its own and interval
      task_slices/<node>.parquet    per invocation and slice of its time (every export's input)
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
Every reader in Tracekit goes through ``read_table``, and through
``read_records`` / ``read_json`` for the small files: no other module
names a file of cctf/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.errors import RunFolderError, TracekitError
from tracekit.jsonl import BadLine, dumps, read_jsonl
from tracekit.trace.records import CCTF_TABLES, parquet_write_options

if TYPE_CHECKING:
    import pyarrow.compute as pc

CCTF = "cctf"
SUFFIX = ".parquet"
# The small files: JSON Lines tables (one record per line; schemas/cctf/<name>.schema.json) ...
INVOCATIONS = "invocations.jsonl"  # one per task invocation or request
PLACEMENTS = "placement_events.jsonl"  # the dispatcher's placements (a run with a dispatcher)
REQUESTS = "requests.jsonl"  # the load generator's requests (a run with tracekit load)
RECORD_FILES = (INVOCATIONS, PLACEMENTS, REQUESTS)
# ... and JSON documents.
NODES = "nodes.json"  # each node's facts
LINKS = "links.json"  # each node's network interfaces
AUDIT = "audit.json"  # tracekit.trace.audit: how far to trust the trace
AUDIT_TEXT = "audit.md"  # the same for a person
JSON_FILES = (NODES, LINKS, AUDIT)
TEXT_FILES = (AUDIT_TEXT,)


def node_file(cctf_dir: Path, table: str, node: str) -> Path:
    """cctf/<table>/<node>.parquet"""
    return cctf_dir / table / f"{node}{SUFFIX}"


def write_table(path: Path, table: str, rows: pa.Table) -> None:
    """Write one node's rows of ``table`` (its declared schema, its Parquet options)."""
    schema = CCTF_TABLES[table]
    if not rows.schema.equals(schema):
        raise TracekitError(f"{path}: rows do not have the {table} schema: {rows.schema}")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = pa.Table.from_arrays(rows.columns, schema=schema)  # the declared schema, its fields' units with it
    pq.write_table(rows, path, **parquet_write_options(schema))


def has_table(cctf_dir: Path, table: str) -> bool:
    """Does the trace hold ``table`` (a trace parsed before task cgroups has no task_metrics)?"""
    return (cctf_dir / table).is_dir()


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
    where: pc.Expression | None = None,
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
    wanted = schema if columns is None else pa.schema([schema.field(name) for name in columns])
    readers = [pq.ParquetFile(path) for path in files]
    if where is None and all(set(wanted.names) <= set(r.schema_arrow.names) for r in readers):
        # File by file: importing pyarrow.dataset costs a command that reads a trace 0.17 s.
        return pa.concat_tables([r.read(columns=wanted.names).select(wanted.names).cast(wanted) for r in readers])
    # A filter pushed down into the files' row groups, or a file of an older trace that lacks a column
    # (read as nulls, as the declared schema makes it).
    import pyarrow.dataset as ds

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
    try:
        audit = read_json(cctf_dir, AUDIT)
    except RunFolderError:
        return None
    return audit if isinstance(audit, dict) else None


# -- the small files ------------------------------------------------------------------------------------


def has(cctf_dir: Path, name: str) -> bool:
    """Does the trace hold this small file (a run without a dispatcher has no placements)?"""
    return (cctf_dir / name).is_file()


def has_trace(run_dir: Path) -> bool:
    """Is ``run_dir`` parsed (its cctf/ holds the invocations)?"""
    return has(run_dir / CCTF, INVOCATIONS)


def read_records(cctf_dir: Path, name: str, bad_lines: list[BadLine] | None = None) -> list[dict[str, Any]]:
    """A JSON Lines file of cctf/ (RECORD_FILES), [] when the trace has none; a bad line is skipped and
    noted in ``bad_lines`` when given, else an error naming the file and line."""
    if name not in RECORD_FILES:
        raise ValueError(f"not a JSON Lines file of cctf/: {name}")
    path = cctf_dir / name
    if not path.is_file():
        return []
    noted: list[BadLine] = [] if bad_lines is None else bad_lines
    records = list(read_jsonl(path, noted))
    if bad_lines is None and noted:
        raise RunFolderError(f"{path}:{noted[0].line_no}: not a JSON record; parse the run again "
                             f"(tracekit parse {cctf_dir.parent})")  # fmt: skip
    return records


def records_table(cctf_dir: Path, name: str) -> pa.Table:
    """A JSON Lines file of cctf/ as one Arrow table (types inferred over every line); empty when absent."""
    import pyarrow.json as pa_json

    path = cctf_dir / name
    if name not in RECORD_FILES:
        raise ValueError(f"not a JSON Lines file of cctf/: {name}")
    if not path.is_file() or path.stat().st_size == 0:
        return pa.table({})
    try:
        # The whole file is one block: the types are inferred from every line, not from the first ones.
        return pa_json.read_json(path, read_options=pa_json.ReadOptions(block_size=max(path.stat().st_size, 1 << 20)))
    except pa.ArrowInvalid as exc:
        raise RunFolderError(f"{path}: not readable as JSON Lines ({exc})") from None


def write_records(cctf_dir: Path, name: str, records: list[dict[str, Any]]) -> None:
    if name not in RECORD_FILES:
        raise ValueError(f"not a JSON Lines file of cctf/: {name}")
    with open(cctf_dir / name, "w") as out:
        out.writelines(dumps(r) + "\n" for r in records)


def read_json(cctf_dir: Path, name: str) -> Any:
    """A JSON document of cctf/ (JSON_FILES): None when missing; an error naming it when it is not JSON."""
    if name not in JSON_FILES:
        raise ValueError(f"not a JSON file of cctf/: {name}")
    path = cctf_dir / name
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: not readable as JSON ({exc}); parse the run again "
                             f"(tracekit parse {cctf_dir.parent})") from None  # fmt: skip


def write_json(cctf_dir: Path, name: str, value: Any) -> None:
    if name not in JSON_FILES:
        raise ValueError(f"not a JSON file of cctf/: {name}")
    (cctf_dir / name).write_text(json.dumps(value, indent=2, sort_keys=False) + "\n")


def write_text(cctf_dir: Path, name: str, text: str) -> None:
    """A text file of cctf/ for a reader (TEXT_FILES); characters that cannot be written escaped."""
    if name not in TEXT_FILES:
        raise ValueError(f"not a text file of cctf/: {name}")
    (cctf_dir / name).write_text(text, errors="backslashreplace")


def json_lines_files(cctf_dir: Path) -> list[Path]:
    """The JSON Lines files of cctf/: its record files (RECORD_FILES) and those of a --jsonl copy."""
    return sorted(cctf_dir.glob("*.jsonl"))


def json_file(cctf_dir: Path, name: str) -> Path:
    """Where a JSON document of cctf/ (JSON_FILES) is: for a reader that needs its bytes (validation)."""
    if name not in JSON_FILES:
        raise ValueError(f"not a JSON file of cctf/: {name}")
    return cctf_dir / name


def read_nodes(cctf_dir: Path) -> dict[str, dict[str, Any]]:
    """Each node's facts (nodes.json) by node name ({} when missing)."""
    nodes = read_json(cctf_dir, NODES) or []
    return {n["node"]: n for n in (nodes if isinstance(nodes, list) else nodes.values())}
