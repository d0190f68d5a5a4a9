"""An experiment document -> its first problem, as one line a person can act on (or None).

input:  the document as read (tracekit.experiment.strict_yaml) with the -e
        overrides applied, and the text of each unquoted scalar that YAML
        did not read as text (``0x0`` read as the number 0)
output: None, or ``<key>: <what is wrong>; <what is allowed>``

The first problem wins, in this order: a number that is not a number
(``.nan`` slips past every bound of a JSON Schema), then
schemas/experiment.schema.json (where every number, text and list is
bounded), then what a schema cannot say (``value_problem``, on the document
with its defaults): regexes that must compile (the collectors use Python's
``re``), sizes up to 8192, a mix with some weight, and the HTTP load's
rates and durations within their bounds.
"""

from __future__ import annotations

import difflib
import math
import re
from functools import cache
from typing import Any

import jsonschema

from tracekit.errors import UsageError
from tracekit.experiment.strict_yaml import KeyPath
from tracekit.schemas import load_schema

SCHEMA = "experiment"
Unquoted = dict[KeyPath, tuple[str, str | None]]  # path -> (text as written, the -e key it came from)

MAX_SIDE = 8192  # pixels, of a generated clip or a transcode's output
MAX_LOAD_S = 7 * 24 * 3600  # an HTTP load's plan
MAX_WARMUP_S = 24 * 3600
MAX_REQUEST_TIMEOUT_S = 3600
MIN_RATE = 0.001  # requests per second: one every 17 minutes
MAX_PLAN_STEPS = 100
# Every intended send time is planned in memory before the first request (tracekit.load.plan),
# and each request is a line of the results: a bound on the requests bounds both.
MAX_REQUESTS = 10_000_000


def where(path: KeyPath) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


# -- numbers that are not numbers ----------------------------------------------------


def _not_a_number(value: Any, path: KeyPath = ()) -> str | None:
    if isinstance(value, float) and math.isnan(value):
        return f"{where(path)}: .nan is not a number; give a number"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        problem = _not_a_number(item, (*path, key))
        if problem:
            return problem
    return None


# -- the schema, and its errors in words --------------------------------------------


def _is_integer(_checker: Any, instance: Any) -> bool:
    # JSON Schema counts 2.0 as an integer; an experiment may not (it reaches argparse's int() on a node).
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = load_schema(SCHEMA)
    base = jsonschema.validators.validator_for(schema)
    strict = jsonschema.validators.extend(base, type_checker=base.TYPE_CHECKER.redefine("integer", _is_integer))
    return strict(schema)


_TYPE_WORDS = {"integer": "a whole number", "number": "a number", "string": "text", "boolean": "true or false",
               "null": "null", "array": "a list", "object": "a mapping"}  # fmt: skip


def _shown(value: Any) -> str:
    """A value as YAML would write it (.inf, true, null), text quoted."""
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _number(value: float) -> str:
    """1,000 for a whole number of the schema (written as an integer), 0.001 and 1e+15 for the others."""
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _range(schema: dict[str, Any]) -> str:
    unit = f" {schema['x-unit']}" if "x-unit" in schema else ""
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"use {_number(low)} to {_number(high)}{unit}"
    return f"use at least {_number(low)}{unit}" if low is not None else f"use at most {_number(high)}{unit}"


