"""The load generator's schedule and flags (tracekit.load.plan, parse_target, parse_header)."""

from __future__ import annotations

import pytest

from tracekit.errors import UsageError
from tracekit.load.generator import parse_header, parse_target
from tracekit.load.plan import Step, build_schedule, parse_duration_ns, parse_rate_plan

S = 1_000_000_000


@pytest.mark.parametrize("text, ns", [("60s", 60 * S), ("500ms", S // 2), ("1m30s", 90 * S), ("2", 2 * S),
                                      ("1.5s", 3 * S // 2), ("1h", 3600 * S)])  # fmt: skip
def test_durations(text, ns):
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["1y", "s", "10 s", "-1", "1s2"])
def test_bad_durations_name_the_value(text):
    with pytest.raises(UsageError, match="--duration"):
        parse_duration_ns(text, "--duration")


def test_rate_plans():
    assert parse_rate_plan("50", "30s") == [Step(50, 30 * S)]
    assert parse_rate_plan("50@30s,100@1m", None) == [Step(50, 30 * S), Step(100, 60 * S)]
    assert parse_rate_plan("50@30s,100@30s", "60s") == [Step(50, 30 * S), Step(100, 30 * S)]


@pytest.mark.parametrize("rate, duration, message", [
    ("50", None, "needs --duration"),
    ("0", "1s", "above 0"),
    ("abc", "1s", "not a rate"),
    ("50@", None, "needs a duration after '@'"),
    ("50@10s,20", None, "each needs its duration"),
    ("50@10s,20@10s", "30s", "disagrees"),
    ("50", "0s", "lasts no time"),
])  # fmt: skip
def test_bad_rate_plans_say_what_to_do(rate, duration, message):
    with pytest.raises(UsageError, match=message):
        parse_rate_plan(rate, duration)


def test_constant_schedule_is_evenly_spaced_per_step_with_the_warmup_first():
    schedule = build_schedule([Step(10, 2 * S), Step(100, S)], "constant", warmup_ns=S)
    assert schedule.warmup_count == 10 and len(schedule.offsets_ns) == 10 + 20 + 100
    assert schedule.offsets_ns[:3] == [0, S // 10, 2 * S // 10]
    assert schedule.offsets_ns[10] == S and schedule.offsets_ns[30] == 3 * S
    assert schedule.offsets_ns[31] - schedule.offsets_ns[30] == S // 100
    assert schedule.duration_ns == 4 * S


def test_poisson_schedule_is_seeded_and_has_the_rate_on_average():
    first = build_schedule([Step(1000, 10 * S)], "poisson", seed=7)
    assert first.offsets_ns == build_schedule([Step(1000, 10 * S)], "poisson", seed=7).offsets_ns
    assert first.offsets_ns != build_schedule([Step(1000, 10 * S)], "poisson", seed=8).offsets_ns
    assert 9_500 < len(first.offsets_ns) < 10_500
    assert first.offsets_ns == sorted(first.offsets_ns) and first.offsets_ns[-1] < 10 * S
    gaps = {b - a for a, b in zip(first.offsets_ns, first.offsets_ns[1:])}
    assert len(gaps) > 1000  # not evenly spaced


def test_targets_and_headers():
    target = parse_target("http://127.0.0.1:8080/work?cpu_ms=5")
    assert (target.host, target.port, target.request_target, target.host_header) == (
        "127.0.0.1", 8080, "/work?cpu_ms=5", "127.0.0.1:8080")  # fmt: skip
    assert parse_target("http://localhost").request_target == "/" and parse_target("http://localhost").port == 80
    for bad in ("https://x/", "ftp://x", "http:///path", "http://x:99999/"):
        with pytest.raises(UsageError, match="--url"):
            parse_target(bad)
    assert parse_header("X-Next-Url: http://a/b") == ("X-Next-Url", "http://a/b")
    for bad in ("nocolon", ": value", "Bad Name: v"):
        with pytest.raises(UsageError, match="--header"):
            parse_header(bad)
