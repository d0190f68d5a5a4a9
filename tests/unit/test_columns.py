"""Self-describing tables: every column of cctf/ and of every export has a unit and a description, declared
once, carried in the Parquet field metadata, listed in docs/columns.md (generated) and shown by tracekit show."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.unit.test_export_alibaba import sampled as sampled  # noqa: F401 - the fixture: a hand-made trace with host samples
from tests.unit.test_export_wta import run as run  # noqa: F401 - what sampled builds on
from tracekit import cli
from tracekit.errors import RunFolderError, UsageError
from tracekit.schemas import load_schema, schema_dir
from tracekit.trace import cctf, export, records
from tracekit.trace.export import alibaba

REPO = Path(__file__).resolve().parents[2]
UNITS = {"ms", "ms since the epoch", "ns", "kB", "bytes", "bytes/s", "bits/s", "%", "cores", "MHz", "count",
         "fraction", "load", "id"}  # fmt: skip


def make_columns():
    spec = importlib.util.spec_from_file_location("make_columns", REPO / "docs" / "make_columns.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cctf_fields() -> list[tuple[str, str, dict]]:
    found = []
    for path in sorted((schema_dir() / "cctf").glob("*.schema.json")):
        name = path.name.removesuffix(".schema.json")
        schema = load_schema(f"cctf/{name}")
        record = schema["items"] if schema.get("type") == "array" else schema
        found += [(name, field, prop) for field, prop in record["properties"].items()]
    return found


def test_every_cctf_field_is_described_and_every_number_has_a_unit():
    fields = cctf_fields()
    assert len(fields) > 150
    undescribed = [f"{table}.{field}" for table, field, prop in fields if not prop.get("description")]
    assert undescribed == []
    numeric = [(table, field, prop) for table, field, prop in fields
               if {"integer", "number"} & set(_types(prop)) or {"integer", "number"} & set(_types(prop.get("items") or {}))]  # fmt: skip
    assert [f"{table}.{field}: {prop.get('unit')}" for table, field, prop in numeric if prop.get("unit") not in UNITS] == []


def _types(prop: dict) -> list[str]:
    kind = prop.get("type", [])
    return kind if isinstance(kind, list) else [kind]


def test_cctf_parquet_files_carry_each_column_s_unit_and_description(tmp_path):
    path = tmp_path / "host_metrics" / "cloud1.parquet"
    rows = pa.Table.from_pylist([], schema=pa.schema([f.remove_metadata() for f in records.HOST_METRICS]))
    cctf.write_table(path, "host_metrics", rows)  # rows without metadata: written with the declared schema's
    written = pq.read_schema(path)
    declared = load_schema("cctf/host_metrics")["properties"]
    for field in written:
        assert field.metadata[b"description"].decode() == declared[field.name]["description"], field.name
        assert field.metadata[b"unit"].decode() == declared[field.name].get("unit", ""), field.name
    assert written.field("disk_write_bytes_per_s").metadata[b"unit"] == b"bytes/s"


def test_every_export_column_has_a_unit_and_a_description():
    for name in export.names():
        module = export.get(name)
        assert module.TABLES, name
        for file_name, schema in module.TABLES.items():
            for field in schema:
                assert field.metadata and field.metadata.get(b"description"), (name, file_name, field.name)
                assert b"unit" in field.metadata, (name, file_name, field.name)


def test_the_columns_page_is_generated_and_current():
    page = REPO / "docs" / "columns.md"
    assert page.read_text() == make_columns().render(), "docs/columns.md is stale: run .venv/bin/python docs/make_columns.py"
    text = page.read_text()
    assert "| `rx_bits_per_s` | number | bits/s |" in text and "### `alibaba`: Alibaba" in text


def test_show_prints_rows_with_units_of_parquet_and_of_an_export_s_csv(sampled, tmp_path, capsys):
    out = tmp_path / "alibaba"
    alibaba.export(sampled, out)
    assert cli.main(["show", str(out / "batch_instance.csv")]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0] == f"{out / 'batch_instance.csv'}: 6 rows of 14 columns; the first 1, each column with its value, [unit] and what it holds:"
    assert any(line.split()[:3] == ["cpu_avg", line.split()[1], "[%"] for line in said[1:])
    assert [line.split()[0] for line in said[1:]] == alibaba.BATCH_INSTANCE.names
    lines = cli_lines(["show", str(cctf.node_file(sampled / cctf.CCTF, "host_metrics", "cloud1")), "--rows", "2"], capsys)
    assert lines[1] == "row 1:" and any(line.split()[0] == "cpu_util_pct" and "[%]" in line for line in lines)


def test_show_as_a_table_puts_the_chosen_columns_side_by_side_under_their_units(sampled, tmp_path, capsys):
    out = tmp_path / "alibaba"
    alibaba.export(sampled, out)
    path = out / "batch_instance.csv"
    lines = cli_lines(["show", "--table", "--rows", "2", "--columns", "instance_name,cpu_avg,start_time", str(path)],
                      capsys)  # fmt: skip
    assert lines[0] == f"{path}: 6 rows of 14 columns; the first 2, 3 of them, [unit] under each column's name:"
    assert lines[1].split() == ["instance_name", "cpu_avg", "start_time"]
    assert lines[2].split() == ["[%", "of", "one", "core]", "[s]"]
    rows = alibaba.read_csv(path, alibaba.BATCH_INSTANCE).slice(0, 2).to_pylist()
    assert [line.split()[0] for line in lines[3:]] == [row["instance_name"] for row in rows]
    assert len(lines) == 5 and lines[2].index("[s]") == lines[1].index("start_time")  # aligned
    from tracekit.trace.show import show_lines

    with pytest.raises(UsageError, match=r"batch_instance.csv: no column cpu_avrg \(it has: instance_name, task_name"):
        show_lines(path, columns=["cpu_avg", "cpu_avrg"])
    with pytest.raises(SystemExit):
        cli.main(["show", "--columns", ",", str(path)])
    assert "give column names separated by commas" in capsys.readouterr().err


def cli_lines(argv: list[str], capsys) -> list[str]:
    assert cli.main(argv) == 0
    return capsys.readouterr().out.splitlines()


def test_show_names_a_file_it_cannot_read(tmp_path):
    from tracekit.trace.show import show_lines

    with pytest.raises(RunFolderError, match="no such file"):
        show_lines(tmp_path / "missing.parquet")
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(RunFolderError, match=r"cut.parquet: not readable as Parquet"):
        show_lines(tmp_path / "cut.parquet")
    (tmp_path / "mine.csv").write_text("a,b\n")
    with pytest.raises(UsageError, match=r"mine.csv: not a CSV table of an export"):
        show_lines(tmp_path / "mine.csv")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match=r"give a .parquet file"):
        show_lines(tmp_path / "notes.txt")


def test_show_writes_node_data_as_printable_text(tmp_path):
    """A process name is node data: a terminal's escape sequence or a newline in it is shown escaped."""
    from tracekit.trace.show import show_lines

    row = {f.name: None for f in records.PROC_METRICS} | {"node": "n1", "pid": 1, "create_time_ms": 0, "ts_ms": 1,
                                                         "dt_ms": 1, "cpu_user_ms": 0, "cpu_system_ms": 0, "rss_kb": 0,
                                                         "num_threads": 1, "comm": "x\x1b]0;owned\x07\nfake: line"}  # fmt: skip
    path = tmp_path / "proc_metrics" / "n1.parquet"
    cctf.write_table(path, "proc_metrics", pa.Table.from_pylist([row], schema=records.PROC_METRICS))
    lines = show_lines(path)
    assert len(lines) == 1 + len(records.PROC_METRICS) and not any("\x1b" in line or "\x07" in line for line in lines)
