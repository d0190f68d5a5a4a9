import pytest

from tracekit.adapters.ffmpeg_argv import IoPaths, TranscodeSettings, guess_io_paths, transcode_argv
from tracekit.errors import UsageError


def test_transcode_never_prompts():
    argv = transcode_argv("in.mp4", "out.mp4", TranscodeSettings())
    assert argv[:3] == ["ffmpeg", "-nostdin", "-y"]
    assert argv[-1] == "out.mp4" and argv[argv.index("-i") + 1] == "in.mp4"
    assert "scale=1280:720" in argv and argv[argv.index("-crf") + 1] == "28"
    assert argv[argv.index("-preset") + 1] == "veryfast"
    threaded = transcode_argv("a", "b", TranscodeSettings("-2:360", "fast", 23, threads=2))
    assert threaded[threaded.index("-threads") + 1] == "2" and "scale=-2:360" in threaded


@pytest.mark.parametrize(
    "kwargs", [{"scale": "1280x720"}, {"preset": "warp"}, {"crf": 52}, {"crf": -1}, {"threads": 0}]
)
def test_bad_settings(kwargs):
    with pytest.raises(UsageError):
        TranscodeSettings(**kwargs)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["ffmpeg", "-y", "-i", "a.mp4", "-c:v", "libx264", "b.mp4"], IoPaths(("a.mp4",), ("b.mp4",))),
        (["/usr/bin/ffmpeg", "-i", "a", "-i", "b", "-filter_complex", "hstack", "c"], IoPaths(("a", "b"), ("c",))),
        (["ffmpeg", "-i", "a.mp4", "-f", "null", "-"], IoPaths(("a.mp4",), ())),
        (["sleep", "1"], IoPaths()),
        (["ffmpeg"], IoPaths()),
    ],
)
def test_guess_io_paths(argv, expected):
    assert guess_io_paths(argv) == expected
