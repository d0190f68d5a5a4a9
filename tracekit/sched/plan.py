"""What to run: input files (and a profile mix) -> planned transcode tasks.

input:  an inputs folder, transcode settings or a weighted mix of profiles,
        an optional total and a seed
output: ``Planned`` tasks with their expected media duration (ffprobe)

The same inputs, mix, total, seed and run id always give the same plan,
trace ids included (derived from the run id and the task id, so two runs
never share one). Profiles of a mix keep the --threads asked for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from tracekit import runfolder
from tracekit.adapters.ffmpeg import probe_media
from tracekit.adapters.ffmpeg_argv import TranscodeSettings
from tracekit.errors import TracekitError, UsageError
from tracekit.sched.policies import PlannedTask

# Named transcode profiles for --mix (cost grows down the list).
PROFILES: dict[str, TranscodeSettings] = {
    "360p-ultrafast": TranscodeSettings("-2:360", "ultrafast", 30),
    "480p-veryfast": TranscodeSettings("-2:480", "veryfast", 28),
    "720p-veryfast": TranscodeSettings("-2:720", "veryfast", 28),
    "720p-medium": TranscodeSettings("-2:720", "medium", 23),
    "1080p-veryfast": TranscodeSettings("-2:1080", "veryfast", 23),
}


@dataclass(frozen=True)
class Planned:
    task: PlannedTask
    input: Path
    output_name: str
    settings: TranscodeSettings
    trace_id: str
    probe_error: str | None = None  # why ffprobe could not read the input (it is named apart): expected duration 0


def trace_id_of(run_id: str, task_id: str) -> str:
    """The task's W3C trace id (32 hex digits): the same for the same run and task, different across runs."""
    return hashlib.sha256(f"tracekit/{run_id}/{task_id}".encode()).hexdigest()[:32]


def _probe(path: Path, env: dict[str, str] | None) -> tuple[float, str | None]:
    """Media duration, or 0 and the reason, e.g. 'not a readable video (...)' (the task still runs and fails visibly)."""
    try:
        return probe_media(path, env)
    except TracekitError as exc:  # no ffprobe
        return 0.0, str(exc)


def parse_mix(text: str) -> dict[str, float]:
    """``"720p-veryfast=3,360p-ultrafast=1"`` -> weights; names must be profiles."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        if name not in PROFILES:
            raise UsageError(f"--mix: unknown profile {name!r}: use one of {', '.join(PROFILES)}")
        try:
            mix[name] = float(weight) if weight else 1.0
        except ValueError:
            raise UsageError(f"--mix: weight of {name!r} must be a number, e.g. {name}=2") from None
        if mix[name] < 0:
            raise UsageError(f"--mix: weight of {name!r} must not be negative")
    if not mix or sum(mix.values()) <= 0:
        raise UsageError(f"--mix {text!r} needs at least one profile with a positive weight, e.g. 720p-veryfast=1")
    return mix


def input_files(inputs_dir: Path) -> list[Path]:
    """The files a folder of inputs gives tasks to: every file but hidden ones, in name order."""
    return sorted(p for p in inputs_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def list_inputs(inputs_dir: Path) -> list[Path]:
    if not inputs_dir.is_dir():
        raise UsageError(f"--inputs {inputs_dir} is not a folder")
    files = input_files(inputs_dir)
    if not files:
        raise UsageError(f"--inputs {inputs_dir} holds no files; make some: tracekit inputs generate -o {inputs_dir}")
    return files


def plan_tasks(
    inputs_dir: Path,
    settings: TranscodeSettings,
    mix: dict[str, float] | None = None,
    total: int | None = None,
    seed: int = 0,
    node_id: str | None = None,
    run_id: str = "",
) -> list[Planned]:
    """The tasks; ffprobe runs marked with ``node_id`` (the controller's), if given."""
    inputs = list_inputs(inputs_dir)
    if total is not None and total < 1:
        raise UsageError(f"--total {total} must be at least 1")
    rng = random.Random(seed)
    count = total if total is not None else len(inputs)
    env = runfolder.node_environment(node_id) if node_id is not None else None
    probes = {path: _probe(path, env) for path in inputs}
    names = sorted(mix) if mix else []
    planned = []
    for index in range(count):
        source = inputs[index % len(inputs)] if total is None or not mix else rng.choice(inputs)
        if mix:
            profile = rng.choices(names, weights=[mix[n] for n in names])[0]
            task_settings = dataclasses.replace(PROFILES[profile], threads=settings.threads)
        else:
            profile = f"{settings.scale}-{settings.preset}-crf{settings.crf}"
            task_settings = settings
        task_id = f"t{index:05d}-{source.stem}"
        planned.append(
            Planned(
                task=PlannedTask(task_id=task_id, profile=profile, media_s=probes[source][0]),
                input=source,
                output_name=f"{task_id}.mp4",
                settings=task_settings,
                trace_id=trace_id_of(run_id, task_id),
                probe_error=probes[source][1],
            )
        )
    return planned
