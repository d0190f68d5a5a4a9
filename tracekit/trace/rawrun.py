"""Reading one run's raw node folders: ``RUN_DIR -> NodeFolder`` records.

A run folder holds one node's raw files directly (a collector run by hand),
or one folder per node under ``nodes/<node>/`` (what the runner's fetch phase
gathers). Everything that reads raw files goes through here, and every
garbled line is reported with its file and line number, never dropped
silently; so is every file, or value, that parse does not use as it is (an
empty raw file, a clock offset past belief: ``Rejected``).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from tracekit import runfolder
from tracekit.errors import RunFolderError, TracekitError
from tracekit.jsonl import BadLine, printable, read_jsonl_numbered
from tracekit.trace.records import RAW_HOST, RAW_HOST_CPUS, RAW_HOST_NET, RAW_PROC

RAW_MARKERS = (runfolder.NODE_FACTS, runfolder.HOST_SAMPLES, runfolder.PROC_SAMPLES, runfolder.PROCESSES)
# A node's clock is off the controller's by milliseconds when synchronised, by seconds when not; a
# larger offset is a broken measurement or an edited file, and applying it would move the node's
# tasks by as much (1e15 ms is 31,700 years): such an offset is refused and the node left unshifted.
MAX_CLOCK_OFFSET_MS = 60_000.0
# How far the offset may lie outside its own start/end measurements (their mean, rounded to 3 digits).
_CLOCK_ROUNDING_MS = 0.01
# "run_id":"<id>" in an events line (tracekit wrap writes it first): counted without parsing JSON.
_RUN_ID_FIELD = re.compile(rb'"run_id"\s*:\s*"([A-Za-z0-9][A-Za-z0-9._-]{0,127})"')


@dataclass(frozen=True)
class Rejected:
    """A file, folder or value that parse did not use as it was, and what it did instead."""

    path: Path
    kind: str  # one of records.REJECTED_KINDS
    reason: str
    line: int | None = None  # 1-based, for one line of a file (an invocation event)


@dataclass
class BadLines:
    """Garbled or truncated lines met while reading, with where they were."""

    strict: bool = False
    lines: list[BadLine] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)  # whole files read as missing

    def reject(self, path: Path, kind: str, reason: str, line: int | None = None) -> None:
        self.rejected.append(Rejected(path, kind, reason, line))

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
    clock: dict[str, Any] | None  # offset_ms, uncertainty_ms, rtt_ms, reference: each a sane value or None
    run_id: str | None = None  # the run the node's own files record (node.json, events), if any
    rejected: tuple[Rejected, ...] = ()  # its clock.json, when not used as it is
    # The worker's task_cgroups.json as parse can use it (available, version, readings, why); None: no worker
    task_cgroups: dict[str, Any] | None = None

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
        f"{run_dir} holds no raw files: expected node.json, host.csv, proc.csv or events.*.jsonl, "
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
        facts = json.loads(facts_path.read_bytes())
    except FileNotFoundError:
        raise RunFolderError(
            f"{folder}: no {runfolder.NODE_FACTS} (node facts); start the collector on that node "
            "('tracekit collect start') before its tasks, or remove the folder from the run"
        ) from None
    except ValueError as exc:
        raise RunFolderError(f"{facts_path}: not valid JSON ({printable(str(exc))}); the node facts are unusable") from None
    if not isinstance(facts, dict) or not isinstance(facts.get("node"), str):
        raise RunFolderError(f"{facts_path}: no node id (a string 'node'); the node facts are unusable")
    rejected: list[Rejected] = []
    clock = _read_clock(folder / runfolder.CLOCK, rejected)
    offset = round(clock["offset_ms"]) if clock and clock["offset_ms"] is not None else None
    task_cgroups = _read_task_cgroups(folder / runfolder.TASK_CGROUPS, rejected)
    return NodeFolder(folder, facts["node"], facts, offset, clock, recorded_run_id(folder, facts), tuple(rejected),
                      task_cgroups)  # fmt: skip


def _read_task_cgroups(path: Path, rejected: list[Rejected]) -> dict[str, Any] | None:
    """task_cgroups.json (tracekit.taskcgroup, written by the worker) with only values parse can use."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        rejected.append(Rejected(path, "task_cgroups", f"not valid JSON ({printable(str(exc))}): not used"))
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("available"), bool):
        rejected.append(Rejected(path, "task_cgroups", "no 'available' (true or false): not used"))
        return None
    readings = raw.get("readings")
    return {
        "available": raw["available"],
        "version": raw.get("version") if raw.get("version") in (1, 2) else None,
        "readings": [r for r in readings if r in ("cpu", "memory", "pids")] if isinstance(readings, list) else [],
        "why": printable(raw["why"])[:1000] if isinstance(raw.get("why"), str) else None,
    }


