"""Check parse's output against the JSON Schemas in ``schemas/cctf/``.

input:  a cctf/ folder
output: nothing, or TracekitError naming the file, line and field

Every JSON file is checked whole, and the first CHECKED_LINES of every
JSON Lines file: their records are made by code from typed columns and
fixed-shape dicts (Arrow types that a test holds equal to the schemas), so
a shape error shows in the first lines, and checking millions of lines one
by one would cost more than the whole parse. The Parquet copy's schema is
compared with PROC_METRICS.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pyarrow.parquet as pq

from tracekit.errors import TracekitError
from tracekit.schemas import validation_errors
from tracekit.trace.records import PROC_METRICS

CHECKED_LINES = 1000
JSON_FILES = ("nodes.json", "links.json", "audit.json")


def _fail(path: Path, where: str, problems: list[str]) -> None:
    raise TracekitError(f"{path.name}{where}: does not match schemas/cctf/{path.stem}: {problems[0]}")


def validate_outputs(cctf_dir: Path) -> None:
    for path in sorted(cctf_dir.glob("*.jsonl")):
        with open(path) as f:
            for line_no, line in enumerate(islice(f, CHECKED_LINES), start=1):
                problems = validation_errors(f"cctf/{path.stem}", json.loads(line))
                if problems:
                    _fail(path, f":{line_no}", problems)
    for name in JSON_FILES:
        path = cctf_dir / name
        problems = validation_errors(f"cctf/{path.stem}", json.loads(path.read_text()))
        if problems:
            _fail(path, "", problems)
    parquet_schema = pq.read_schema(cctf_dir / "proc_metrics.parquet")
    if not parquet_schema.equals(PROC_METRICS):
        raise TracekitError(f"proc_metrics.parquet: schema differs from PROC_METRICS: {parquet_schema}")
