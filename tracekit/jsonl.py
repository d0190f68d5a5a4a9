"""JSON Lines: an appending writer and a tolerant reader.

Writers append whole lines and flush on demand, so a crash loses at most the
lines not yet flushed and never leaves a half line behind a complete one.
Readers skip a truncated last line or a garbled line and report where it was.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


def dumps(record: dict[str, Any]) -> str:
    """One compact JSON line (no trailing newline)."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


class LineWriter:
    """Buffered line appender; ``flush()`` pushes the buffer to the kernel."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "ab", buffering=1 << 16)  # noqa: SIM115 - closed in close()
        self.at_start = self._file.tell() == 0  # a new (or empty) file

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(dumps(record).encode() + b"\n")

    def write_line(self, line: str) -> None:
        """Write a line already serialised by the caller (hot paths)."""
        self._file.write(line.encode() + b"\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()

    def __enter__(self) -> LineWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON into a hidden file beside ``path``, then move it into place: a reader sees all or nothing."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(partial, path)


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one record with a single ``write()``, safe with concurrent writers.

    O_APPEND makes each write land at the end of the file as a whole, so
    several wrappers can share one events file.
    """
    data = (dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# Control characters (C0 but newline and tab, DEL, C1) and lone surrogates (bytes that were not
# UTF-8): what a terminal or a Markdown viewer must not be handed as they are.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character and lone surrogate written as an escape (``\\x1b``,
    ``\\udcff``), and newlines and tabs too unless ``keep_newlines``: safe to print or to write to
    a text file, one line per line."""
    text = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), text)
    if not keep_newlines:
        text = text.replace("\n", "\\n").replace("\t", "\\t")
    return text


@dataclass(frozen=True)
class BadLine:
    path: Path
    line_no: int  # 1-based
    reason: str  # "truncated last line" or the JSON error


def read_jsonl(path: Path, bad_lines: list[BadLine] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the records of ``path``; garbled lines go to ``bad_lines``."""
    for _, record in read_jsonl_numbered(path, bad_lines):
        yield record


# orjson reads an integer past 64 bits as a float: a file with a number of 19 digits or more goes
# to json. A number follows ":", "," or "[" (and maybe spaces); digits inside strings, as in hex
# trace ids, mostly do not, so such files keep orjson (a string that looks like one only costs time).
_LONG_NUMBER = re.compile(rb"[:,\[]\s*-?\d{19}")


def _json_loads(raw: bytes) -> Any:
    return json.loads(raw)


def _orjson_loads(raw: bytes) -> Any:
    """json.loads in a fifth of the time; what orjson refuses (NaN, a lone surrogate, a garbled
    line) gets json's answer or json's error."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def read_jsonl_numbered(
    path: Path, bad_lines: list[BadLine] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) of ``path``; garbled lines go to ``bad_lines``."""
    with open(path, "rb") as f:
        data = f.read()
    loads = _json_loads if _LONG_NUMBER.search(data) else _orjson_loads
    lines = data.split(b"\n")
    last_complete = data.endswith(b"\n")
    for index, raw in enumerate(lines):
        if not raw.strip():
            continue
        is_last = index == len(lines) - 1
        try:
            record = loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if bad_lines is not None:
                reason = "truncated last line" if is_last and not last_complete else printable(str(exc))
                bad_lines.append(BadLine(path, index + 1, reason))
            continue
        yield index + 1, record
