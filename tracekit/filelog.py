"""Loggers that write a process's log into its run folder (and stderr).

A logger is made once per file (``logging`` keeps it by name); ``close_file_logger``
closes its file when its owner is done with it, so that a process that runs
several (the tests, a worker per run) does not keep every file open.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def file_logger(path: Path, to_stderr: bool = True, stderr_level: int = logging.INFO) -> logging.Logger:
    """A logger writing timestamped lines to ``path`` (and those of ``stderr_level`` or worse to stderr), not to the root logger."""
    logger = logging.getLogger(f"tracekit.{path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
        handlers: list[logging.Handler] = [logging.FileHandler(path)]
        if to_stderr:
            stderr = logging.StreamHandler(sys.stderr)
            stderr.setLevel(stderr_level)
            handlers.append(stderr)
        for handler in handlers:
            handler.setFormatter(formatter)
            logger.addHandler(handler)
    return logger


def close_file_logger(logger: logging.Logger) -> None:
    """Close the logger's files; a later ``file_logger`` of the same path opens them again."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
