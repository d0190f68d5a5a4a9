"""Check parse's output against the JSON Schemas in ``schemas/cctf/``.

input:  a cctf/ folder
output: nothing, or TracekitError naming the file, line and field

Small files are checked record by record. The per-sample files hold
millions of lines that Arrow formats from typed columns (whose types a test
holds equal to the schemas), so their first lines are checked, plus the
Parquet copy's schema.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pyarrow.parquet as pq

from tracekit.errors import TracekitError
from tracekit.schemas import validation_errors
from tracekit.trace.records import PROC_METRICS

PER_SAMPLE_FILES = ("proc_metrics.jsonl", "proc_cpu.jsonl", "proc_rss.jsonl")
CHECKED_LINES_OF_PER_SAMPLE_FILES = 1000
JSON_FILES = ("nodes.json", "links.json", "audit.json")


def _fail(path: Path, where: str, problems: list[str]) -> None:
    raise TracekitError(f"{path.name}{where}: does not match schemas/cctf/{path.stem}: {problems[0]}")


def validate_outputs(cctf_dir: Path) -> None:
    for path in sorted(cctf_dir.glob("*.jsonl")):
        with open(path) as f:
            lines = islice(f, CHECKED_LINES_OF_PER_SAMPLE_FILES) if path.name in PER_SAMPLE_FILES else f
            for line_no, line in enumerate(lines, start=1):
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
