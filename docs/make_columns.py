"""docs/columns.md: every column of the trace (cctf/) and of every export, with its type, unit and meaning,
written from where each is declared so that it cannot go stale.

    .venv/bin/python docs/make_columns.py          # from the checkout: rewrites docs/columns.md

cctf's fields are declared in schemas/cctf/*.schema.json (their ``description`` and ``unit``; the Parquet
tables take them into their field metadata through tracekit.trace.records), an export's columns in its
format's module (``TABLES``: tracekit.trace.export). tests/unit/test_columns.py checks the page is current.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[1]
PAGE = CHECKOUT / "docs" / "columns.md"
sys.path.insert(0, str(CHECKOUT))

HEAD = """# Columns: the trace and the exports, with their units

Written by `docs/make_columns.py` from where each column is declared (do not edit by hand): the trace's in
`schemas/cctf/*.schema.json`, an export's in its format's module (`tracekit/trace/export/<format>.py`).
The Parquet files carry the same unit and description in each column's metadata: `tracekit show FILE`
prints a file's first rows with them. Every row of a cctf table is one sampling interval (`dt_ms` long,
ending at `ts_ms`): a counter in it is what was counted in that interval, a gauge (memory, threads) its
value at the interval's end; the collector's raw files (`nodes/<node>/*.csv`) hold cumulative counters.
"""


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _json_type(prop: dict[str, Any]) -> str:
    kind = prop.get("type", prop.get("enum") and "enum" or "any")
    kinds = kind if isinstance(kind, list) else [kind]
    shown = [k for k in kinds if k != "null"]
    if "array" in shown and isinstance(prop.get("items"), dict) and "type" in prop["items"]:
        shown = [f"array of {prop['items']['type']}" if k == "array" else k for k in shown]
    return " or ".join(map(str, shown)) + (" (or null)" if "null" in kinds else "")


def _trace_sections() -> list[str]:
    from tracekit.schemas import load_schema, schema_dir

    out = ["## The trace: `cctf/`", ""]
    for path in sorted((schema_dir() / "cctf").glob("*.schema.json")):
        schema = load_schema(f"cctf/{path.name.removesuffix('.schema.json')}")
        record = schema["items"] if schema.get("type") == "array" else schema
        out += [f"### `{path.name.removesuffix('.schema.json')}`", "", _cell(schema.get("title", "")), "",
                "| column | type | unit | what it holds |", "|---|---|---|---|"]  # fmt: skip
        for name, prop in record.get("properties", {}).items():
            out.append(f"| `{name}` | {_json_type(prop)} | {_cell(prop.get('unit', ''))} | {_cell(prop.get('description', ''))} |")
        out.append("")
    return out


def _export_sections() -> list[str]:
    from tracekit.trace import export

    out = ["## The exports", ""]
    for name in export.names():
        module = export.get(name)
        out += [f"### `{name}`: {module.TITLE}", "", _cell(module.HELP), ""]
        for file_name, schema in module.TABLES.items():
            out += [f"`{file_name}`", "", "| column | type | unit | what it holds |", "|---|---|---|---|"]
            for field in schema:
                meta = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
                nullable = " (or null)" if field.nullable else ""
                out.append(f"| `{field.name}` | {field.type}{nullable} | {_cell(meta.get('unit', ''))} | "
                           f"{_cell(meta.get('description', ''))} |")  # fmt: skip
            out.append("")
    return out


def render() -> str:
    return "\n".join([HEAD, *_trace_sections(), *_export_sections()]).rstrip() + "\n"


if __name__ == "__main__":
    text = render()
    if PAGE.is_file() and PAGE.read_text() == text:
        print(f"{PAGE}: up to date")
    else:
        PAGE.write_text(text)
        print(f"{PAGE}: written")
