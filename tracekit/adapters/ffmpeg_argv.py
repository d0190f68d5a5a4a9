"""ffmpeg command lines, as pure functions: settings -> argv, argv -> file paths."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from tracekit.errors import UsageError
from tracekit.invocation import IoPaths

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast",
    "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip
_SCALE_RE = re.compile(r"^-?\d+:-?\d+$")


@dataclass(frozen=True)
class TranscodeSettings:
    """The seed's transcode knobs; validated on creation."""

    scale: str = "1280:720"
    preset: str = "veryfast"
    crf: int = 28
    threads: int | None = None  # None: ffmpeg decides

    def __post_init__(self) -> None:
        if not _SCALE_RE.match(self.scale):
            raise UsageError(f"--scale {self.scale!r} must be WIDTH:HEIGHT, e.g. 1280:720 (-2 keeps the aspect)")
        if self.preset not in X264_PRESETS:
            raise UsageError(f"--preset {self.preset!r} is not one of {', '.join(X264_PRESETS)}")
        if not 0 <= self.crf <= 51:
            raise UsageError(f"--crf {self.crf} is out of range: use 0 (lossless) to 51")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads} must be at least 1")


def transcode_argv(input_path: str, output_path: str, settings: TranscodeSettings, ffmpeg: str = "ffmpeg") -> list[str]:
    """The transcode command. Always -nostdin -y: ffmpeg must never stop to ask."""
    argv = [ffmpeg, "-nostdin", "-y", "-hide_banner", "-loglevel", "error", "-i", input_path]
    argv += ["-vf", f"scale={settings.scale}", "-c:v", "libx264", "-preset", settings.preset]
    argv += ["-crf", str(settings.crf), "-c:a", "copy"]
    if settings.threads is not None:
        argv += ["-threads", str(settings.threads)]
    argv.append(output_path)
    return argv


def guess_io_paths(argv: list[str]) -> IoPaths:
    """Input and output files of an ffmpeg command line (empty for other commands).

    Inputs follow ``-i``; the output is the last argument (ffmpeg's syntax puts
    the output file last). Good enough for the transcodes Tracekit runs; pass
    IoPaths explicitly for anything fancier.
    """
    if not argv or os.path.basename(argv[0]) != "ffmpeg":
        return IoPaths()
    inputs = tuple(argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-i")
    last = argv[-1]
    outputs = (last,) if len(argv) > 1 and not last.startswith("-") and last not in inputs else ()
    return IoPaths(inputs, outputs)