def _read_clock(path: Path, rejected: list[Rejected]) -> dict[str, Any] | None:
    """clock.json (tracekit.collect.clock) with only values parse can use; what it cannot, in ``rejected``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data.strip():
        rejected.append(Rejected(path, "empty_file", "empty: read as missing (no clock offset)"))
        return None
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        rejected.append(Rejected(path, "clock_offset", f"not valid JSON ({printable(str(exc))}): node not shifted"))
        return None
    clock = {name: _finite(raw.get(name)) for name in ("offset_ms", "uncertainty_ms", "rtt_ms")}
    clock["reference"] = raw.get("reference") if isinstance(raw.get("reference"), str) else None
    problem = _offset_problem(raw, clock)
    if problem:
        rejected.append(Rejected(path, "clock_offset", f"{problem}: node not shifted"))
        clock["offset_ms"] = None
    return clock


def _finite(value: Any) -> float | int | None:
    """A number parse can compute with (not a string, a bool, NaN or infinity), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def _offset_problem(raw: dict[str, Any], clock: dict[str, Any]) -> str | None:
    """Why the offset cannot be applied, or None (also for no offset at all)."""
    value = raw.get("offset_ms")
    if value is None:
        return None
    shown = printable(repr(value))[:60]
    if clock["offset_ms"] is None:
        return f"offset_ms {shown} is not a number"
    offset = clock["offset_ms"]
    if abs(offset) > MAX_CLOCK_OFFSET_MS:
        return f"offset_ms {shown} is beyond +-{MAX_CLOCK_OFFSET_MS:.0f} ms, more than a clock is ever off"
    # The offset is the mean of the start and end measurements: one outside them was not measured.
    measured = [m for m in (raw.get("start"), raw.get("end")) if isinstance(m, dict) and _finite(m.get("offset_ms")) is not None]
    if measured:
        slack = max((_finite(m.get("uncertainty_ms")) or 0) for m in measured) + _CLOCK_ROUNDING_MS
        low = min(m["offset_ms"] for m in measured) - slack
        high = max(m["offset_ms"] for m in measured) + slack
        if not low <= offset <= high:
            return f"offset_ms {shown} is not what was measured (start/end {low + slack:g}..{high - slack:g} ms)"
    return None


def run_folder_name(folder: Path) -> str:
    """The name of the run folder a node folder is, or is in: logs/<RUN_ID> on a node (or a run by
    hand), <RUN_ID>/nodes/<node> after a fetch. The runner names it after the run id."""
    folder = folder.resolve()
    return folder.parent.parent.name if folder.parent.name == "nodes" else folder.name


