"""Experiment files: validation errors a person can act on, defaults, overrides."""

from pathlib import Path

import pytest

from tracekit.experiment.spec import ExperimentError, load_experiment

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
    assert experiment.export_opendc is True and experiment.include_failed is False
    assert experiment.as_dict()["workload"]["transcode"]["crf"] == 28


@pytest.mark.parametrize(
    "text, message",
    [
        (MINIMAL + "dispatch: {policy: fastest}\n",
         "dispatch.policy: 'fastest' is not one of round-robin, least-loaded, lpt, duration-online"),
        (MINIMAL + "dispatch: {polcy: lpt}\n", "dispatch.polcy: unknown key (did you mean 'policy'?)"),
        (MINIMAL + "colectors: {}\n", "colectors: unknown key (did you mean 'collectors'?)"),
        (MINIMAL + "collectors: {interval_ms: 50}\n", "collectors.interval_ms: 50 is less than the minimum of 100"),
        (MINIMAL + "workers: {parallel: two}\n", "workers.parallel: 'two' is not of type integer"),
        ("workload:\n  ffmpeg:\n    generate: {}\n", "name: missing; it is required"),
        ("name: x\nworkload:\n  ffmpeg: {transcode: {}}\n", "give exactly one of 'inputs'"),
        ("name: x\nworkload:\n  ffmpeg: {inputs: in, generate: {}}\n", "give exactly one of 'inputs'"),
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
    from tracekit.schemas import load_schema
    from tracekit.sched.plan import PROFILES
    from tracekit.sched.policies import ALIASES, POLICIES

    schema = load_schema("experiment")
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
    ("workload.ffmpeg.total=3", "workload: give exactly one kind, 'ffmpeg' (transcoding tasks) or 'http'"),
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
