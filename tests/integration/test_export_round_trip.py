"""The acceptance of every export format on a real run: experiments/ffmpeg.yaml through tracekit-run (the
local inventory) exported in every format by the parse phase, each read back as its format's readers would
and compared with the trace (tests/round_trip.py). The HTTP chain's round trip is in test_http_experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_runner import kill_processes_under, processes_under
from tests.round_trip import READERS, assert_round_trip
from tracekit.experiment.runner import run_experiment
from tracekit.trace import export

REPO = Path(__file__).resolve().parents[2]
EVERY_FORMAT = f"export.formats=[{', '.join(export.names())}]"
# The committed experiment, smaller: 4 clips of 1 and 2 s, transcoded at their own size.
SMALLER = ["workload.ffmpeg.generate.count=4", "workload.ffmpeg.generate.durations=[1, 2]",
           "workload.ffmpeg.generate.size=320x180", "workload.ffmpeg.transcode.scale=320:180"]  # fmt: skip

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_every_format_of_the_default_experiment_reads_back_as_its_trace(tmp_path, local_site):
    assert sorted(READERS) == export.names()  # a new format needs its reader here
    folder, inventory, port = local_site
    logs = tmp_path / "logs"
    try:
        result = run_experiment(REPO / "experiments" / "ffmpeg.yaml", inventory=inventory, run_id="ffmpeg-exports",
                                logs_dir=logs, overrides=[*SMALLER, EVERY_FORMAT,
                                                          "export.options={google: {window_s: 1}}"])  # fmt: skip
        assert result.state == "succeeded", result.summary
        google_summary = json.loads((logs / "ffmpeg-exports" / "google" / "export.json").read_text())
        assert google_summary["window_s"] == 1.0  # the experiment's option reached the parse phase
        for name in export.names():
            assert any(line.startswith(f"  {export.get(name).TITLE}:") for line in result.summary), (name, result.summary)
            assert assert_round_trip(logs / "ffmpeg-exports", name) == 4, name
        assert processes_under(folder, port) == []
    finally:
        kill_processes_under(folder, port)
