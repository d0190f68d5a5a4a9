"""What tracekit-run shows while it works: a live display on a terminal, timestamped lines otherwise.

input:  calls from the runner (phase started/finished, Ansible events per
        host, task counts during dispatch)
output: text on stderr; nothing else depends on it

The live display (rich) redraws phases with state and duration, each host's
current task, and a done/total bar with rate and ETA during dispatch. Plain
mode prints one line per change, fit for CI logs and files.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

STATE_STYLE = {
    "pending": "dim",
    "running": "bold cyan",
    "succeeded": "green",
    "skipped": "dim",
    "failed": "bold red",
    "interrupted": "bold yellow",
    "ok": "green",
    "changed": "yellow",
    "unreachable": "bold red",
}


@dataclass
class _Phase:
    state: str = "pending"
    started: float | None = None
    ended: float | None = None

    def duration(self) -> str:
        if self.started is None:
            return ""
        return f"{(self.ended or time.monotonic()) - self.started:.1f} s"


@dataclass
class _Tasks:
    done: int = 0
    failed: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)

    def describe(self) -> str:
        finished = self.done + self.failed
        elapsed = time.monotonic() - self.started
        rate = finished / elapsed if elapsed > 0 else 0.0
        text = f"{finished}/{self.total if self.total is not None else '?'} tasks ({self.failed} failed), {rate:.2f}/s"
        if self.total and rate > 0 and finished < self.total:
            text += f", ETA {(self.total - finished) / rate:.0f} s"
        return text


class Progress:
    """Plain mode: one timestamped line per change."""

    def __init__(self, phases: tuple[str, ...], stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.phases = {p: _Phase() for p in phases}
        self.hosts: dict[str, tuple[str, str]] = {}  # host -> (task, state)
        self.tasks: _Tasks | None = None
        self.lock = threading.Lock()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def say(self, text: str) -> None:
        with self.lock:
            try:
                self.stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
                self.stream.flush()
            except OSError:  # the terminal or pipe is gone (a hangup): the run goes on, its cleanup too
                pass

    def _note(self, text: str, important: bool) -> None:
        """A change: plain mode prints every one; the live display only what it cannot show."""
        self.say(text)

    def phase_started(self, phase: str) -> None:
        self.phases[phase] = _Phase("running", time.monotonic())
        self.hosts.clear()
        if phase == "run":
            self.tasks = _Tasks()  # the rate counts from the start of dispatch
        self._note(f"{phase}: started", important=False)

    def phase_finished(self, phase: str, state: str, error: str | None = None) -> None:
        record = self.phases[phase]
        record.state, record.ended = state, time.monotonic()
        if record.started is None:
            record.started = record.ended
        self._note(f"{phase}: {state} ({record.duration()})" + (f": {error}" if error else ""), important=bool(error))
        if phase == "run":
            self.tasks = None

    def host_event(self, host: str, task: str, state: str, detail: str | None = None) -> None:
        self.hosts[host] = (task, state)
        if state in ("failed", "unreachable"):
            self._note(f"  {host}: {state}: {task}" + (f": {detail}" if detail else ""), important=True)

    def task_counts(self, done: int, failed: int, total: int | None) -> None:
        if self.tasks is None:
            return
        changed = (done, failed) != (self.tasks.done, self.tasks.failed)
        self.tasks.done, self.tasks.failed, self.tasks.total = done, failed, total
        if changed:
            self._note(f"  dispatch: {self.tasks.describe()}", important=False)


class LiveProgress(Progress):
    """Terminal mode: a table redrawn in place."""

    def __init__(self, phases: tuple[str, ...], stream: TextIO | None = None):
        super().__init__(phases, stream)
        self.console = Console(file=self.stream)
        self.live = Live(console=self.console, refresh_per_second=4, get_renderable=self._render, transient=False)

    def __enter__(self) -> LiveProgress:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.live.stop()
        except OSError:
            pass

    def say(self, text: str) -> None:
        try:
            self.console.print(Text(f"{time.strftime('%H:%M:%S')} {text}"))
        except OSError:  # the terminal is gone (a hangup): the run goes on, its cleanup too
            pass

    def _note(self, text: str, important: bool) -> None:
        if important:
            self.say(text)

    def _render(self) -> Group:
        phases = Table.grid(padding=(0, 2))
        for name, record in self.phases.items():
            phases.add_row(name, Text(record.state, style=STATE_STYLE.get(record.state, "")), record.duration())
        parts: list = [phases]
        if self.hosts:
            hosts = Table.grid(padding=(0, 2))
            for host, (task, state) in sorted(self.hosts.items()):
                hosts.add_row(f"  {host}", Text(state, style=STATE_STYLE.get(state, "")), task[:70])
            parts.append(hosts)
        if self.tasks is not None:
            total, finished = self.tasks.total, self.tasks.done + self.tasks.failed
            width = 30
            filled = int(width * finished / total) if total else 0
            parts.append(Text(f"  [{'#' * filled}{'.' * (width - filled)}] {self.tasks.describe()}"))
        return Group(*parts)


def make_progress(phases: tuple[str, ...], verbose: bool, stream: TextIO | None = None) -> Progress:
    stream = stream or sys.stderr
    if not verbose and stream.isatty():
        return LiveProgress(phases, stream)
    return Progress(phases, stream)
