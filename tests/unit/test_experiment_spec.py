"""Experiment files: validation errors a person can act on, defaults, overrides."""

import re
from pathlib import Path

import pytest

from tracekit.experiment.spec import ExperimentError, load_experiment
from tracekit.trace.export import names as export_names

REPO = Path(__file__).resolve().parents[2]
MINIMAL = "name: x\nworkload:\n  ffmpeg:\n    generate: {count: 2}\n"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["ffmpeg.yaml", "smoke.yaml"])
def test_committed_experiments_are_valid(name):
    experiment = load_experiment(REPO / "experiments" / name)
    assert experiment.name == name.removesuffix(".yaml") and experiment.workload.generate is not None


def test_defaults_fill_everything(tmp_path):
    experiment = load_experiment(write(tmp_path, MINIMAL))
    assert experiment.dispatch.policy == "duration-online" and experiment.dispatch.timeout == 3600
    assert experiment.collectors.interval_ms == 1000 and experiment.collectors.match == "^ffmpeg$|^ffprobe$"
    assert experiment.workload.generate.durations == (2, 4, 8) and experiment.workload.generate.count == 2
    assert experiment.workload.transcode.preset == "veryfast" and experiment.parallel == 1
    assert experiment.export_formats == ("opendc",) and experiment.include_failed is False
    assert experiment.as_dict()["workload"]["transcode"]["crf"] == 28


