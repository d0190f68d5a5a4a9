"""An experiment document -> its first problem, as one line a person can act on (or None).

input:  the document as read (tracekit.experiment.strict_yaml) with the -e
        overrides applied, and the text of each unquoted scalar that YAML
        did not read as text (``0x0`` read as the number 0)
output: None, or ``<key>: <what is wrong>; <what is allowed>``

The first problem wins, in this order: a number that is not a number
(``.nan`` slips past every bound of a JSON Schema), then
the experiment schema (schemas/experiment.schema.json with each workload
kind's part: every number, text and list is bounded), then what a schema
cannot say (``value_problem``, on the document with its defaults): regexes
that must compile (the collectors use Python's ``re``), and each kind's own
rules (tracekit.workloads: an ffmpeg size up to 8192, an HTTP load's rates
and durations within their bounds, ...).
"""

from __future__ import annotations

import difflib
import math
import re
from functools import cache
from typing import Any

import jsonschema

from tracekit.experiment.strict_yaml import KeyPath

Unquoted = dict[KeyPath, tuple[str, str | None]]  # path -> (text as written, the -e key it came from)


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
    from tracekit.workloads import experiment_schema

    return _strict(experiment_schema())


def _strict(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
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
    if kind == "oneOf" and error.context:  # the alternative of the value's own type says best what is wrong
        fitting = [e for e in error.context if _fits(error.validator_value[e.schema_path[0]], instance)]
        if fitting:
            return _describe(sorted(fitting, key=_sort_key)[0], unquoted)
    if kind == "oneOf" and "x-expected" in schema:  # a kind's alternatives (e.g. ffmpeg's inputs or generate)
        return f"{at}: give {schema['x-expected']}"
    if kind == "minProperties" and at == "workload":
        from tracekit.workloads import kinds

        named = "; ".join(f"'{name}' ({kind.describes})" for name, kind in kinds().items())
        return f"workload: give exactly one kind: {named}"
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


_JSON_TYPES = {"object": dict, "array": list, "string": str}


def _fits(branch: dict[str, Any], instance: Any) -> bool:
    """A oneOf branch is for values of the instance's type (object, array, string)."""
    kinds = branch.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return any(isinstance(instance, _JSON_TYPES[k]) for k in kinds if k in _JSON_TYPES)


def _sort_key(error: jsonschema.ValidationError) -> tuple[int, list[str]]:
    path = list(error.absolute_path)
    return -len(path), [str(part) for part in path]


def schema_problem(document: Any, unquoted: Unquoted, schema: dict[str, Any] | None = None) -> str | None:
    """Numbers that are not numbers, then the schema's most specific error (the deepest, then the first).

    ``schema``: another than the experiment's (a workload section on its own: tracekit.workloads.tasks_of).
    """
    problem = _not_a_number(document)
    if problem:
        return problem
    errors = sorted((_validator() if schema is None else _strict(schema)).iter_errors(document), key=_sort_key)
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


def value_problem(document: dict[str, Any]) -> str | None:
    """What the schema cannot check, on a valid document with its defaults applied: the collectors' regexes,
    then the workload kind's own rules (tracekit.workloads)."""
    from tracekit.workloads import kind

    problem = _regex_problem(document["collectors"])
    if problem:
        return problem
    [(name, section)] = document["workload"].items()
    return kind(name).problem(section)
