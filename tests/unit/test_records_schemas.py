"""The Arrow schemas (tracekit.trace.records) and the JSON Schemas agree."""

import pyarrow as pa
import pytest

from tracekit.schemas import load_schema
from tracekit.trace import records

JSON_TYPE_OF = {pa.int32(): "integer", pa.int64(): "integer", pa.float64(): "number", pa.string(): "string"}


def _json_types(prop: dict) -> set[str]:
    kind = prop.get("type")
    return set(kind) if isinstance(kind, list) else {kind}


@pytest.mark.parametrize(
    "arrow, schema_name, ordered",
    [
        (records.RAW_PROC, "raw/proc_sample", True),  # CSV columns follow the schema's order
        (records.PROC_METRICS, "cctf/proc_metrics", False),
    ],
)
def test_arrow_and_json_schema_agree(arrow, schema_name, ordered):
    schema = load_schema(schema_name)
    properties = schema["properties"]
    assert set(arrow.names) == set(properties)
    if ordered:
        assert list(arrow.names) == schema["required"]
    for field in arrow:
        types = _json_types(properties[field.name])
        assert JSON_TYPE_OF[field.type] in types, field.name
        assert ("null" in types) == field.nullable, field.name
        assert field.name in schema["required"]


def test_narrow_files_are_parts_of_proc_metrics():
    for name in ("cctf/proc_cpu", "cctf/proc_rss"):
        props = load_schema(name)["properties"]
        assert set(records.PROC_NARROW_PER_PROCESS) <= set(props)
    assert set(load_schema("cctf/proc_cpu")["properties"]) == {*records.PROC_NARROW_PER_PROCESS, *records.PROC_CPU_COLUMNS}
    assert set(load_schema("cctf/proc_rss")["properties"]) == {*records.PROC_NARROW_PER_PROCESS, *records.PROC_RSS_COLUMNS}


def test_opendc_required_columns_are_not_nullable():
    for schema, required in (
        (records.OPENDC_TASKS, records.OPENDC_TASKS_REQUIRED),
        (records.OPENDC_FRAGMENTS, records.OPENDC_FRAGMENTS_REQUIRED),
    ):
        for name in required:
            assert not schema.field(name).nullable, name
    assert records.OPENDC_TASKS.field("id").type == pa.int32()
    assert records.OPENDC_TASKS.field("mem_capacity").type == pa.int64()
    assert records.OPENDC_FRAGMENTS.field("cpu_usage").type == pa.float64()


def test_raw_host_agrees_with_the_host_sample_schema():
    schema = load_schema("raw/host_sample")
    properties = schema["properties"]
    # net is inferred (its fields are interface names); everything else is declared.
    assert {*records.RAW_HOST.names, "net"} == set(properties)
    assert set(records.RAW_HOST_REQUIRED) <= set(schema["required"])
    modes = load_schema("raw/host_sample")["$defs"]["cpu_ms"]["required"]
    assert list(records.CPU_MODES) == modes
    assert [f.name for f in records.RAW_HOST.field("cpu_ms").type] == modes
    disk = properties["disk"]
    assert [f.name for f in records.RAW_HOST.field("disk").type] == disk["required"]
    for field in records.RAW_HOST:
        types = _json_types(properties[field.name])
        if pa.types.is_struct(field.type) or pa.types.is_list(field.type):
            assert types & {"object", "array", None}, field.name
        else:
            assert JSON_TYPE_OF[field.type] in types, field.name
        assert ("null" in types) == field.nullable, field.name
