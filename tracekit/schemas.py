"""The JSON Schemas in ``schemas/``: the master copy of every record shape.

Installed wheels carry them as ``tracekit/_schemas``; a source checkout (and an
editable install) reads the repository's ``schemas/`` folder.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracekit.errors import TracekitError

if TYPE_CHECKING:
    import jsonschema


def schema_dir() -> Path:
    packaged = Path(__file__).parent / "_schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """``load_schema("raw/proc_sample")`` -> the parsed schema."""
    path = schema_dir() / f"{name}.schema.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TracekitError(f"schema {name!r} not found at {path}; is the installation complete?") from None


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    import jsonschema  # here, not at import: the Arrow schemas read their fields' units through load_schema

    schema = load_schema(name)
    # Not checked against its meta-schema here (a test does, for every shipped schema): that check costs
    # more than validating what a parse writes.
    return jsonschema.validators.validator_for(schema)(schema)


def validation_errors(name: str, record: Any) -> list[str]:
    """Human-readable problems of ``record`` against schema ``name`` (empty: valid)."""
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(record)'}: {error.message}"
        for error in validator(name).iter_errors(record)
    ]


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with the schema's defaults filled in where it leaves a property out, recursively."""
    if schema.get("type") == "object" or "properties" in schema:
        value = dict(value or {})
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                value[key] = with_defaults(sub, value[key])
            elif "default" in sub:
                value[key] = with_defaults(sub, copy.deepcopy(sub["default"]))
    return value


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with each local ``{"$ref": "#/$defs/name", ...}`` replaced by that definition (the
    keywords beside the $ref added), and no ``$defs``: a part that can be placed inside another schema,
    and walked (defaults, bounds) without following references."""
    definitions = schema.get("$defs", {})

    def inline(value: Any) -> Any:
        if isinstance(value, dict):
            reference = value.get("$ref")
            if isinstance(reference, str):
                name = reference.removeprefix("#/$defs/")
                if name == reference or name not in definitions:
                    raise TracekitError(f"schema {schema.get('$id')}: only local #/$defs/ references are inlined, not {reference!r}")
                return inline({**definitions[name], **{k: v for k, v in value.items() if k != "$ref"}})
            return {key: inline(member) for key, member in value.items() if key != "$defs"}
        if isinstance(value, list):
            return [inline(member) for member in value]
        return value

    return inline(schema)
