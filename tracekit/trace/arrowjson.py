"""Arrow tables -> JSON Lines, formatted by Arrow kernels (no Python per row).

Millions of process samples go through here. A column's JSON text is made
once per DISTINCT value (``dictionary_encode``) and gathered with ``take``:
sample columns repeat a lot (one timestamp per tick, one value per process).
Columns that are constant per process can be formatted once per process and
passed as a ready ``lead``, so the per-row join handles the changing values
only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc


def json_text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Each value's JSON text ("null" for nulls), as a string array.

    Integers, booleans and strings only (floats would need care with NaN).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    dictionary = encoded.dictionary
    kind = dictionary.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # Few distinct strings (names, cgroups, ids): json.dumps escapes them.
        texts = pa.array([json.dumps(value) for value in dictionary.to_pylist()], pa.string())
    elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        texts = pc.cast(dictionary, pa.string())
    else:
        raise TypeError(f"no JSON formatting for Arrow type {kind}")
    return pc.fill_null(pc.take(texts, encoded.indices), "null")


def joined_fields(table: pa.Table, names: Sequence[str], first: bool) -> pa.Array:
    """``"k1":v1,"k2":v2`` for each row (with a leading '{' or ',')."""
    pieces: list[pa.Array | str] = []
    for index, name in enumerate(names):
        lead = "{" if first and index == 0 else ","
        pieces += [f"{lead}{json.dumps(name)}:", json_text(table.column(name))]
    return pc.binary_join_element_wise(*pieces, "")


def jsonl_lines(table: pa.Table, lead: pa.Array | None = None) -> pa.Array:
    """One JSON object per row, newline-terminated, keys in column order.

    ``lead``, when given, is each row's first fields already formatted
    (``{"k":v,...``, from ``joined_fields`` of a small per-group table gathered
    with ``take``); the table's columns follow it.
    """
    if lead is None:
        pieces: list[pa.Array | str] = [joined_fields(table, table.column_names, first=True)]
    else:
        pieces = [lead]
        for name in table.column_names:
            pieces += [f",{json.dumps(name)}:", json_text(table.column(name))]
    pieces.append("}\n")
    return pc.binary_join_element_wise(*pieces, "")


def write_lines(lines: pa.Array | pa.ChunkedArray, out: BinaryIO) -> None:
    """Write newline-terminated strings back to back, without copying."""
    chunks = lines.chunks if isinstance(lines, pa.ChunkedArray) else [lines]
    for chunk in chunks:
        if len(chunk):
            out.write(_data_bytes(chunk))


def _data_bytes(strings: pa.Array) -> memoryview:
    offset_type = pa.int64() if pa.types.is_large_string(strings.type) else pa.int32()
    _, offsets_buffer, data_buffer = strings.buffers()
    offsets = pa.Array.from_buffers(offset_type, len(strings) + 1, [None, offsets_buffer], offset=strings.offset)
    begin, end = offsets[0].as_py(), offsets[len(strings)].as_py()
    return memoryview(data_buffer)[begin:end]