def _as_read(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "null (no value)"
    return f"the number {_shown(value)}"


def _type_problem(error: jsonschema.ValidationError, unquoted: Unquoted) -> str:
    at, instance = where(error.absolute_path), error.instance
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    written = unquoted.get(tuple(error.absolute_path))
    if "string" in expected and not isinstance(instance, str) and written is not None:
        text, override = written
        how = f"-e \"{override}='{text}'\"" if override else f"'{text}'"
        return f"{at}: {text} is read by YAML as {_as_read(instance)}, not as text; quote it: {how}"
    if isinstance(instance, str) and {"integer", "number"} & set(expected):
        try:
            number = float(instance.replace("_", ""))
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            digits = f", e.g. {int(number)}" if number.is_integer() and abs(number) < 1e18 else ""
            return f"{at}: {instance!r} is text to YAML, not a number; write it with digits only{digits}"
    shown = written[0] if written is not None else _shown(instance)
    return f"{at}: {shown} is not {' or '.join(_TYPE_WORDS.get(t, t) for t in expected)}"


def _describe(error: jsonschema.ValidationError, unquoted: Unquoted) -> str:
    at, kind, instance, schema = where(error.absolute_path), error.validator, error.instance, error.schema
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        parts = []
        for key in sorted(set(instance) - set(allowed)):
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            prefix = "" if at == "(top level)" else f"{at}."
            parts.append(f"{prefix}{key}: unknown key{hint}; allowed: {', '.join(allowed)}")
        return "; ".join(parts)
    if kind == "enum":
        return f"{at}: {instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if kind == "required":
        missing = [k for k in error.validator_value if k not in (instance or {})]
        prefix = "" if at == "(top level)" else f"{at}."
        return f"{prefix}{missing[0]}: missing; it is required"
    if kind == "oneOf" and at.endswith("ffmpeg"):
        return f"{at}: give exactly one of 'inputs' (a folder of videos) or 'generate' (clips to make)"
    if kind == "oneOf" and at == "workload":
        return "workload: give exactly one kind, 'ffmpeg' (transcoding tasks) or 'http' (a service under load)"
    if kind == "type":
        return _type_problem(error, unquoted)
    if kind in ("minimum", "maximum"):
        return f"{at}: {_shown(instance)} is out of range: {_range(schema)}"
    if kind == "pattern" and "x-expected" in schema:
        return f"{at}: {instance!r} is not {schema['x-expected']}"
    what = f"{at}: the key {instance!r} has" if "propertyNames" in error.schema_path else f"{at}:"
    if kind == "maxLength":
        return f"{what} {len(instance):,} characters; at most {error.validator_value:,}"
    if kind == "minLength":
        return f"{what} no characters; give some" if "propertyNames" in error.schema_path else f"{at}: empty; give a value"
    if kind in ("minItems", "maxItems"):
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        allowed = f"{low} to {high}" if high is not None else f"at least {low}"
        return f"{at}: {len(instance)} items; give {allowed}"
    if kind == "maxProperties":
        return f"{at}: {len(instance)} keys; at most {error.validator_value}"
    if kind == "uniqueItems":
        return f"{at}: {instance!r} names an item more than once"
    return f"{at}: {error.message}"


def _sort_key(error: jsonschema.ValidationError) -> tuple[int, list[str]]:
    path = list(error.absolute_path)
    return -len(path), [str(part) for part in path]


def schema_problem(document: Any, unquoted: Unquoted) -> str | None:
    """Numbers that are not numbers, then the schema's most specific error (the deepest, then the first)."""
    problem = _not_a_number(document)
    if problem:
        return problem
    errors = sorted(_validator().iter_errors(document), key=_sort_key)
    return _describe(errors[0], unquoted) if errors else None


# -- what a schema cannot say ---------------------------------------------------------


def _regex_problem(collectors: dict[str, Any]) -> str | None:
    for key in ("match", "match_cmdline"):
        pattern = collectors.get(key)
        if pattern is None:
            continue
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"collectors.{key}: {pattern!r} is not a valid regular expression (Python re): {exc}"
    return None


def _side_problem(key: str, text: str, separator: str, expected: str) -> str | None:
    # The pattern made sure of the shape: whole numbers (or -N, 0 in a scale) of up to four digits.
    if any(int(side) > MAX_SIDE for side in text.split(separator)):
        return f"{key}: {text!r} is not {expected}"
    return None


def _ffmpeg_problem(ffmpeg: dict[str, Any]) -> str | None:
    schema = load_schema(SCHEMA)["properties"]["workload"]["properties"]["ffmpeg"]["properties"]
    generate = ffmpeg.get("generate")
    if generate:
        expected = schema["generate"]["properties"]["size"]["x-expected"]
        problem = _side_problem("workload.ffmpeg.generate.size", generate["size"], "x", expected)
        if problem:
            return problem
    expected = schema["transcode"]["properties"]["scale"]["x-expected"]
    problem = _side_problem("workload.ffmpeg.transcode.scale", ffmpeg["transcode"]["scale"], ":", expected)
    if problem:
        return problem
    mix = ffmpeg.get("mix")
    if mix and ffmpeg.get("total") is None:
        return "workload.ffmpeg.total: missing; a mix needs the number of tasks to draw"
    if mix and sum(mix.values()) <= 0:
        return "workload.ffmpeg.mix: every weight is 0; give at least one profile a weight above 0"
    return None


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} day{'s' if seconds != 86400 else ''}" if seconds >= 86400 else f"{seconds / 3600:g} h"


