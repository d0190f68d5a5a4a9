"""A task as the scheduler places it and a worker runs it: the contract between workload kinds and sched/.

input:  what a workload kind plans (tracekit.workloads)
output: ``TaskSpec``s: argv, environment, working folder, time-out, files
        read and written, profile and size for the placement policies

Nothing here is kind-specific: the dispatcher places TaskSpecs and the
workers run them, whatever made them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tracekit.container import ContainerSpec
from tracekit.errors import ExperimentError

# Placeholders a worker fills in with its own node's paths (in a TaskSpec's argv, env, cwd, inputs,
# outputs). Planning writes them as NUL-delimited marks: no text of the experiment can hold a NUL (an
# argv element cannot), so no value is ever taken for one.
WORKER_PLACEHOLDERS = {
    "outputs": "the node's outputs folder of the run (what tasks write)",
    "files": "the node's copy of the workload's files folder",
}


def worker_path(placeholder: str, *rest: str) -> str:
    """A path below a worker's folder, as a task carries it: filled in on the node that runs it."""
    if placeholder not in WORKER_PLACEHOLDERS:
        raise ValueError(f"no worker placeholder {placeholder!r}")
    return "/".join([f"\0{placeholder}\0", *rest])


def fill_in(text: str, folders: dict[str, str]) -> str:
    """``text`` with each worker placeholder replaced by the node's folder."""
    if "\0" not in text:
        return text
    for placeholder, folder in folders.items():
        text = text.replace(f"\0{placeholder}\0", folder)
    return text


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render(template: str, values: dict[str, str], where: str) -> str:
    """``template`` with each ``{name}`` replaced by its value as plain text (never read again).

    ``{{`` and ``}}`` are literal braces; braces around anything but a name
    stay as they are. A name not in ``values`` is an ExperimentError naming
    ``where`` and the names known there.
    """

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text in ("{{", "}}"):
            return text[0]
        name = match.group(1)
        if name not in values:
            known = ", ".join(f"{{{n}}}" for n in values) or "none"
            raise ExperimentError(f"{where}: unknown placeholder {{{name}}}; known here: {known} "
                                  "(write {{ and }} for literal braces)")  # fmt: skip
        return values[name]

    return _PLACEHOLDER.sub(replace, template)


def placeholders(template: str) -> set[str]:
    """The names ``render`` would replace in ``template``."""
    return {m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)}


@dataclass(frozen=True)
class TaskSpec:
    """One task, as the dispatcher places it and a worker runs it: nothing in it is kind-specific.

    ``size`` is the task's amount of work in the kind's unit (media seconds
    for ffmpeg, expected milliseconds when given, else 1), ``unit_ms`` the
    prior guess of milliseconds per unit; the placement policies learn the
    real rate per ``profile`` from completions.
    """

    task_id: str
    argv: tuple[str, ...]
    profile: str
    size: float = 1.0
    unit_ms: float = 1000.0
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    timeout_s: float | None = None
    inputs: tuple[str, ...] = ()  # files it reads: must exist when it starts; their sizes are its bytes in
    outputs: tuple[str, ...] = ()  # files it writes: their sizes are its bytes out
    module: str = "task"  # the events file it lands in (events.<module>.jsonl) and its module in the trace
    params: tuple[tuple[str, Any], ...] = ()  # what it was made from (e.g. the parameter values), for the trace
    note: str | None = None  # something its kind knows before it runs (e.g. an input ffprobe cannot read)
    container: ContainerSpec | None = None  # runs in a container (tracekit.container), else on the host

    @property
    def expected_ms(self) -> float:
        return self.size * self.unit_ms


