"""The Arrow schemas (tracekit.trace.records) and the JSON Schemas agree."""

import pyarrow as pa
import pytest

from tracekit.collect.host import HOST_CPUS_CSV_COLUMNS, HOST_CSV_COLUMNS, HOST_NET_CSV_COLUMNS
from tracekit.collect.process import PROC_CSV_COLUMNS
from tracekit.collect.taskcgroups import CGROUP_CSV_COLUMNS
from tracekit.schemas import load_schema
from tracekit.trace import records

JSON_TYPE_OF = {pa.int32(): "integer", pa.int64(): "integer", pa.float64(): "number", pa.string(): "string"}


def _json_types(prop: dict) -> set[str]:
    kind = prop.get("type")
    return set(kind) if isinstance(kind, list) else {kind}


@pytest.mark.parametrize(
    "arrow, schema_name, ordered",
    [
        # CSV columns follow the schema's order
        (records.RAW_PROC, "raw/proc_sample", True),
        (records.RAW_HOST, "raw/host_sample", True),
        (records.RAW_HOST_CPUS, "raw/host_cpu_sample", True),
        (records.RAW_HOST_NET, "raw/host_net_sample", True),
        (records.RAW_CGROUP, "raw/cgroup_sample", True),
        (records.PROC_METRICS, "cctf/proc_metrics", False),
        (records.HOST_METRICS, "cctf/host_metrics", True),  # the JSON Lines copy writes them in this order
        (records.LINK_METRICS, "cctf/link_metrics", True),
        (records.TASK_METRICS, "cctf/task_metrics", True),
        (records.CONTENTION, "cctf/contention", True),
        (records.SWEEP_SUMMARY, "sweep/summary_row", True),  # the swept keys' columns besides
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
        if pa.types.is_list(field.type):
            assert types == {"array"}, field.name
            assert JSON_TYPE_OF[field.type.value_type] in _json_types(properties[field.name]["items"]), field.name
        else:
            assert JSON_TYPE_OF[field.type] in types, field.name
        assert ("null" in types) == field.nullable, field.name
        assert field.name in schema["required"]


def test_the_collector_writes_the_declared_columns():
    assert tuple(records.RAW_PROC.names) == PROC_CSV_COLUMNS
    assert tuple(records.RAW_HOST.names) == HOST_CSV_COLUMNS
    assert tuple(records.RAW_HOST_CPUS.names) == HOST_CPUS_CSV_COLUMNS
    assert tuple(records.RAW_HOST_NET.names) == HOST_NET_CSV_COLUMNS
    assert tuple(records.RAW_CGROUP.names) == CGROUP_CSV_COLUMNS


def test_proc_metrics_starts_with_the_per_process_fields():
    lead = records.PROC_METRICS_PER_PROCESS
    assert tuple(records.PROC_METRICS.names[: len(lead)]) == lead


def test_every_cctf_table_has_a_sort_order_of_its_columns():
    assert set(records.CCTF_SORT_KEYS) == set(records.CCTF_TABLES)
    for name, keys in records.CCTF_SORT_KEYS.items():
        assert set(keys) <= set(records.CCTF_TABLES[name].names), name


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


def test_cpu_modes_are_the_collectors():
    modes = [name.removesuffix("_ms") for name in load_schema("raw/host_cpu_sample")["required"][2:]]
    assert list(records.CPU_MODES) == modes


def test_the_audit_fields_are_the_schemas():
    schema = load_schema("cctf/audit")
    assert tuple(schema["required"]) == records.AUDIT_FIELDS
    assert tuple(schema["properties"]) == records.AUDIT_FIELDS
    listed = schema["properties"]["rejected_listed"]["items"]
    assert tuple(listed["properties"]["kind"]["enum"]) == tuple(records.REJECTED_KINDS)


def test_every_json_schema_is_valid_against_its_meta_schema():
    """Checked here, once: the validators (tracekit.schemas.validator) take the shipped schemas as they are."""
    import jsonschema

    from tracekit.schemas import schema_dir

    paths = sorted(schema_dir().rglob("*.schema.json"))
    assert len(paths) > 20
    for path in paths:
        schema = load_schema(str(path.relative_to(schema_dir())).removesuffix(".schema.json"))
        jsonschema.validators.validator_for(schema).check_schema(schema)
