"""The load generator's schedule and flags (tracekit.load.plan, parse_target, parse_header)."""

from __future__ import annotations

import pytest

from tracekit.errors import UsageError
from tracekit.load.generator import parse_header, parse_target
from tracekit.load.plan import Step, build_schedule, parse_duration_ns, parse_rate_plan
from tracekit.load.plan import MAX_RATE

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


# -- issue 23: a long load must not materialize its schedule; absurd plans are refused ---------------

WEEK = 7 * 24 * 3600 * S


@pytest.mark.parametrize("arrival", ["constant", "poisson"])
def test_a_week_at_a_million_per_second_is_drawn_as_it_is_read_not_kept(arrival):
    """6e11 planned requests: before the fix build_schedule made a list of all of them (--rate 20
    --duration 99999999h reached 14 GB). Now reading the first ones costs no memory per request."""
    import tracemalloc
    from itertools import islice

    tracemalloc.start()
    try:
        schedule = build_schedule([Step(MAX_RATE, WEEK - S)], arrival, seed=3, warmup_ns=S)
        read, last = 0, None
        for last in islice(schedule.sends(), 100_000):  # as the generator reads them: one at a time
            read += 1
        first = schedule.offsets_ns[:1000]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # bytes; the plan has 600,000,000,000 requests
    assert read == 100_000 and last[1] is True and first == sorted(first) and len(first) == 1000
    assert schedule.duration_ns == WEEK
    if arrival == "constant":
        assert schedule.count == MAX_RATE * WEEK // S and schedule.warmup_count == MAX_RATE
        assert first[:3] == [0, 1000, 2000] and last[0] == 99_999_000


def test_the_same_seed_gives_the_same_drawn_schedule_read_twice():
    schedule = build_schedule([Step(200, 2 * S), Step(50, S)], "poisson", seed=11, warmup_ns=S // 2)
    assert list(schedule.sends()) == list(schedule.sends())
    flags = [warmup for _, warmup in schedule.sends()]
    assert flags == sorted(flags, reverse=True) and 60 < sum(flags) < 140  # the warm-up's come first
    assert schedule.count is None and schedule.warmup_count is None  # known only once drawn
    assert len(schedule.offsets_ns) == len(flags) and schedule.offsets_ns[-1] < 3.5 * S


@pytest.mark.parametrize("rate, duration, message", [
    ("1e-9", "1h", "at least 0.001"),
    ("0.0001@10000s", None, "at least 0.001"),
    ("2000000", "1s", "at most 1,000,000 per second"),
    ("inf", "1s", "at most 1,000,000"),
    ("nan", "1s", "above 0"),
    ("20", "99999999h", "longer than a load may last"),
    ("50@100h,50@100h", None, "longer than a load may last"),
    ("0.5", "1s", "plans no request"),
    ("50@10ms,100@1s", None, "50 per second for 0.01 s plans no request"),
    ("1", "1e400", "not a duration"),
    ("1", "inf", "not a duration"),
    ("1", "nan", "not a duration"),
])  # fmt: skip
def test_absurd_rates_and_durations_are_refused_in_one_line(rate, duration, message):
    with pytest.raises(UsageError, match=message) as refused:
        parse_rate_plan(rate, duration)
    assert "\n" not in str(refused.value)


def test_the_python_api_bounds_a_plan_and_its_warmup_too():
    for plan, warmup, message in ([Step(1e-9, S)], 0, "at least 0.001"), ([Step(2e6, S)], 0, "at most 1,000,000"), \
            ([Step(10, WEEK)], S, "longer than a load may last"), ([], 0, "no step"):  # fmt: skip
        with pytest.raises(UsageError, match=message):
            build_schedule(plan, "constant", warmup_ns=warmup)
    assert build_schedule([Step(10, WEEK - S)], warmup_ns=S).duration_ns == WEEK


def test_a_url_that_does_not_parse_is_a_usage_error_naming_it():
    for bad in ("http://[::1", "http://[::1/work", "http://127.0.0.1:0/", "http://127.0.0.1:8080/a b",
                "http://127.0.0.1:8080/a\x7f"):  # fmt: skip
        with pytest.raises(UsageError, match=r"--url 'http://\[?[^']*"):
            parse_target(bad)
    assert parse_target("http://[::1]:8080/w").host == "::1"
