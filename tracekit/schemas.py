"""The JSON Schemas in ``schemas/``: the master copy of every record shape.

Installed wheels carry them as ``tracekit/_schemas``; a source checkout (and an
editable install) reads the repository's ``schemas/`` folder.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from tracekit.errors import TracekitError


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
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validation_errors(name: str, record: Any) -> list[str]:
    """Human-readable problems of ``record`` against schema ``name`` (empty: valid)."""
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(record)'}: {error.message}"
        for error in validator(name).iter_errors(record)
    ]
