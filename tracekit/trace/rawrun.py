"""Reading one run's raw node folders: ``RUN_DIR -> NodeFolder`` records.

A run folder holds one node's raw files directly (a collector run by hand),
or one folder per node under ``nodes/<node>/`` (what the runner's fetch phase
gathers). Everything that reads raw files goes through here, and every
garbled line is reported with its file and line number, never dropped
silently.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from tracekit import runfolder
from tracekit.errors import RunFolderError, TracekitError
from tracekit.jsonl import BadLine, read_jsonl_numbered
from tracekit.trace.records import RAW_HOST, RAW_HOST_REQUIRED, RAW_PROC

RAW_MARKERS = (runfolder.NODE_FACTS, runfolder.HOST_SAMPLES, runfolder.PROC_SAMPLES, runfolder.PROCESSES)


@dataclass
class BadLines:
    """Garbled or truncated lines met while reading, with where they were."""

    strict: bool = False
    lines: list[BadLine] = field(default_factory=list)

    def add(self, bad: BadLine) -> None:
        if self.strict:
            raise TracekitError(
                f"{bad.path}:{bad.line_no}: {bad.reason} (without --strict such lines are skipped and counted)"
            )
        self.lines.append(bad)


@dataclass(frozen=True)
class NodeFolder:
    path: Path
    node: str
    facts: dict[str, Any]
    clock_offset_ms: int | None  # add to this node's timestamps to get controller time
    clock: dict[str, Any] | None

    def shift(self, ts_ms: int | None) -> int | None:
        return None if ts_ms is None else ts_ms + (self.clock_offset_ms or 0)


def _has_raw_files(folder: Path) -> bool:
    return any((folder / name).exists() for name in RAW_MARKERS) or any(folder.glob("events.*.jsonl"))


def find_node_folders(run_dir: Path) -> list[Path]:
    """The node folders of a run, sorted by name."""
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} is not a folder; give the run folder, e.g. logs/<RUN_ID>")
    nodes_dir = run_dir / "nodes"
    if nodes_dir.is_dir():
        folders = sorted(p for p in nodes_dir.iterdir() if p.is_dir())
        if folders:
            return folders
    if _has_raw_files(run_dir):
        return [run_dir]
    raise RunFolderError(
        f"{run_dir} holds no raw files: expected node.json, host.jsonl, proc.csv or events.*.jsonl, "
        "directly or under nodes/<node>/ (did the collector or 'tracekit wrap' use this --run-id?)"
    )


def is_dispatcher_only(folder: Path) -> bool:
    """A folder with the dispatcher's placements and no measurements of its own."""
    return (
        not (folder / runfolder.NODE_FACTS).exists()
        and (folder / runfolder.PLACEMENT_EVENTS).exists()
        and not _has_raw_files(folder)
    )


def load_node_folder(folder: Path) -> NodeFolder:
    facts_path = folder / runfolder.NODE_FACTS
    try:
        facts = json.loads(facts_path.read_text())
    except FileNotFoundError:
        raise RunFolderError(
            f"{folder}: no {runfolder.NODE_FACTS} (node facts); start the collector on that node "
            "('tracekit collect start') before its tasks, or remove the folder from the run"
        ) from None
    except ValueError as exc:
        raise RunFolderError(f"{facts_path}: not valid JSON ({exc}); the node facts are unusable") from None
    clock = None
    clock_path = folder / runfolder.CLOCK
    if clock_path.exists():
        try:
            clock = json.loads(clock_path.read_text())
        except ValueError as exc:
            raise RunFolderError(f"{clock_path}: not valid JSON ({exc})") from None
    offset = round(clock["offset_ms"]) if clock and clock.get("offset_ms") is not None else None
    return NodeFolder(folder, facts["node"], facts, offset, clock)


