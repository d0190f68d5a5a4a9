"""The headline figures a sweep compares, each read from a run's results (tracekit.experiment.results).

input:  a run folder: its results.json, or its files where results.json is missing or older than the
        figures (a run by hand, an earlier version of Tracekit)
output: figure name -> value (None: the run did not measure it); the catalogue ``FIGURES`` (name,
        unit, what it is) in the order tables and pages show them
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracekit.experiment.results import RESULTS, headline, read_json_object


@dataclass(frozen=True)
class Figure:
    name: str  # the summary's `figure` column
    unit: str
    title: str  # for a person: a plot's axis, a table's heading
    read: Callable[[dict[str, Any]], Any]  # the value in a run's headline figures


def _at(*keys: str) -> Callable[[dict[str, Any]], Any]:
    def read(figures: dict[str, Any]) -> Any:
        value: Any = figures
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    return read


FIGURES = (
    Figure("makespan_s", "s", "makespan", _at("tasks", "makespan_s")),
    Figure("task_duration_p50_s", "s", "done tasks' duration, p50", _at("tasks", "duration_s", "p50")),
    Figure("task_duration_p99_s", "s", "done tasks' duration, p99", _at("tasks", "duration_s", "p99")),
    Figure("busy_balance", "busiest / mean", "busy-time balance across workers", _at("tasks", "busy_balance")),
    Figure("tasks_failed", "tasks", "tasks failed", _at("tasks", "failed")),
    Figure("http_rate_per_s", "requests/s", "HTTP achieved sending rate", _at("requests", "rate_per_s")),
    Figure("http_success_ratio", "ratio", "HTTP success ratio", _at("requests", "success_ratio")),
    Figure("http_latency_p50_ms", "ms", "HTTP latency p50 (from intended send)", _at("requests", "latency_ms", "p50")),
    Figure("http_latency_p99_ms", "ms", "HTTP latency p99 (from intended send)", _at("requests", "latency_ms", "p99")),
    Figure("http_latency_p99.9_ms", "ms", "HTTP latency p99.9 (from intended send)",
           _at("requests", "latency_ms", "p99.9")),  # fmt: skip
    Figure("collector_cpu_pct", "% of a core", "collector CPU per node", _at("collectors", "cpu_pct_of_core")),
    Figure("contended_task_share", "share of task time", "tasks' time on CPUs contended by other work",
           _at("contended_task_share")),  # fmt: skip
)
BY_NAME = {figure.name: figure for figure in FIGURES}


# The parts of results.json the figures read; one written by an earlier version lacks the later ones.
HEADLINE_PARTS = frozenset({"tasks", "requests", "contended_task_share", "collectors"})


def run_headline(run_dir: Path) -> dict[str, Any]:
    """The run's headline figures: its results.json when it has every part read here, else made from
    its files now (by the function tracekit-run writes results.json with)."""
    written = read_json_object(run_dir / RESULTS)
    if written is not None and HEADLINE_PARTS <= set(written):
        return written
    return headline(run_dir)


def run_figures(run_dir: Path) -> dict[str, float | None]:
    """figure name -> the run's value (None where it did not measure it)."""
    figures = run_headline(run_dir)
    return {figure.name: figure.read(figures) for figure in FIGURES}
