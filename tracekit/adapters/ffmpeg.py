"""ffmpeg as a traced task: ``input file -> transcoded output + one event``.

Also generates test clips from ffmpeg's built-in lavfi sources (nothing is
ever downloaded) and reads clip durations with ffprobe.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tracekit.adapters.ffmpeg_argv import IoPaths, TranscodeSettings, transcode_argv
from tracekit.errors import CommandNotFound, TracekitError, UsageError
from tracekit.invocation import Invocation, run_invocation

INSTALL_HINT = "install it (apt-get install -y ffmpeg, or run 'make deps')"


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise CommandNotFound(f"{name} is not installed or not on PATH; {INSTALL_HINT}")
    return path


def transcode(
    input_path: str | Path,
    output_path: str | Path,
    settings: TranscodeSettings,
    run_id: str,
    logs_dir: str | Path | None = None,
    **labels: object,
) -> dict:
    """Transcode one file through ``wrap``; return the invocation event.

    ``labels`` go to ``Invocation`` (task_id, trace_id, ts_enqueue, node_id,
    attempt, extra).
    """
    input_path, output_path = str(input_path), str(output_path)
    if not os.path.isfile(input_path):
        raise UsageError(f"input {input_path!r} does not exist or is not a file")
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    argv = transcode_argv(input_path, output_path, settings, ffmpeg=require_binary("ffmpeg"))
    invocation = Invocation(
        argv=argv,
        run_id=run_id,
        logs_dir=logs_dir,
        module="ffmpeg",
        io=IoPaths((input_path,), (output_path,)),
        **labels,  # type: ignore[arg-type]
    )
    return run_invocation(invocation)


def probe_media(path: str | Path, env: dict[str, str] | None = None) -> tuple[float, str | None]:
    """(container duration in seconds, None), or (0.0, why ``path`` is not a readable video).

    ffprobe runs with ``env`` if given; CommandNotFound when it is not installed.
    """
    ffprobe = require_binary("ffprobe")
    result = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        return float(json.loads(result.stdout)["format"]["duration"]), None
    except (ValueError, KeyError, TypeError):
        said = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no duration"
        # ffprobe starts its line with the file name; the caller names the file.
        said = said.removeprefix(f"{path}: ")
        return 0.0, f"not a readable video (ffprobe: {said})"


def probe_duration_s(path: str | Path, env: dict[str, str] | None = None) -> float:
    """Container duration of a media file in seconds (ffprobe, with ``env`` if given)."""
    duration, problem = probe_media(path, env)
    if problem is not None:
        raise TracekitError(f"{path}: {problem}")
    return duration


# -- test clips ---------------------------------------------------------------

# lavfi sources with different content, hence different encoding cost.
_SOURCES = {
    "testsrc2": "testsrc2=size={size}:rate={fps}",
    "mandelbrot": "mandelbrot=size={size}:rate={fps}",
    "life": "life=size={size}:rate={fps}:mold=10:ratio=0.1:life_color=#00ff00:death_color=#aa0000",
    "smptehdbars": "smptehdbars=size={size}:rate={fps}",
    "noise": "color=c=gray:size={size}:rate={fps},noise=alls=60:allf=t+u",
    "cellauto": "cellauto=size={size}:rate={fps}:rule=110",
}
SOURCE_NAMES = tuple(_SOURCES)


@dataclass(frozen=True)
class ClipSpec:
    index: int
    source: str
    duration_s: int
    size: str
    fps: int
    tone_hz: int

    @property
    def file_name(self) -> str:
        return f"clip_{self.index:03d}_{self.source}_{self.duration_s}s_{self.size}.mp4"


def plan_clips(count: int, durations_s: list[int], size: str, seed: int, fps: int = 25) -> list[ClipSpec]:
    """Which clips to make: deterministic for a given seed."""
    if count < 1:
        raise UsageError(f"--count {count} must be at least 1")
    if not durations_s or any(d <= 0 for d in durations_s):
        raise UsageError(f"--durations {durations_s} must be positive seconds, e.g. 5,10,20")
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise UsageError(f"--size {size!r} must be WIDTHxHEIGHT, e.g. 1280x720")
    rng = random.Random(seed)
    return [
        ClipSpec(
            index=i,
            source=SOURCE_NAMES[(i + rng.randrange(len(SOURCE_NAMES))) % len(SOURCE_NAMES)],
            duration_s=rng.choice(durations_s),
            size=size,
            fps=fps,
            tone_hz=rng.randrange(220, 880),
        )
        for i in range(count)
    ]


def clip_argv(spec: ClipSpec, output: Path, ffmpeg: str = "ffmpeg") -> list[str]:
    video = _SOURCES[spec.source].format(size=spec.size, fps=spec.fps)
    return [
        ffmpeg, "-nostdin", "-y", "-hide_banner", "-loglevel", "error",
        "-f", "lavfi", "-i", video,
        "-f", "lavfi", "-i", f"sine=frequency={spec.tone_hz}:sample_rate=48000",
        "-t", str(spec.duration_s),
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-shortest", str(output),
    ]  # fmt: skip


def generate_clips(
    out_dir: str | Path, count: int, durations_s: list[int], size: str = "1280x720", seed: int = 0, fps: int = 25
) -> list[Path]:
    """Make ``count`` clips in ``out_dir``; clips already there are kept."""
    ffmpeg = require_binary("ffmpeg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for spec in plan_clips(count, durations_s, size, seed, fps):
        target = out / spec.file_name
        if not (target.is_file() and target.stat().st_size > 0):
            partial = out / f".partial-{spec.file_name}"  # never leave a half clip under the real name
            result = subprocess.run(clip_argv(spec, partial, ffmpeg), capture_output=True, text=True)
            if result.returncode != 0:
                partial.unlink(missing_ok=True)
                raise TracekitError(f"ffmpeg could not make {target}: {result.stderr.strip()[-300:]}")
            os.replace(partial, target)
        made.append(target)
    return made
