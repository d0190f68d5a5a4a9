"""Real ffmpeg: clip generation from lavfi sources, traced transcodes, and
the collector following ffmpeg by name."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import followed_processes, read_jsonl, read_proc_csv, tracekit_cmd
from tracekit import cli
from tracekit.adapters.ffmpeg import SOURCE_NAMES, generate_clips, plan_clips, probe_duration_s
from tracekit.collect import daemon
from tracekit.collect.daemon import CollectorConfig


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    return generate_clips(out, count=2, durations_s=[1, 2], size="320x180", seed=3)


def test_generated_clips_are_real_video(clips):
    assert len(clips) == 2
    for clip, spec in zip(clips, plan_clips(2, [1, 2], "320x180", 3)):
        assert clip.name == spec.file_name
        assert abs(probe_duration_s(clip) - spec.duration_s) < 0.2
        streams = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height", "-of", "json", str(clip)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        kinds = {s["codec_type"]: s for s in json.loads(streams)["streams"]}
        assert kinds["video"]["width"] == 320 and "audio" in kinds


def test_clip_plan_is_deterministic_and_varied():
    plan = plan_clips(12, [5, 10, 20], "1280x720", seed=1)
    assert plan == plan_clips(12, [5, 10, 20], "1280x720", seed=1)
    assert plan != plan_clips(12, [5, 10, 20], "1280x720", seed=2)
    assert len({spec.source for spec in plan}) >= 3
    assert {spec.source for spec in plan} <= set(SOURCE_NAMES)


def test_generate_keeps_existing_clips(clips):
    before = [c.stat().st_mtime_ns for c in clips]
    again = generate_clips(clips[0].parent, count=2, durations_s=[1, 2], size="320x180", seed=3)
    assert again == clips and [c.stat().st_mtime_ns for c in again] == before


def test_inputs_generate_cli(tmp_path, capsys):
    assert cli.main(["inputs", "generate", "-o", str(tmp_path), "--count", "1", "--durations", "1", "--size", "160x90"]) == 0
    [printed] = capsys.readouterr().out.split()
    assert printed.endswith(".mp4") and (tmp_path / printed.split("/")[-1]).stat().st_size > 0


def test_traced_transcode_is_sampled_by_name(logs_dir, clips, tmp_path):
    cfg = CollectorConfig(run_id="f1", node_id="cloud1", interval_ms=100, match_name="^ffmpeg$|^ffprobe$")
    daemon.start_collector(cfg)
    outputs = tmp_path / "out"
    try:
        for clip in clips:
            result = subprocess.run(
                tracekit_cmd("ffmpeg", "--run-id", "f1", "--scale", "160:90", "--task-id", clip.stem,
                             str(clip), str(outputs / clip.name)),
                capture_output=True, text=True,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
    finally:
        daemon.stop_collector("f1", logs_dir)
    events = read_jsonl(cfg.run_folder / "events.ffmpeg.jsonl")
    assert [e["task_id"] for e in events] == [c.stem for c in clips]
    for event, clip in zip(events, clips):
        assert event["status"] == 0 and event["inputs"] == [str(clip)]
        assert event["bytes_in"] == clip.stat().st_size
        assert event["bytes_out"] == (outputs / clip.name).stat().st_size > 0
        assert "-nostdin" in event["argv"] and "-y" in event["argv"]
    processes = followed_processes(cfg.run_folder / "processes.jsonl")
    assert {p["task_id"] for p in processes if p["task_id"]} <= {c.stem for c in clips}


def test_ffmpeg_is_followed_by_name(logs_dir, clips, tmp_path):
    # -re reads the input at its frame rate: the process lives as long as the
    # clip (1-2 s), many sampling intervals, so the collector must see it.
    cfg = CollectorConfig(run_id="f3", node_id="cloud1", interval_ms=100, match_name="^ffmpeg$|^ffprobe$")
    daemon.start_collector(cfg)
    try:
        live = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-re", "-i", str(clips[0]), str(tmp_path / "o.mp4")]
        )
        assert live.wait(timeout=60) == 0
    finally:
        daemon.stop_collector("f3", logs_dir)
    [record] = [p for p in followed_processes(cfg.run_folder / "processes.jsonl") if p["pid"] == live.pid]
    assert record["reason"] == "name" and record["comm"] == "ffmpeg" and record["task_id"] is None
    samples = [s for s in read_proc_csv(cfg.run_folder / "proc.csv") if s["pid"] == live.pid]
    assert len(samples) >= 2 and samples[-1]["cpu_user_ms"] >= samples[0]["cpu_user_ms"]


def test_ffmpeg_failure_and_bad_settings(logs_dir, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    assert cli.main(["ffmpeg", "--run-id", "f2", str(broken), str(tmp_path / "o.mp4")]) != 0
    [event] = read_jsonl(logs_dir / "f2" / "events.ffmpeg.jsonl")
    assert event["status"] != 0 and event["error"].startswith("exit status")
    capsys.readouterr()
    assert cli.main(["ffmpeg", "--run-id", "f2", str(tmp_path / "missing.mp4"), "o.mp4"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["ffmpeg", "--run-id", "f2", "--preset", "warp", str(broken), "o.mp4"]) == 2
    assert "is not one of ultrafast" in capsys.readouterr().err


def test_an_input_that_is_not_a_video_is_named_and_said_so(clips, tmp_path):
    from tracekit.adapters.ffmpeg import probe_media
    from tracekit.adapters.ffmpeg_argv import TranscodeSettings
    from tracekit.errors import TracekitError
    from tracekit.workloads.ffmpeg import plan_transcodes

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / clips[0].name).symlink_to(clips[0])
    notes = inputs / "notes.txt"
    notes.write_text("not a video at all\n")
    assert probe_media(notes) == (0.0, "not a readable video (ffprobe: Invalid data found when processing input)")
    with pytest.raises(TracekitError, match=f"^{notes}: not a readable video \\(ffprobe: Invalid data"):
        probe_duration_s(notes)
    good, bad = sorted(plan_transcodes(inputs, TranscodeSettings()), key=lambda task: task.inputs[0] != str(inputs / clips[0].name))
    assert good.note is None and good.size > 0  # its media seconds
    assert bad.inputs == (str(notes),) and bad.size == 0
    assert bad.note == f"input {notes}: not a readable video (ffprobe: Invalid data found when processing input)"
