"""Shared fixtures: a private logs folder per test, and cleanup of every
collector and child process a test starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def logs_dir(tmp_path, monkeypatch) -> Path:
    """A fresh logs folder, also set as TRACEKIT_LOGS_DIR for subprocesses."""
    path = tmp_path / "logs"
    path.mkdir()
    monkeypatch.setenv("TRACEKIT_LOGS_DIR", str(path))
    monkeypatch.delenv("TRACEKIT_RUN_ID", raising=False)
    yield path
    _stop_collectors(path)


def _stop_collectors(path: Path) -> None:
    """Kill any collector still holding a pidfile below ``path``."""
    for pidfile in path.glob("*/collector.pid"):
        try:
            pid = int(pidfile.read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid > 0:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def children():
    """Start helper processes; all are killed and reaped after the test."""
    started: list[subprocess.Popen] = []

    def start(argv, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(argv, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        try:
            descendants = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        for child in descendants:
            try:
                child.kill()
            except psutil.Error:
                pass
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
