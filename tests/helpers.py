"""Small helpers for tests (imported as tests.helpers)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def named_binary(tmp_path: Path, name: str, target: str = "sleep") -> str:
    """A symlink to ``target`` named ``name``: its processes have comm == name."""
    link = tmp_path / "bin" / name
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(shutil.which(target))
    return str(link)


def wait_until(predicate, timeout_s: float = 15.0, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (never asserts on time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def tracekit_cmd(*args: str) -> list[str]:
    """argv of the installed ``tracekit`` console script (a real subprocess)."""
    return [str(VENV_BIN / "tracekit"), *args]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def csv_records(lines: list[str]) -> list[dict]:
    """Rows of a raw CSV file (header first) as dicts: ints, floats and strings as written, None for empty fields."""
    if not lines:
        return []
    rows = list(csv.reader(lines))

    def value(text: str):
        if text == "":
            return None
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    return [{name: value(text) for name, text in zip(rows[0], row)} for row in rows[1:]]


def read_csv(path: Path) -> list[dict]:
    """A raw CSV file of the collector (proc.csv, host.csv, ...) as dicts."""
    return csv_records(path.read_text().splitlines())


def read_proc_csv(path: Path) -> list[dict]:
    """proc.csv rows as dicts of ints (None for empty fields)."""
    return read_csv(path)
