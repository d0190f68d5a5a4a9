"""docs/make_samples.py's comparison: a sample goes stale when a count or a line changes, not when a measured
value does or when a note or warning that depends on timing comes or goes."""

from __future__ import annotations

from tests.helpers import docs_samples

SAMPLE = ("$ tracekit collect stop --run-id test001\n"
          "collector pid 41 stopped: 2 samples, 2 processes tracked -> logs/test001\n"
          "$ tracekit parse logs/test001\n"
          "logs/test001/cctf: 2 invocations (0 failed), 2 process samples on 1 node(s), 100.0% of invocations sampled\n")  # fmt: skip


def printed(stop: str, parse: str) -> dict[str, str]:
    return {"tracekit collect stop --run-id test001": stop, "tracekit parse logs/test001": parse}


def test_measured_values_timing_notes_and_warnings_do_not_make_a_sample_stale():
    samples = docs_samples()
    assert samples.stale(SAMPLE, printed(
        "collector pid 977 stopped: 1 samples, 0 processes tracked -> logs/test001\n"
        "warning: no process was tracked in this run: check --match/--match-cmdline\n",
        "logs/test001/cctf: 2 invocations (0 failed), 1 process samples on 1 node(s),  50.0% of invocations sampled\n"
        "note: 1 invocations have no process samples (shorter than an interval, or not followed)\n")) is None  # fmt: skip


def test_a_changed_count_or_a_new_line_makes_a_sample_stale():
    samples = docs_samples()
    stop = "collector pid 41 stopped: 2 samples, 2 processes tracked -> logs/test001\n"
    three = "logs/test001/cctf: 3 invocations (0 failed), 2 process samples on 1 node(s), 100.0% of invocations sampled\n"
    assert "+logs/test#/cctf: 3 invocations" in samples.stale(SAMPLE, printed(stop, three))
    assert samples.stale(SAMPLE, printed(stop + "error: the run folder is gone\n", three.replace("3", "2", 1)))


def test_a_measured_value_in_scientific_notation_is_one_number():
    samples = docs_samples()
    shown = "$ tracekit show out/t.parquet\n  average_usage  {\"cpus\": 0.548332, \"memory\": 5.12888e-05}  [NCU, NMU]\n"
    now = {"tracekit show out/t.parquet": "  average_usage  {\"cpus\": 0.6, \"memory\": 0.000102578}  [NCU, NMU]\n"}
    assert samples.stale(shown, now) is None
    assert samples.masked("1.5e-07 and 12") == "# and #"
    # A value measured in one run and missing (too short to sample) in another.
    assert samples.stale("$ tracekit show t.csv\n  mem_avg  0.00512  [%]\n", {"tracekit show t.csv": "  mem_avg  null  [%]\n"}) is None
