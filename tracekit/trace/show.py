"""``tracekit show FILE``: the first rows of a trace's or an export's table, each value with its column's unit
and description.

input:  a Parquet file of cctf/ or of an export (its columns' units and descriptions in the field metadata),
        or a CSV file of an export without a header (its format's declared columns: the export.json beside it
        names the format)
output: lines for a person: the file, its row count, then per row each column's name, value, unit and
        description (or, as a table, the columns side by side under their names and units, a line per row)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from tracekit.errors import RunFolderError, UsageError
from tracekit.jsonl import printable


def read_described(path: Path) -> pa.Table:
    """The table in ``path`` with its declared columns (units and descriptions in the field metadata)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise RunFolderError(f"{path}: no such file")
    if path.suffix == ".parquet":
        try:
            return pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise RunFolderError(f"{path}: not readable as Parquet ({str(exc).splitlines()[0][:200]})") from None
    if path.suffix == ".csv":
        return _export_csv(path)
    raise UsageError(f"{path}: give a .parquet file (cctf/ or an export) or a .csv file of an export")


def _export_csv(path: Path) -> pa.Table:
    from tracekit.trace import export

    summary = _summary_near(path)
    module = export.get(summary["format"]) if summary and summary.get("format") in export.names() else None
    schema = getattr(module, "TABLES", {}).get(path.name) if module else None
    if schema is None:
        raise UsageError(f"{path}: not a CSV table of an export (no export.json beside it that declares it)")
    try:
        return export.read_csv(path, schema).cast(schema)
    except (OSError, pa.ArrowException) as exc:
        raise RunFolderError(f"{path}: not readable as its declared columns ({str(exc).splitlines()[0][:200]})") from None


def _summary_near(path: Path) -> dict[str, Any] | None:
    from tracekit.trace.export import SUMMARY

    for folder in (path.parent, *path.parent.parents[:3]):
        if (folder / SUMMARY).is_file():
            try:
                found = json.loads((folder / SUMMARY).read_text())
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None


def show_lines(path: Path, rows: int = 1, columns: list[str] | None = None, as_table: bool = False) -> list[str]:
    """The file, its row count and its first ``rows`` rows (of ``columns``, else every column): one line per
    column with its value, unit and what it holds, or ``as_table``: the columns side by side under their names
    and units, one line per row."""
    table = read_described(path)
    total_columns = table.num_columns
    if columns:
        unknown = [name for name in columns if name not in table.column_names]
        if unknown:
            raise UsageError(f"{path}: no column {', '.join(unknown)} (it has: {', '.join(table.column_names)})")
        table = table.select(columns)
    shown = table.slice(0, max(0, rows)).to_pylist()
    chosen = f", {table.num_columns} of them" if table.num_columns != total_columns else ""
    layout = "[unit] under each column's name" if as_table else "each column with its value, [unit] and what it holds"
    lines = [f"{path}: {table.num_rows} rows of {total_columns} columns"
             + (f"; the first {len(shown)}{chosen}, {layout}:" if shown else "")]  # fmt: skip
    values = [[_text(row[name]) for name in table.column_names] for row in shown]
    if as_table:
        return lines + (_side_by_side(table.schema, values) if shown else [])
    width = max((len(name) for name in table.column_names), default=0)
    value_width = min(44, max((len(v) for row in values for v in row), default=0))
    for number, row in enumerate(values, 1):
        if len(shown) > 1:
            lines.append(f"row {number}:")
        for field, value in zip(table.schema, row):
            meta = _meta(field)
            unit = f"[{meta['unit']}] " if meta.get("unit") else ""
            lines.append(f"  {field.name:<{width}}  {value:<{value_width}}  {unit}{meta.get('description', '')}".rstrip())
    return lines


def _side_by_side(schema: pa.Schema, values: list[list[str]]) -> list[str]:
    """A header line of names, one of units, then a line per row, each column as wide as its widest cell."""
    units = [f"[{_meta(field)['unit']}]" if _meta(field).get("unit") else "" for field in schema]
    grid = [schema.names, units, *values]
    widths = [max(len(line[column]) for line in grid) for column in range(len(schema))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in grid]


def _meta(field: pa.Field) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}


def _text(value: Any) -> str:
    """A value on one line: floats to 6 significant digits, a long list as its first items and its length."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{printable(json.dumps(k))}: {_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        shown = ", ".join(_text(v) for v in value[:4])
        return f"[{shown}]" if len(value) <= 4 else f"[{shown}, ... {len(value)} values]"
    # Strings come from node data (a process's name, a cgroup path): never a terminal's control sequence.
    return "null" if value is None else printable(str(value))
