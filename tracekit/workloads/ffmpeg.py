"""The ffmpeg workload: transcoding tasks, one per input video (or drawn from a weighted mix of profiles).

input:  ``workload.ffmpeg`` (schemas/workloads/ffmpeg.schema.json): a folder
        of inputs or clips to generate, transcode settings or a mix
output: TaskSpecs whose argv is the transcode (``-nostdin -y``), their size
        the input's media seconds (ffprobe, on the planning node), their
        output under the worker's outputs folder

The same inputs, mix, total, seed and run give the same tasks. The clips to
generate are made on the nodes in prepare (playbooks/workloads/ffmpeg/
prepare.yml), in a folder named after what they are, so the same clips are
made once and found again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracekit import runfolder
from tracekit.adapters.ffmpeg import probe_media
from tracekit.adapters.ffmpeg_argv import TranscodeSettings, transcode_argv
from tracekit.container import ContainerSpec
from tracekit.errors import ExperimentError, TracekitError, UsageError
from tracekit.taskspec import TaskSpec, worker_path
from tracekit.workloads.base import NodeNeeds, PlanContext, WorkloadKind

MAX_SIDE = 8192  # pixels, of a generated clip or a transcode's output
DEFAULT_INPUTS_ROOT = "/var/lib/tracekit/inputs"  # an inventory's tracekit_inputs_root, when it sets none

# Named transcode profiles for a mix (cost grows down the list).
PROFILES: dict[str, TranscodeSettings] = {
    "360p-ultrafast": TranscodeSettings("-2:360", "ultrafast", 30),
    "480p-veryfast": TranscodeSettings("-2:480", "veryfast", 28),
    "720p-veryfast": TranscodeSettings("-2:720", "veryfast", 28),
    "720p-medium": TranscodeSettings("-2:720", "medium", 23),
    "1080p-veryfast": TranscodeSettings("-2:1080", "veryfast", 23),
}


@dataclass(frozen=True)
class Generate:
    count: int
    durations: tuple[int, ...]
    size: str
    seed: int


@dataclass(frozen=True)
class Transcode:
    scale: str
    preset: str
    crf: int
    threads: int | None


@dataclass(frozen=True)
class FfmpegWorkload:
    inputs: str | None  # a folder of inputs, or
    generate: Generate | None  # clips to generate
    transcode: Transcode
    mix: dict[str, float] | None
    total: int | None
    seed: int
    container: ContainerSpec | None = None


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


def generated_name(generate: Generate) -> str:
    """Folder name of generated clips: the same clips get the same folder on every run."""
    key = json.dumps([generate.count, list(generate.durations), generate.size, generate.seed])
    return f"clips-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def plan_transcodes(
    inputs_dir: Path,
    settings: TranscodeSettings,
    mix: dict[str, float] | None = None,
    total: int | None = None,
    seed: int = 0,
    node_id: str | None = None,
) -> list[TaskSpec]:
    """The transcodes of a folder of inputs; ffprobe runs marked with ``node_id`` (the planning node's)."""
    inputs = list_inputs(inputs_dir)
    if total is not None and total < 1:
        raise UsageError(f"--total {total} must be at least 1")
    rng = random.Random(seed)
    count = total if total is not None else len(inputs)
    env = runfolder.node_environment(node_id) if node_id is not None else None
    probes = {path: _probe(path, env) for path in inputs}
    names = sorted(mix) if mix else []
    tasks = []
    for index in range(count):
        source = inputs[index % len(inputs)] if total is None or not mix else rng.choice(inputs)
        if mix:
            profile = rng.choices(names, weights=[mix[n] for n in names])[0]
            task_settings = dataclasses.replace(PROFILES[profile], threads=settings.threads)
        else:
            profile = f"{settings.scale}-{settings.preset}-crf{settings.crf}"
            task_settings = settings
        task_id = f"t{index:05d}-{source.stem}"
        media_s, probe_error = probes[source]
        output = worker_path("outputs", f"{task_id}.mp4")
        tasks.append(TaskSpec(
            task_id=task_id, argv=tuple(transcode_argv(str(source.resolve()), output, task_settings)),
            profile=profile, size=media_s, unit_ms=1000.0,  # real time until speeds are learned
            inputs=(str(source.resolve()),), outputs=(output,), module="ffmpeg",
            params=(("media_s", media_s),), note=f"input {source.resolve()}: {probe_error}" if probe_error else None,
        ))  # fmt: skip
    return tasks


def _probe(path: Path, env: dict[str, str] | None) -> tuple[float, str | None]:
    """Media duration, or 0 and the reason, e.g. 'not a readable video (...)' (the task still runs and fails visibly)."""
    try:
        return probe_media(path, env)
    except TracekitError as exc:  # no ffprobe
        return 0.0, str(exc)


class Ffmpeg(WorkloadKind):
    name = "ffmpeg"
    describes = "transcoding tasks through the dispatcher"
    has_tasks = True
    task_files = ("prepare",)
    containers = True

    def prepared_from(self, section: dict[str, Any]) -> Any:
        """Its prepare makes the clips (``generate``, or the ``inputs`` folder as given)."""
        return {"inputs": section.get("inputs"), "generate": section.get("generate")}

    def problem(self, section: dict[str, Any]) -> str | None:
        schema = self.schema()["properties"]
        generate = section.get("generate")
        if generate:
            expected = schema["generate"]["properties"]["size"]["x-expected"]
            problem = _side_problem("workload.ffmpeg.generate.size", generate["size"], "x", expected)
            if problem:
                return problem
        expected = schema["transcode"]["properties"]["scale"]["x-expected"]
        problem = _side_problem("workload.ffmpeg.transcode.scale", section["transcode"]["scale"], ":", expected)
        if problem:
            return problem
        try:
            self.container(section)
        except ExperimentError as exc:
            return str(exc)
        mix = section.get("mix")
        if mix and section.get("total") is None:
            return "workload.ffmpeg.total: missing; a mix needs the number of tasks to draw"
        if mix and sum(mix.values()) <= 0:
            return "workload.ffmpeg.mix: every weight is 0; give at least one profile a weight above 0"
        return None

    def spec(self, section: dict[str, Any]) -> FfmpegWorkload:
        generate = section.get("generate")
        return FfmpegWorkload(
            inputs=section.get("inputs"),
            generate=Generate(generate["count"], tuple(generate["durations"]), generate["size"], generate["seed"])
            if generate else None,
            transcode=Transcode(**section["transcode"]),
            mix=dict(section["mix"]) if section.get("mix") else None,
            total=section.get("total"),
            seed=section.get("seed", 0),
            container=self.container(section),
        )  # fmt: skip

    def check_here(self, spec: FfmpegWorkload, inventory: Any, source: str) -> None:
        """A folder of inputs must hold files where the dispatcher reads it: checked when the controller runs
        on this machine (else the dispatcher refuses it there, in the run phase)."""
        from tracekit.experiment.render import THIS_MACHINE, machine_of

        controller = inventory.controller
        if spec.inputs is None or machine_of(controller, inventory.hostvars[controller]) != THIS_MACHINE:
            return
        folder, at = Path(spec.inputs), f"{source}: workload.ffmpeg.inputs"
        if not folder.is_dir():
            raise ExperimentError(f"{at}: {folder} is not a folder on this machine, where the controller "
                                  f"({controller}) reads it; make it and put the input videos in it, or use "
                                  "workload.ffmpeg.generate")  # fmt: skip
        try:
            files = input_files(folder)
        except OSError as exc:
            raise ExperimentError(f"{at}: cannot read {folder} ({exc.strerror}); make it readable") from None
        if not files:
            raise ExperimentError(f"{at}: {folder} holds no files (hidden ones aside); put the input videos in it "
                                  f"(e.g. tracekit inputs generate -o {folder}) or use workload.ffmpeg.generate")  # fmt: skip

    def dispatch_section(self, section: dict[str, Any], spec: FfmpegWorkload, inventory: Any) -> dict[str, Any]:
        """Generated clips are planned from their folder on the controller (the same path on every node)."""
        if spec.generate is None:
            return section
        root = inventory.hostvars[inventory.controller].get("tracekit_inputs_root") or DEFAULT_INPUTS_ROOT
        planned = {key: value for key, value in section.items() if key != "generate"}
        return {**planned, "inputs": f"{root}/{generated_name(spec.generate)}"}

    def tasks(self, spec: FfmpegWorkload, context: PlanContext) -> list[TaskSpec]:
        if spec.inputs is None:
            raise UsageError("the ffmpeg workload is planned from a folder of inputs (dispatch_section gives it)")
        folder = Path(spec.inputs)
        transcode = spec.transcode
        tasks = plan_transcodes(folder, TranscodeSettings(transcode.scale, transcode.preset, transcode.crf, transcode.threads),
                                spec.mix, spec.total, spec.seed, context.node_id)  # fmt: skip
        if spec.container is not None:
            tasks = [dataclasses.replace(task, container=spec.container) for task in tasks]
        return tasks

    def task_count(self, spec: FfmpegWorkload) -> int | None:
        if spec.total is not None:
            return spec.total
        if spec.generate is not None:
            return spec.generate.count
        folder = Path(spec.inputs or "")
        return len(input_files(folder)) if folder.is_dir() else None

    def node_needs(self, spec: FfmpegWorkload, source: str) -> NodeNeeds:
        return NodeNeeds(debian_packages=("ffmpeg", *(spec.container.debian_packages() if spec.container else ())))

    def variables(self, spec: FfmpegWorkload, inventory: Any, checkout: Path, source: str) -> dict[str, Any]:
        if spec.inputs is not None and not Path(spec.inputs).is_absolute():
            raise UsageError(f"{source}: workload.ffmpeg.inputs: {spec.inputs!r} must be an absolute path "
                             "(the same folder on every node)")  # fmt: skip
        return {"generated_name": generated_name(spec.generate) if spec.generate else None,
                "default_inputs_root": DEFAULT_INPUTS_ROOT}  # fmt: skip

    def plan_lines(self, spec: FfmpegWorkload, inventory: Any) -> list[str]:
        tasks = self.task_count(spec)
        source = (
            f"{spec.generate.count} generated clips ({spec.generate.size}, durations "
            f"{','.join(map(str, spec.generate.durations))} s)" if spec.generate else f"inputs from {spec.inputs}"
        )  # fmt: skip
        return [
            f"workload: {tasks if tasks is not None else 'one per input'} tasks from {source}, "
            f"transcode {spec.transcode.scale} {spec.transcode.preset} crf {spec.transcode.crf}"
            + (f", mix {spec.mix}" if spec.mix else "")
            + (f"; {spec.container.describe()}" if spec.container else ""),
        ]


def _side_problem(key: str, text: str, separator: str, expected: str) -> str | None:
    # The pattern made sure of the shape: whole numbers (or -N, 0 in a scale) of up to four digits.
    if any(int(side) > MAX_SIDE for side in text.split(separator)):
        return f"{key}: {text!r} is not {expected}"
    return None


KIND = Ffmpeg()
