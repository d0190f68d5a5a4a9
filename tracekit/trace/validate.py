"""Check parse's output against the JSON Schemas in ``schemas/cctf/``.

input:  a cctf/ folder
output: nothing, or TracekitError naming the file, line and field

Every JSON file is checked whole. Of every JSON Lines file: the first
FIRST_LINES, SPREAD_LINES more spread evenly over the file, and the last
one (so every node's part and the end are seen). The records are made by
code from typed columns and fixed-shape dicts (Arrow types that a test
holds equal to the schemas), so a shape error shows in any line, and
checking millions of lines one by one would cost more than the whole parse.
Every Parquet file's schema is compared with its table's declared one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from tracekit.errors import TracekitError
from tracekit.schemas import validation_errors
from tracekit.trace import cctf

FIRST_LINES = 100
SPREAD_LINES = 100


def _fail(path: Path, where: str, problems: list[str]) -> None:
    raise TracekitError(f"{path.name}{where}: does not match schemas/cctf/{path.stem}: {problems[0]}")


def sampled_lines(path: Path) -> Iterator[tuple[int | None, bytes]]:
    """(line number or None when not counted, line) of the first and evenly spread lines."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        for line_no, line in enumerate(islice(f, FIRST_LINES), start=1):
            yield line_no, line
        begin = f.tell()
        if begin >= size:
            return
        for k in range(SPREAD_LINES):
            f.seek(begin + (size - begin) * k // SPREAD_LINES)
            f.readline()  # to the start of the next whole line
            line = f.readline()
            if line:
                yield None, line
        tail_start = max(begin, size - (1 << 16))
        f.seek(tail_start)
        tail = f.read().splitlines()
        if tail and (len(tail) > 1 or tail_start == begin):  # a whole line
            yield None, tail[-1]  # the last line, where a truncated write would show


def validate_outputs(cctf_dir: Path) -> None:
    for path in cctf.json_lines_files(cctf_dir):
        for line_no, line in sampled_lines(path):
            problems = validation_errors(f"cctf/{path.stem}", json.loads(line))
            if problems:
                where = f":{line_no}" if line_no else f" (line {line.decode(errors='replace')[:200]!r})"
                _fail(path, where, problems)
    for name in cctf.JSON_FILES:
        path = cctf.json_file(cctf_dir, name)
        problems = validation_errors(f"cctf/{path.stem}", cctf.read_json(cctf_dir, name))
        if problems:
            _fail(path, "", problems)
    cctf.check_schemas(cctf_dir)
