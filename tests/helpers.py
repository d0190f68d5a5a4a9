"""Small helpers for tests (imported as tests.helpers)."""

from __future__ import annotations

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


def read_proc_csv(path: Path) -> list[dict]:
    """proc.csv rows as dicts of ints (None for empty fields)."""
    lines = path.read_text().splitlines()
    if not lines:
        return []
    header = lines[0].split(",")
    return [
        {name: (int(value) if value else None) for name, value in zip(header, line.split(","))}
        for line in lines[1:]
    ]