def iter_records(path: Path, bad: BadLines, required: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """The records of a JSONL file (none if it does not exist), one at a time.

    A record that lacks one of the ``required`` fields counts as a bad line.
    """
    if not path.exists():
        return
    found: list[BadLine] = []
    for line_no, record in read_jsonl_numbered(path, found):
        while found:
            bad.add(found.pop(0))
        missing = [name for name in required if record.get(name) is None]
        if missing:
            bad.add(BadLine(path, line_no, f"missing {', '.join(missing)}"))
        else:
            yield record
    for line in found:
        bad.add(line)


def read_records(path: Path, bad: BadLines, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """All records of a JSONL file ([] if it does not exist)."""
    return list(iter_records(path, bad, required))


def read_proc_samples(path: Path, bad: BadLines) -> pa.Table:
    """proc.csv as an Arrow table (RAW_PROC); bad rows are skipped and reported."""
    if not path.exists():
        return RAW_PROC.empty_table()
    data = path.read_bytes()
    header, _, body = data.partition(b"\n")
    if header.decode(errors="replace").split(",") != list(RAW_PROC.names):
        raise TracekitError(f"{path}: unexpected header {header[:200]!r}; was it written by a Tracekit collector?")
    if body and not body.endswith(b"\n"):
        last_newline = body.rfind(b"\n")
        bad.add(BadLine(path, 2 + body.count(b"\n"), "truncated last line"))
        body = body[: last_newline + 1]
    try:
        return _read_csv_fast(body)
    except (pa.ArrowInvalid, _InvalidRow):
        return _read_csv_careful(path, body, bad)


class _InvalidRow(Exception):
    pass


def _read_csv_fast(body: bytes) -> pa.Table:
    def refuse(_row: object) -> str:
        return "error"  # abort; the careful reader names the row

    table = pa_csv.read_csv(
        io.BytesIO(body),
        read_options=pa_csv.ReadOptions(column_names=list(RAW_PROC.names)),
        parse_options=pa_csv.ParseOptions(invalid_row_handler=refuse),
        convert_options=pa_csv.ConvertOptions(column_types=RAW_PROC),
    )
    if any(table.column(f.name).null_count for f in RAW_PROC if not f.nullable):
        raise _InvalidRow  # an empty required field: find it row by row
    return table.cast(RAW_PROC)


def _read_csv_careful(path: Path, body: bytes, bad: BadLines) -> pa.Table:
    """Row by row, for a file with garbled rows: keep the good ones, name the bad."""
    columns: list[list[int | None]] = [[] for _ in RAW_PROC.names]
    nullable = [f.nullable for f in RAW_PROC]
    for index, raw in enumerate(body.split(b"\n")[:-1]):
        line_no = index + 2  # after the header
        fields = raw.split(b",")
        try:
            if len(fields) != len(columns):
                raise ValueError(f"{len(fields)} fields, expected {len(columns)}")
            values = [int(v) if v else None for v in fields]
            if any(v is None and not ok for v, ok in zip(values, nullable)):
                raise ValueError("empty required field")
        except ValueError as exc:
            bad.add(BadLine(path, line_no, str(exc)))
            continue
        for column, value in zip(columns, values):
            column.append(value)
    return pa.table([pa.array(c, f.type) for c, f in zip(columns, RAW_PROC)], schema=RAW_PROC)


def read_host_samples(path: Path, bad: BadLines) -> pa.Table:
    """host.jsonl as an Arrow table (RAW_HOST, plus ``net`` with one field per interface).

    Rows in file order. Arrow's JSON reader takes the whole file at once; when
    it refuses the file (a garbled line, a missing field, a wrong type), the
    lines are checked one by one, the bad ones reported with their line
    number, and the good ones read again.
    """
    if not path.exists():
        return RAW_HOST.empty_table()
    data = path.read_bytes()
    truncated: list[BadLine] = []  # reported after the lines before it
    cut = data.rfind(b"\n") + 1
    if data[cut:].strip():  # no newline after the last line: a crash mid-write, or only the newline lost
        try:
            complete = isinstance(json.loads(data[cut:]), dict)
        except ValueError:
            complete = False
        if complete:
            data += b"\n"
        else:
            truncated.append(BadLine(path, data.count(b"\n") + 1, "truncated last line"))
            data = data[:cut]
    table = RAW_HOST.empty_table()
    if data and not data.isspace():
        try:
            table = _read_host_json(data)
        except pa.ArrowInvalid:
            table = _read_host_careful(path, data, bad)
    for line in truncated:
        bad.add(line)
    return table


def _read_host_json(data: bytes) -> pa.Table:
    options = pa_json.ParseOptions(explicit_schema=RAW_HOST, unexpected_field_behavior="infer")
    # Blocks of 1 MB (the default) cost ~50% more CPU than 8 MB ones (a line is a few kB).
    table = pa_json.read_json(io.BytesIO(data), pa_json.ReadOptions(block_size=8 << 20), options)
    # The reader enforces RAW_HOST (types, required fields); `net` is checked here.
    disk = table.column("disk")
    for name in ("read_bytes", "write_bytes"):
        if disk.null_count != pc.struct_field(disk, [name]).null_count:
            raise pa.ArrowInvalid(f"disk: missing {name}")
    net = table.column("net") if "net" in table.column_names else None
    if net is None or not pa.types.is_struct(net.type) or net.null_count:
        raise pa.ArrowInvalid("net: missing, or not an object of interfaces")
    for iface in net.type:
        counters = iface.type
        if not (
            pa.types.is_struct(counters)
            and all(
                counters.get_field_index(name) >= 0 and pa.types.is_integer(counters.field(name).type)
                for name in ("rx_bytes", "tx_bytes")
            )
        ):
            raise pa.ArrowInvalid(f"net.{iface.name}: rx_bytes and tx_bytes must be integers")
        column = pc.struct_field(net, [iface.name])
        for name in ("rx_bytes", "tx_bytes"):
            if column.null_count != pc.struct_field(column, [name]).null_count:
                raise pa.ArrowInvalid(f"net.{iface.name}: missing {name}")
    return table


def _read_host_careful(path: Path, data: bytes, bad: BadLines) -> pa.Table:
    """Line by line: report the lines Arrow cannot take, read the others."""
    found: list[BadLine] = []
    good: list[tuple[int, bytes]] = []
    for index, raw in enumerate(data.split(b"\n")):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            found.append(BadLine(path, index + 1, str(exc)))
            continue
        missing = [name for name in RAW_HOST_REQUIRED if record.get(name) is None]
        if missing:
            found.append(BadLine(path, index + 1, f"missing {', '.join(missing)}"))
            continue
        good.append((index + 1, raw))

    def readable(lines: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        # Halving finds the few lines with a wrong type or a missing nested field.
        try:
            _read_host_json(b"\n".join(raw for _, raw in lines) + b"\n")
            return lines
        except pa.ArrowInvalid as exc:
            if len(lines) == 1:
                found.append(BadLine(path, lines[0][0], str(exc).removeprefix("JSON parse error: ")))
                return []
            middle = len(lines) // 2
            return readable(lines[:middle]) + readable(lines[middle:])

    kept = readable(good) if good else []
    for line in sorted(found, key=lambda b: b.line_no):
        bad.add(line)
    if not kept:
        return RAW_HOST.empty_table()
    try:
        return _read_host_json(b"\n".join(raw for _, raw in kept) + b"\n")
    except pa.ArrowInvalid as exc:  # each line is readable alone, not all together
        raise TracekitError(f"{path}: host samples disagree in their types ({exc})") from None
