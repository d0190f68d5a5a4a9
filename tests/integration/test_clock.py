"""tracekit clock: the offset to the controller's clock, measured against a real Redis TIME."""

from __future__ import annotations

import json
import subprocess

from tests.helpers import tracekit_cmd
from tests.sshd import free_port


def test_clock_records_start_and_end_offsets(tmp_path, redis_server):
    base = ["--run-id", "clk", "--logs-dir", str(tmp_path), "--redis-url", redis_server.url,
            "--redis-password-file", str(redis_server.password_file)]  # fmt: skip
    for moment in ("start", "end"):
        done = subprocess.run(tracekit_cmd("clock", *base, "--moment", moment), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("clock offset ")
    clock = json.loads((tmp_path / "clk" / "clock.json").read_text())
    assert {"start", "end", "offset_ms", "uncertainty_ms", "rtt_ms", "reference"} <= set(clock)
    # Same machine, same clock: the offset is within the measurement's own uncertainty (plus Redis' 1 us steps).
    for moment in ("start", "end"):
        assert abs(clock[moment]["offset_ms"]) <= clock[moment]["uncertainty_ms"] + 0.01
        assert clock[moment]["rtt_ms"] > 0
    assert clock["offset_ms"] == round((clock["start"]["offset_ms"] + clock["end"]["offset_ms"]) / 2, 3)
    assert redis_server.password not in (tmp_path / "clk" / "clock.json").read_text()


def test_clock_with_a_wrong_password_says_so_in_one_line(tmp_path, redis_server):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    done = subprocess.run(tracekit_cmd("clock", "--run-id", "clk", "--logs-dir", str(tmp_path), "--redis-url",
                                       redis_server.url, "--redis-password-file", str(wrong)), capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "authentication failed" in done.stderr
    assert not (tmp_path / "clk" / "clock.json").exists()


def test_collect_start_and_stop_measure_the_clock_when_asked(tmp_path, redis_server):
    run = ["--run-id", "clc", "--logs-dir", str(tmp_path)]
    clock_args = ["--clock-redis-url", redis_server.url, "--redis-password-file", str(redis_server.password_file)]
    started = subprocess.run(tracekit_cmd("collect", "start", *run, "--interval-ms", "200", *clock_args),
                             capture_output=True, text=True)  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        assert "clock offset" in started.stdout
        assert set(json.loads((tmp_path / "clc" / "clock.json").read_text())) >= {"start", "offset_ms"}
    finally:
        stopped = subprocess.run(tracekit_cmd("collect", "stop", *run, *clock_args), capture_output=True, text=True)
    assert stopped.returncode == 0, stopped.stderr
    assert {"start", "end"} <= set(json.loads((tmp_path / "clc" / "clock.json").read_text()))
    status = subprocess.run(tracekit_cmd("collect", "status", *run), capture_output=True, text=True)
    assert status.returncode == 3  # stopped


def test_collect_stop_still_stops_when_redis_is_gone(tmp_path, redis_server):
    # After a failed run Redis may be down: the collector stops, the end measurement is only missing.
    run = ["--run-id", "gone", "--logs-dir", str(tmp_path)]
    started = subprocess.run(tracekit_cmd("collect", "start", *run, "--interval-ms", "200"), capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    stopped = subprocess.run(tracekit_cmd("collect", "stop", *run, "--clock-redis-url", nobody,
                                          "--redis-password-file", str(redis_server.password_file)),
                             capture_output=True, text=True)  # fmt: skip
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stderr.count("\n") == 1 and "warning: clock offset at the end not measured" in stopped.stderr
    assert subprocess.run(tracekit_cmd("collect", "status", *run), capture_output=True).returncode == 3
    assert not (tmp_path / "gone" / "clock.json").exists()


def test_a_wall_clock_step_during_a_probe_does_not_win(redis_server, monkeypatch):
    # NTP steps the wall clock back 50 ms while the third probe waits for Redis: timed on
    # the wall clock, that probe's round trip is negative and it wins with a wrong offset.
    from tracekit.collect import clock

    real_time, calls = clock.time.time, {"n": 0}

    class SteppedTime:
        monotonic = staticmethod(clock.time.monotonic)

        @staticmethod
        def time():
            calls["n"] += 1
            return real_time() - (0.05 if calls["n"] >= 6 else 0.0)  # stepped from the 6th read on

    monkeypatch.setattr(clock, "time", SteppedTime)
    probe = clock.probe_offset(redis_server.client(), probes=6)
    assert probe.rtt_ms > 0
    # Probes after the step see the wall clock 50 ms behind Redis: +50 ms, within the uncertainty;
    # none may claim a negative round trip or an offset outside what was measured.
    assert min(abs(probe.offset_ms), abs(probe.offset_ms - 50)) <= probe.uncertainty_ms + 0.01