@pytest.mark.parametrize(
    "text, message",
    [
        (MINIMAL + "dispatch: {policy: fastest}\n",
         "dispatch.policy: 'fastest' is not one of round-robin, least-loaded, lpt, duration-online"),
        (MINIMAL + "dispatch: {polcy: lpt}\n", "dispatch.polcy: unknown key (did you mean 'policy'?)"),
        (MINIMAL + "colectors: {}\n", "colectors: unknown key (did you mean 'collectors'?)"),
        (MINIMAL + "collectors: {interval_ms: 50}\n", "collectors.interval_ms: 50 is out of range: use 100 to 3,600,000 ms"),
        (MINIMAL + "workers: {parallel: two}\n", "workers.parallel: 'two' is not a whole number"),
        ("workload:\n  ffmpeg:\n    generate: {}\n", "name: missing; it is required"),
        ("name: x\nworkload:\n  ffmpeg: {transcode: {}}\n", "give exactly one of 'inputs'"),
        ("name: x\nworkload:\n  ffmpeg: {inputs: /in, generate: {}}\n", "give exactly one of 'inputs'"),
        (MINIMAL.replace("generate: {count: 2}", "generate: {count: 2}\n    mix: {4k-slow: 1}\n    total: 3"),
         "workload.ffmpeg.mix: '4k-slow' is not one of 360p-ultrafast, 480p-veryfast"),
        (MINIMAL.replace("generate: {count: 2}", "generate: {count: 2}\n    mix: {720p-veryfast: 1}"),
         "workload.ffmpeg.total: missing"),
        ("name: [unclosed\n", "not valid YAML"),
        ("- a list\n", "an experiment is a YAML mapping"),
    ],
)
def test_errors_name_file_path_and_allowed_values(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert str(info.value).startswith(f"{path}") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_errors_give_line_and_column(tmp_path):
    path = write(tmp_path, "name: x\nworkload: [\n")
    with pytest.raises(ExperimentError, match=rf"{path}:\d+:\d+: not valid YAML"):
        load_experiment(path)


def test_overrides(tmp_path):
    path = write(tmp_path, MINIMAL)
    experiment = load_experiment(path, ["dispatch.policy=lpt", "workers.parallel=3", "tags.who=me"])
    assert (experiment.dispatch.policy, experiment.parallel, experiment.tags) == ("lpt", 3, {"who": "me"})
    with pytest.raises(ExperimentError, match="dispatch.policy: 'nope' is not one of"):
        load_experiment(path, ["dispatch.policy=nope"])
    with pytest.raises(ExperimentError, match="KEY=VALUE"):
        load_experiment(path, ["policy"])


def test_missing_file(tmp_path):
    with pytest.raises(ExperimentError, match="cannot read the experiment"):
        load_experiment(tmp_path / "none.yaml")


def test_schema_names_the_same_policies_and_profiles_as_the_code():
    from tracekit.sched.policies import ALIASES, POLICIES
    from tracekit.workloads import experiment_schema
    from tracekit.workloads.ffmpeg import PROFILES

    schema = experiment_schema()
    assert schema["properties"]["dispatch"]["properties"]["policy"]["enum"] == [*POLICIES, *ALIASES]
    mix = schema["properties"]["workload"]["properties"]["ffmpeg"]["properties"]["mix"]
    assert mix["propertyNames"]["enum"] == list(PROFILES)


HTTP_MINIMAL = "name: h\nworkload:\n  http:\n    load: {rate: 20, duration: 5s}\n"


def test_the_http_experiment_and_its_defaults(tmp_path):
    experiment = load_experiment(REPO / "experiments" / "http.yaml")
    assert experiment.kind == "http" and experiment.workload.load.params == {"cpu_ms": 4, "sleep_ms": 2}
    minimal = load_experiment(write(tmp_path, HTTP_MINIMAL))
    assert (minimal.workload.service, minimal.workload.app, minimal.workload.port, minimal.workload.on) == (
        "examples/fastapi_svc", "app:create_app", 8080, None)  # fmt: skip
    assert minimal.workload.load.endpoint == "/work" and minimal.workload.load.arrival == "constant"
    assert load_experiment(REPO / "experiments" / "ffmpeg.yaml").kind == "ffmpeg"


@pytest.mark.parametrize(("override", "message"), [
    ("workload.http.load.rate=fast", "workload.http.load.rate 'fast': 'fast' is not a rate"),
    ("workload.http.load.duration=null", "workload.http.load.rate 20 needs workload.http.load.duration"),
    ("workload.http.load.warmup=soon", "workload.http.load.warmup 'soon' is not a duration"),
    ("workload.http.chain=true", "workload.http.chain: a chain needs at least two nodes in workload.http.on"),
    ("workload.http.load.arrival=bursty", "workload.http.load.arrival: 'bursty' is not one of constant, poisson"),
    ("workload.http.load.endpoint=work", "workload.http.load.endpoint"),
    ("workload.ffmpeg.total=3", "workload: give exactly one kind, not 2: 'command' (batch tasks"),
])  # fmt: skip
def test_http_errors_name_the_field(tmp_path, override, message):
    with pytest.raises(ExperimentError, match=__import__("re").escape(message)):
        load_experiment(write(tmp_path, HTTP_MINIMAL), [override])


# -- the YAML itself: what PyYAML would accept but an experiment must not ---------------

BILLION_LAUGHS = MINIMAL + """tags:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize(("text", "line", "message"), [
    (BILLION_LAUGHS, 6, "&a: YAML anchors and aliases are not allowed"),
    (MINIMAL + "tags: {a: *nothing}\n", 5, "*nothing: YAML aliases are not allowed"),
    (MINIMAL + "tags: {x: !!python/object/apply:os.system [ls]}\n", 5, "!!python/object/apply:os.system: YAML tags are not allowed"),
    (MINIMAL + "tags: {x: !!binary aGVsbG8=}\n", 5, "!!binary: YAML tags are not allowed"),
    (MINIMAL + "tags: {x: !!set {a}}\n", 5, "!!set: YAML tags are not allowed"),
    (MINIMAL + "dispatch: {policy: lpt}\ndispatch: {policy: round-robin}\n", 6, "dispatch: duplicate key"),
    (MINIMAL + "tags: {x: " + "[" * 40 + "]" * 40 + "}\n", 5, "nested more than 32 levels deep"),
    (MINIMAL + "tags:\n  ? [a, b]\n  : 1\n", 6, "a key must be a word"),
])  # fmt: skip
def test_yaml_that_expands_runs_code_or_hides_a_value_is_refused_with_its_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert str(info.value).startswith(f"{path}:{line}: {message}") and "\n" not in str(info.value)


def test_yaml_refusals_apply_to_overrides_too(tmp_path):
    with pytest.raises(ExperimentError, match=r"^-e 'tags.x=\[&a 1, \*a\]': &a: YAML anchors and aliases are not allowed"):
        load_experiment(write(tmp_path, MINIMAL), ["tags.x=[&a 1, *a]"])


def test_plain_tags_and_keys_as_written(tmp_path):
    # 'on' is a key of workload.http, not true; !!str is how YAML quotes; dates stay text.
    experiment = load_experiment(write(tmp_path, HTTP_MINIMAL.replace("    load:", "    on: [cloud1]\n    load:") +
                                       "tags: {day: 2026-11-25, size: !!str 0x0, 1: one}\n"))  # fmt: skip
    assert experiment.workload.on == ("cloud1",)
    assert experiment.tags == {"day": "2026-11-25", "size": "0x0", "1": "one"}


@pytest.mark.parametrize(("content", "message"), [
    (b"name: x\n" + b"#" * 1_100_000 + b"\n", "characters; an experiment has at most 1,000,000"),
    (b"name: \xff\xfe\n", "not UTF-8 text"),
])  # fmt: skip
def test_huge_or_binary_files(tmp_path, content, message):
    path = tmp_path / "exp.yaml"
    path.write_bytes(content)
    with pytest.raises(ExperimentError, match=rf"^{path}: .*{message}"):
        load_experiment(path)


@pytest.mark.parametrize(("override", "message"), [
    ("collectors.match=[unclosed", "-e 'collectors.match=[unclosed': the value is not valid YAML (expected ',' or ']', "
     "but got '<stream end>'); quote it for text: -e \"collectors.match='[unclosed'\""),
    ("tags.x={a: 1", "-e 'tags.x={a: 1': the value is not valid YAML"),
    ("tags.x=a: b: c", "-e 'tags.x=a: b: c': the value is not valid YAML"),
    ("tags..x=1", "-e 'tags..x=1': the key has an empty part; write a dotted key, e.g. -e dispatch.policy=lpt"),
])  # fmt: skip
def test_override_values_that_are_not_yaml(tmp_path, override, message):
    with pytest.raises(ExperimentError) as info:
        load_experiment(write(tmp_path, MINIMAL), [override])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


# -- YAML 1.1 reading a value that is meant as text -------------------------------------------


@pytest.mark.parametrize(("line", "message"), [
    ("    generate: {count: 2, size: 0x0}", "workload.ffmpeg.generate.size: 0x0 is read by YAML as the number 0, not as "
                                             "text; quote it: '0x0'"),
    ("    generate: {count: 2}\n    transcode: {scale: 320:40}", "workload.ffmpeg.transcode.scale: 320:40 is read by "
                                                                   "YAML as the number 19240, not as text; quote it: '320:40'"),
    ("    generate: {count: 2}\ncollectors: {match: on}", "collectors.match: on is read by YAML as the boolean true"),
    ("    generate: {count: 2}\ndescription: 1:30", "description: 1:30 is read by YAML as the number 90"),
    ("    generate: {count: 2}\ninventory: no", "inventory: no is read by YAML as the boolean false"),
    ("    generate: {count: 2}\nname: 1_000", "name: 1_000 is read by YAML as the number 1000"),
    ("    generate: {count: 1e9}", "workload.ffmpeg.generate.count: '1e9' is text to YAML, not a number; write it with "
                                   "digits only, e.g. 1000000000"),
    ("    generate: {count: 2.0}", "workload.ffmpeg.generate.count: 2.0 is not a whole number"),
    ("    generate: {count: yes}", "workload.ffmpeg.generate.count: yes is not a whole number"),
    ("    generate: {count: 2}\ntags: {'': 1}", "tags: the key '' has no characters; give some"),
    ("    generate: {count: 2}\ncollectors: {interval_ms: 1000.0}", "collectors.interval_ms: 1000.0 is not a whole number"),
])  # fmt: skip
def test_a_value_yaml_reads_as_something_else_says_to_quote_it(tmp_path, line, message):
    path = write(tmp_path, "name: x\nworkload:\n  ffmpeg:\n" + line + "\n")
    if line.endswith("name: 1_000"):
        path.write_text(path.read_text().replace("name: x\n", ""))
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert str(info.value).startswith(f"{path}: {message}") and "\n" not in str(info.value)


def test_an_override_read_as_a_number_says_how_to_quote_it_for_the_shell(tmp_path):
    with pytest.raises(ExperimentError, match=r"workload.ffmpeg.generate.size: 0x0 is read by YAML as the number 0, "
                                              r"not as text; quote it: -e \"workload.ffmpeg.generate.size='0x0'\"$"):
        load_experiment(write(tmp_path, MINIMAL), ["workload.ffmpeg.generate.size=0x0"])
    quoted = load_experiment(write(tmp_path, MINIMAL), ["workload.ffmpeg.generate.size='320x180'"])
    assert quoted.workload.generate.size == "320x180"


def test_http_on_in_a_file_names_nodes(tmp_path):
    with pytest.raises(ExperimentError, match=r"workload.http.on.0: yes is read by YAML as the boolean true"):
        load_experiment(write(tmp_path, HTTP_MINIMAL.replace("    load:", "    on: [yes, cloud2]\n    load:")))


# -- sizes, regexes and bounds ------------------------------------------------------------------

SIZE = "WIDTHxHEIGHT, each a whole number from 1 to 8192, e.g. 640x360"
SCALE = "WIDTH:HEIGHT, each a whole number from 1 to 8192 (or -1, -2 to keep the aspect ratio, 0 for the input's)"


@pytest.mark.parametrize(("override", "message"), [
    ("workload.ffmpeg.generate.size='0x0'", f"workload.ffmpeg.generate.size: '0x0' is not {SIZE}"),
    ("workload.ffmpeg.generate.size='640x0'", f"workload.ffmpeg.generate.size: '640x0' is not {SIZE}"),
    ("workload.ffmpeg.generate.size='9000x720'", f"workload.ffmpeg.generate.size: '9000x720' is not {SIZE}"),
    ("workload.ffmpeg.generate.size='640X360'", f"workload.ffmpeg.generate.size: '640X360' is not {SIZE}"),
    ("workload.ffmpeg.generate.size='-2x360'", f"workload.ffmpeg.generate.size: '-2x360' is not {SIZE}"),
    ("workload.ffmpeg.transcode.scale='9000:-2'", f"workload.ffmpeg.transcode.scale: '9000:-2' is not {SCALE}"),
    ("workload.ffmpeg.transcode.scale='1280:-720'", f"workload.ffmpeg.transcode.scale: '1280:-720' is not {SCALE}"),
    ("collectors.match='[unclosed'", "collectors.match: '[unclosed' is not a valid regular expression (Python re): "
                                     "unterminated character set at position 0"),
    ("collectors.match_cmdline='(?P<x'", "collectors.match_cmdline: '(?P<x' is not a valid regular expression (Python "
                                         "re): missing >, unterminated name at position 4"),
    ("workload.ffmpeg.generate.count=1000000000", "workload.ffmpeg.generate.count: 1000000000 is out of range: use 1 to 1,000"),
    ("workload.ffmpeg.generate.durations=[1, 99999]", "workload.ffmpeg.generate.durations.1: 99999 is out of range: "
                                                      "use 1 to 3,600 s"),
    ("workload.ffmpeg.generate.durations=[" + ", ".join(["1"] * 101) + "]",
     "workload.ffmpeg.generate.durations: 101 items; give 1 to 100"),
    ("workload.ffmpeg.generate.seed=-1", "workload.ffmpeg.generate.seed: -1 is out of range: use 0 to 4,294,967,295"),
    ("workload.ffmpeg.transcode.threads=100000", "workload.ffmpeg.transcode.threads: 100000 is out of range: use 1 to 256"),
    ("workload.ffmpeg.total=100000000", "workload.ffmpeg.total: 100000000 is out of range: use 1 to 100,000"),
    ("workload.ffmpeg.mix={720p-veryfast: .inf}", "workload.ffmpeg.mix.720p-veryfast: .inf is out of range: use 0 to 1,000,000"),
    ("workload.ffmpeg.mix={720p-veryfast: 0}", "workload.ffmpeg.mix: every weight is 0; give at least one profile a weight above 0"),
    ("dispatch.timeout=.inf", "dispatch.timeout: .inf is out of range: use 0.001 to 604,800 s"),
    ("dispatch.timeout=.nan", "dispatch.timeout: .nan is not a number"),
    ("dispatch.timeout=0", "dispatch.timeout: 0 is out of range: use 0.001 to 604,800 s"),
    ("dispatch.dribble_interval=99999", "dispatch.dribble_interval: 99999 is out of range: use 0 to 3,600 s"),
    ("dispatch.batch_size=1000000000", "dispatch.batch_size: 1000000000 is out of range: use 0 to 100,000"),
    ("dispatch.backlog_limit=1000000000", "dispatch.backlog_limit: 1000000000 is out of range: use 0 to 100,000"),
    ("workers.parallel=1000000", "workers.parallel: 1000000 is out of range: use 1 to 256"),
    ("workers.parallel=2.0", "workers.parallel: 2.0 is not a whole number"),
    ("collectors.interval_ms=0", "collectors.interval_ms: 0 is out of range: use 100 to 3,600,000 ms"),
    ("collectors.interval_ms=100000000", "collectors.interval_ms: 100000000 is out of range: use 100 to 3,600,000 ms"),
    ("tags.x=.nan", "tags.x: .nan is not a number"),
    ("tags.x=.inf", "tags.x: .inf is out of range: use -1e+15 to 1e+15"),
    ("tags.x=[" + ", ".join(["1"] * 101) + "]", "tags.x: 101 items; give 0 to 100"),
    ("description=" + "d" * 10001, "description: 10,001 characters; at most 10,000"),
])  # fmt: skip
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path, override, message):
    with pytest.raises(ExperimentError) as info:
        load_experiment(write(tmp_path, MINIMAL), [override, "workload.ffmpeg.total=3"] if "mix" in override else [override])
    assert str(info.value).endswith(f": {message}") or f": {message}" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("override", "message"), [
    ("workload.http.load.rate=0.0001", "workload.http.load.rate: 0.0001 is out of range: use 0.001 to 1,000,000 requests/s"),
    ("workload.http.load.rate=2000000", "workload.http.load.rate: 2000000 is out of range: use 0.001 to 1,000,000 requests/s"),
    ("workload.http.load.rate=.nan", "workload.http.load.rate: .nan is not a number"),
    ("workload.http.load={rate: '0.0001@10s'}", "workload.http.load.rate '0.0001@10s': 0.0001 must be at least 0.001 "
                                                "and at most 1,000,000 per second"),
    ("workload.http.load={rate: '5@nan'}", "workload.http.load.rate '5@nan': duration 'nan' is not a duration"),
    ("workload.http.load={rate: '5@1e400'}", "workload.http.load.rate '5@1e400': duration '1e400' is not a duration"),
    ("workload.http.load.duration=200h", "workload.http.load.duration: 200h is out of range: use above 0 and at most 7 days"),
    ("workload.http.load.duration=inf", "workload.http.load.duration 'inf' is not a duration: use e.g. 60s, 500ms, 1m30s"),
    ("workload.http.load.duration=nan", "workload.http.load.duration 'nan' is not a duration"),
    ("workload.http.load.warmup=25h", "workload.http.load.warmup: 25h is out of range: use at most 1 day"),
    ("workload.http.load.warmup=inf", "workload.http.load.warmup 'inf' is not a duration"),
    ("workload.http.load.timeout=0s", "workload.http.load.timeout: 0s is out of range: use above 0 and at most 1 h"),
    ("workload.http.load.timeout=2h", "workload.http.load.timeout: 2h is out of range: use above 0 and at most 1 h"),
    ("workload.http.load.max_in_flight=10000000", "workload.http.load.max_in_flight: 10000000 is out of range: use 1 to 65,536"),
    ("workload.http.load.params={n: 10000000000000000}", "workload.http.load.params.n: 10000000000000000 is out of range"),
    ("workload.http.on=[" + ", ".join(f"n{i}" for i in range(65)) + "]", "workload.http.on: 65 items; give 1 to 64"),
])  # fmt: skip
def test_http_load_bounds(tmp_path, override, message):
    with pytest.raises(ExperimentError) as info:
        load_experiment(write(tmp_path, HTTP_MINIMAL), [override])
    assert f": {message}" in str(info.value) and "\n" not in str(info.value)


def test_an_http_load_of_more_than_ten_million_requests(tmp_path):
    path = write(tmp_path, HTTP_MINIMAL)
    with pytest.raises(ExperimentError, match="workload.http.load: 36,000,000 requests .* at most 10,000,000 in a run"):
        load_experiment(path, ["workload.http.load.rate=10000", "workload.http.load.duration=1h"])
    plan = ",".join(["5@1s"] * 101)
    with pytest.raises(ExperimentError, match="workload.http.load.rate: a plan of 101 steps; at most 100"):
        load_experiment(path, [f"workload.http.load.rate={plan}", "workload.http.load.duration=null"])
    assert load_experiment(path, ["workload.http.load.rate=1000", "workload.http.load.duration=1h"]).workload.load.rate == 1000


def test_every_number_text_and_list_of_the_schema_is_bounded():
    from tracekit.workloads import experiment_schema

    def walk(schema, where):
        types = schema.get("type", [])
        types = types if isinstance(types, list) else [types]
        if {"integer", "number"} & set(types) or "minimum" in schema:
            assert "minimum" in schema and "maximum" in schema, f"{where}: a number without both bounds"
        if "array" in types:
            assert "maxItems" in schema, f"{where}: a list without maxItems"
        if "string" in types:
            assert "maxLength" in schema, f"{where}: a text without maxLength"
        if "object" in types and "properties" not in schema:
            assert "maxProperties" in schema or "propertyNames" in schema, f"{where}: a mapping without a bound"
        for key, sub in schema.get("properties", {}).items():
            walk(sub, f"{where}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                walk(schema[key], f"{where}.{key}")
        for key, sub in schema.get("$defs", {}).items():
            walk(sub, f"$defs.{key}")

    walk(experiment_schema(), "(top)")  # with every kind's part


@pytest.mark.parametrize(
    ("export", "formats"),
    [
        ("", ("opendc",)),
        ("export: {opendc: false}", ()),
        ("export: {opendc: true}", ("opendc",)),
        ("export: {formats: []}", ()),
        ("export: {formats: [opendc]}", ("opendc",)),
        ("export: {formats: [], opendc: true}", ("opendc",)),
    ],
)
def test_export_formats_with_the_older_opendc_key_still_read(tmp_path, export, formats):
    path = write(tmp_path, f"{MINIMAL}{export}\n")
    assert load_experiment(path).export_formats == formats


@pytest.mark.parametrize(
    ("export", "error"),
    [
        ("export: {formats: [nope]}", "export.formats: unknown format 'nope'; known: " + ", ".join(export_names())),
        ("export: {formats: [opendc], opendc: false}", "export.opendc is false but export.formats lists opendc"),
        ("export: {formats: [opendc, opendc]}", "export.formats"),
        ("collectors: {host: false}\nexport: {formats: [opendc, alibaba]}",
         "export.formats: alibaba needs the nodes' host samples, which collectors.host: false leaves out; set "
         "collectors.host: true or leave it out"),
        ("export: {formats: [opendc], options: {google: {window_s: 60}}}",
         "export.options.google: google is not among export.formats (opendc); list it there or leave its options out"),
        ("export: {formats: [google], options: {google: {window: 60}}}",
         "export.options.google: google has no option 'window'; its options: window_s"),
        ("export: {formats: [google], options: {google: {window_s: 0.0005}}}",
         "export.options.google: --window-s 0.0005: give a window of whole milliseconds"),
        ("export: {formats: [opendc], options: {opendc: {merge_tolerance_pct: 100}}}",
         "export.options.opendc: --merge-tolerance 100 must be a percentage from 0 to 100"),
        ("export: {formats: [google], options: {google: {window_s: '60'}}}", "export.options.google.window_s"),
    ],
)
def test_an_export_format_not_known_or_contradicted_is_one_line(tmp_path, export, error):
    path = write(tmp_path, f"{MINIMAL}{export}\n")
    with pytest.raises(ExperimentError, match=re.escape(error)):
        load_experiment(path)


def test_a_format_s_own_options_are_read_and_checked(tmp_path):
    path = write(tmp_path, f"{MINIMAL}export: {{formats: [opendc, google], options: {{google: {{window_s: 60}}, "
                           "opendc: {merge_tolerance_pct: 2.5}}}\n")  # fmt: skip
    experiment = load_experiment(path)
    assert experiment.export_options == {"google": {"window_s": 60.0}, "opendc": {"merge_tolerance_pct": 2.5}}
    assert experiment.as_dict()["export_options"] == experiment.export_options  # in the resolved experiment
    assert load_experiment(write(tmp_path, MINIMAL)).export_options == {}