def _duration_s(text: str, key: str, above_zero: bool, maximum_s: float) -> float:
    """Seconds of a duration such as 30s or 1h; UsageError naming the key and the allowed range."""
    from tracekit.load.plan import parse_duration_ns

    try:
        seconds = parse_duration_ns(text, key) / 1e9
    except (ValueError, OverflowError):  # inf, nan: a float to round() that is none
        raise UsageError(f"{key} {text!r} is not a duration: use e.g. 60s, 500ms, 1m30s") from None
    if seconds > maximum_s or (above_zero and seconds <= 0):
        low = "above 0 and " if above_zero else ""
        raise UsageError(f"{key}: {text} is out of range: use {low}at most {_days(maximum_s)}")
    return seconds


def _load_problem(load: dict[str, Any]) -> str | None:
    """The HTTP load's own rules, checked now rather than when the run reaches its load (UsageError or a line)."""
    from tracekit.load.plan import MAX_RATE, parse_rate_plan

    at = "workload.http.load"
    if load["duration"] is not None:
        _duration_s(load["duration"], f"{at}.duration", True, MAX_LOAD_S)
    rate_text = str(load["rate"])
    try:
        plan = parse_rate_plan(rate_text, load["duration"], f"{at}.rate", f"{at}.duration")
    except (ValueError, OverflowError):  # a step's duration of inf or nan
        return f"{at}.rate {rate_text!r}: a step's duration is not a duration: use e.g. 50@30s,100@30s"
    if len(plan) > MAX_PLAN_STEPS:
        return f"{at}.rate: a plan of {len(plan)} steps; at most {MAX_PLAN_STEPS}"
    slowest = min(step.rate for step in plan)
    if slowest < MIN_RATE:
        return f"{at}.rate: {slowest:g} is out of range: use {MIN_RATE:g} to {MAX_RATE:,} requests/s"
    plan_s = sum(step.duration_ns for step in plan) / 1e9
    if plan_s > MAX_LOAD_S:
        return f"{at}.rate: the plan lasts {plan_s / 86400:.1f} days; at most {_days(MAX_LOAD_S)}"
    warmup_s = _duration_s(load["warmup"], f"{at}.warmup", False, MAX_WARMUP_S) if load["warmup"] is not None else 0.0
    _duration_s(load["timeout"], f"{at}.timeout", True, MAX_REQUEST_TIMEOUT_S)
    requests = warmup_s * plan[0].rate + sum(step.rate * step.duration_ns / 1e9 for step in plan)
    if requests > MAX_REQUESTS:
        return (f"{at}: {requests:,.0f} requests (rate times duration, warm-up included); at most "
                f"{MAX_REQUESTS:,} in a run: lower the rate or the duration")  # fmt: skip
    return None


def value_problem(document: dict[str, Any]) -> str | None:
    """What the schema cannot check, on a valid document with its defaults applied."""
    problem = _regex_problem(document["collectors"])
    if problem:
        return problem
    workload = document["workload"]
    if "ffmpeg" in workload:
        return _ffmpeg_problem(workload["ffmpeg"])
    http = workload["http"]
    try:
        problem = _load_problem(http["load"])
    except UsageError as exc:
        return str(exc)
    if problem:
        return problem
    if http.get("chain") and len(http.get("on") or ()) < 2:
        return "workload.http.chain: a chain needs at least two nodes in workload.http.on, in order"
    return None