def recorded_run_id(folder: Path, facts: dict[str, Any]) -> str | None:
    """The run a node folder's own files say they belong to: node.json's run_id, else among the runs
    its invocation events name (tracekit wrap writes it into each) the run folder's name, else the
    one most of them name; None when nothing says."""
    if isinstance(facts.get("run_id"), str):
        return facts["run_id"]
    counts: Counter[str] = Counter()
    for path in sorted(folder.glob("events.*.jsonl")):
        counts.update(found.decode() for found in _RUN_ID_FIELD.findall(path.read_bytes()))
    if not counts:
        return None
    if run_folder_name(folder) in counts:
        return run_folder_name(folder)
    # Most events; among equals, the first by name (the same answer on every machine).
    best = max(counts.values())
    return min(run_id for run_id, count in counts.items() if count == best)


def iter_records(path: Path, bad: BadLines, required: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """The records of a JSONL file (none if it does not exist), one at a time.

    A record that lacks one of the ``required`` fields counts as a bad line.
    """
    for _, record in iter_numbered_records(path, bad, required):
        yield record


def iter_numbered_records(
    path: Path, bad: BadLines, required: tuple[str, ...] = ()
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of a JSONL file, as ``iter_records``."""
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
            yield line_no, record
    for line in found:
        bad.add(line)


def collector_died(events: list[dict[str, Any]]) -> bool:
    """The node's collector (its collector.jsonl records) started and never wrote its stop record (killed, or its
    machine went down)."""
    return any(e.get("event") == "start" for e in events) and events[-1].get("event") != "stop"


def foreign_processes(events: list[dict[str, Any]]) -> dict[str, int]:
    """Matching processes the node's collector left alone, from its last record: of other runs, of other nodes."""
    last = events[-1] if events else {}
    return {"other_runs": int(last.get("processes_of_other_runs") or 0),
            "other_nodes": int(last.get("processes_of_other_nodes") or 0)}  # fmt: skip


def read_records(path: Path, bad: BadLines, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """All records of a JSONL file ([] if it does not exist)."""
    return list(iter_records(path, bad, required))


def read_proc_samples(path: Path, bad: BadLines) -> pa.Table:
    """proc.csv as an Arrow table (RAW_PROC); bad rows are skipped and reported."""
    return read_csv_table(path, RAW_PROC, bad)


@dataclass(frozen=True)
class HostSamples:
    """One node's host samples: host.csv, host_cpus.csv, host_net.csv as read (file order)."""

    host: pa.Table  # RAW_HOST
    cpus: pa.Table  # RAW_HOST_CPUS
    net: pa.Table  # RAW_HOST_NET


# The raw host samples' file before host.csv (Tracekit up to commit 72adce7).
OLD_HOST_SAMPLES = "host.jsonl"


def read_host_samples(folder: Path, bad: BadLines) -> HostSamples:
    """The host sample files of a node folder (empty tables for those missing)."""
    if (folder / OLD_HOST_SAMPLES).exists() and not (folder / runfolder.HOST_SAMPLES).exists():
        raise RunFolderError(
            f"{folder / OLD_HOST_SAMPLES}: host samples in the JSON Lines layout of an older collector, which "
            f"this parse does not read; parse the run with the Tracekit that recorded it (or remove the file to "
            "parse without host samples)"
        )
    return HostSamples(
        read_csv_table(folder / runfolder.HOST_SAMPLES, RAW_HOST, bad),
        read_csv_table(folder / runfolder.HOST_CPU_SAMPLES, RAW_HOST_CPUS, bad),
        read_csv_table(folder / runfolder.HOST_NET_SAMPLES, RAW_HOST_NET, bad),
    )


def read_csv_table(path: Path, schema: pa.Schema, bad: BadLines) -> pa.Table:
    """A raw CSV file of the collector (header, then rows of ``schema``) as an Arrow table.

    Arrow's reader takes the whole file at once; when it refuses a row (a
    garbled line, an empty required field), the file is read again row by
    row, the bad rows reported with their line number and the good ones
    kept. A last line without its newline (a crash mid-write) is reported
    and left out.
    """
    if not path.exists():
        return schema.empty_table()
    data = path.read_bytes()
    if len(data) < 1024 and not data.strip():  # a collector that died before its first write, a failed copy
        bad.reject(path, "empty_file", "empty: read as missing")
        return schema.empty_table()
    header, _, body = data.partition(b"\n")
    names = header.decode(errors="replace").split(",")
    if names != list(schema.names):
        # An older collector's file: the columns added since (nullable, at the end) are null.
        added = schema.names[len(names) :]
        if schema.names[: len(names)] != names or not added or not all(schema.field(n).nullable for n in added):
            raise TracekitError(f"{path}: unexpected header {header[:200]!r}; was it written by a Tracekit collector?")
        older = pa.schema([schema.field(n) for n in names])
        table = read_csv_table(path, older, bad)
        for name in added:
            table = table.append_column(schema.field(name), pa.nulls(table.num_rows, schema.field(name).type))
        return table
    truncated = None
    if body and not body.endswith(b"\n"):
        truncated = BadLine(path, 2 + body.count(b"\n"), "truncated last line")
        body = body[: body.rfind(b"\n") + 1]
    try:
        table = _read_csv_fast(body, schema)
    except (pa.ArrowInvalid, _InvalidRow):
        table = _read_csv_careful(path, body, schema, bad)
    if truncated is not None:
        bad.add(truncated)
    return table


class _InvalidRow(Exception):
    pass


def _read_csv_fast(body: bytes, schema: pa.Schema) -> pa.Table:
    # A row with too many or too few fields raises (Arrow's default; the careful reader names it). No
    # invalid_row_handler: Arrow decodes a row's bytes for it, and bytes that are not UTF-8 then
    # print a traceback on stderr that no one can catch.
    table = pa_csv.read_csv(
        io.BytesIO(body),
        read_options=pa_csv.ReadOptions(column_names=list(schema.names)),
        # Only an empty field is null (Arrow's default also takes "NA", "null", ...).
        convert_options=pa_csv.ConvertOptions(
            column_types=schema, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    )
    if any(table.column(f.name).null_count for f in schema if not f.nullable):
        raise _InvalidRow  # an empty required field: find it row by row
    return table.cast(schema)


def _read_csv_careful(path: Path, body: bytes, schema: pa.Schema, bad: BadLines) -> pa.Table:
    """For a file with garbled rows: keep the good ones, name the bad.

    Halving finds the few bad rows among millions: a part Arrow reads whole
    is kept, one it refuses is split again.
    """
    found: list[BadLine] = []

    def readable(rows: list[tuple[int, bytes]]) -> list[pa.Table]:
        try:
            return [_read_csv_fast(b"\n".join(raw for _, raw in rows) + b"\n", schema)]
        except (pa.ArrowInvalid, _InvalidRow) as exc:
            if len(rows) == 1:
                reason = "empty required field" if isinstance(exc, _InvalidRow) else _csv_reason(exc, schema)
                found.append(BadLine(path, rows[0][0], reason))
                return []
            middle = len(rows) // 2
            return readable(rows[:middle]) + readable(rows[middle:])

    rows = [(index + 2, raw) for index, raw in enumerate(body.split(b"\n")[:-1])]  # line 1 is the header
    tables = readable(rows) if rows else []
    for line in found:
        bad.add(line)
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _csv_reason(exc: pa.ArrowInvalid, schema: pa.Schema) -> str:
    """Arrow's complaint, with the column named ("#3: ..." -> "tx_bytes: ..."), control characters escaped
    (it quotes the row, which may be any bytes)."""
    text = (str(exc).strip().splitlines() or ["unreadable row"])[0]
    text = printable(text.removeprefix("CSV parse error: ").removeprefix("In CSV column "))[:160]
    number, colon, rest = text.partition(": ")
    if colon and number.startswith("#") and number[1:].isdigit() and int(number[1:]) < len(schema):
        return f"{schema.names[int(number[1:])]}: {rest}"
    return text
