"""Arrow tables -> JSON Lines, formatted by Arrow kernels (no Python per row).

Millions of process samples go through here, and the text must be exactly
what ``json.dumps`` writes (a reader that loads and dumps a line again gets
the same bytes). Integers are cast to text directly. Strings are escaped by
``json.dumps`` once per DISTINCT value (``dictionary_encode``) and gathered
with ``take``: they repeat a lot (names, cgroups, task ids). Floats are
Arrow's shortest round-trip digits, laid out like Python's ``repr``; the few
values whose layout or rounding could differ are formatted by Python.
Columns that are constant per process can be formatted once per process and
passed as a ready ``lead``, so the per-row join handles the changing values
only.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

# Python's repr writes floats in [1e-4, 1e16) without an exponent, Arrow's
# cast below 1e10 only: values outside [1e-4, 1e10) are formatted by Python.
_FIXED_LOW, _FIXED_HIGH = 1e-4, 1e10


def row_numbers(count: int) -> pa.Array:
    """0, 1, ..., count - 1 as int64, made by a kernel (``pa.array(range(n))`` walks a Python range)."""
    return pc.subtract(pc.cumulative_sum(pc.fill_null(pa.nulls(count, pa.int64()), 1)), 1)


def shifted_down(array: pa.Array) -> pa.Array:
    """``array`` shifted down by one row, null first: row i holds row i - 1's value."""
    if len(array) == 0:
        return array
    return pa.concat_arrays([pa.nulls(1, array.type), array.slice(0, len(array) - 1)])


def json_text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Each value's JSON text ("null" for nulls), as a string array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if pa.types.is_integer(kind):
        texts = pc.cast(column, pa.string())
    elif pa.types.is_boolean(kind):
        texts = pc.cast(column, pa.string())  # "true" / "false"
    elif pa.types.is_floating(kind):
        return float_text(column)
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        # [v0,v1,...]: the values' texts joined (a null list is "null").
        offsets = column.offsets
        begin, end = offsets[0].as_py(), offsets[-1].as_py()
        values = json_text(column.values.slice(begin, end - begin))
        lists = type(column).from_arrays(pc.subtract(offsets, begin), values)
        texts = pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")
        texts = pc.if_else(pc.is_valid(column), texts, pa.scalar(None, pa.string()))
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # Few distinct strings (names, cgroups, ids): json.dumps escapes each once.
        encoded = pc.dictionary_encode(column)
        escaped = pa.array([json.dumps(value) for value in encoded.dictionary.to_pylist()], pa.string())
        texts = pc.take(escaped, encoded.indices)
    else:
        raise TypeError(f"no JSON formatting for Arrow type {kind}")
    return pc.fill_null(texts, "null") if texts.null_count else texts


def round_like_python(column: pa.ChunkedArray | pa.Array, digits: int) -> pa.Array:
    """Each float as Python's ``round(value, digits)`` gives it (float64; nulls stay null).

    ``round(x * 10**d) / 10**d`` is Python's ``round(x, d)`` unless x * 10**d
    lies within rounding error of a half (Python rounds the exact binary
    value): those few are rounded by Python.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = pc.cast(column, pa.float64())
    scale = float(10**digits)
    scaled = pc.multiply(values, scale)
    off_half = pc.abs(pc.subtract(pc.subtract(scaled, pc.floor(scaled)), 0.5))
    tolerance = pc.add(pc.multiply(pc.abs(scaled), 1e-15), 1e-9)
    hard = pc.fill_null(pc.or_(pc.invert(pc.is_finite(values)), pc.less_equal(off_half, tolerance)), False)
    rounded = pc.divide(pc.round(scaled, round_mode="half_to_even"), scale)
    if pc.any(hard).as_py():
        exact = [round(value, digits) for value in pc.filter(values, hard).to_pylist()]
        rounded = pc.replace_with_mask(rounded, hard, pa.array(exact, pa.float64()))
    return rounded


def float_text(column: pa.ChunkedArray | pa.Array, digits: int | None = None) -> pa.Array:
    """JSON text of floats, as ``json.dumps(round(value, digits))`` writes it ("null" for nulls).

    Arrow's cast gives the same shortest digits as Python's repr; it only
    leaves out the ".0" of whole numbers and switches to an exponent at 1e10:
    the values outside the fixed layout are formatted by Python.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = pc.cast(column, pa.float64()) if digits is None else round_like_python(column, digits)
    size = pc.abs(values)
    outside = pc.or_(pc.greater_equal(size, _FIXED_HIGH), pc.and_(pc.less(size, _FIXED_LOW), pc.not_equal(size, 0.0)))
    hard = pc.fill_null(pc.or_(pc.invert(pc.is_finite(values)), outside), False)
    texts = pc.cast(values, pa.string())
    texts = pc.if_else(pc.match_substring(texts, "."), texts, pc.binary_join_element_wise(texts, ".0", ""))
    if pc.any(hard).as_py():
        where = pc.indices_nonzero(hard)
        exact = [json.dumps(value, allow_nan=False) for value in pc.take(values, where).to_pylist()]
        texts = pc.replace_with_mask(texts, hard, pa.array(exact, pa.string()))
    return pc.fill_null(texts, "null") if texts.null_count else texts


def key_piece(name: str, first: bool) -> str:
    """The literal text before a field's value: ``{"name":`` or ``,"name":``."""
    return ("{" if first else ",") + json.dumps(name) + ":"


def object_lines(fields: Sequence[tuple[str, pa.Array | str]], lead: pa.Array | None = None) -> pa.Array:
    """One JSON object per row from (name, value text) pairs, newline-terminated.

    A value text is a string array (one JSON text per row) or a str, the
    same JSON text on every row (a constant, e.g. the node's name).
    ``lead``, when given, is each row's first fields already formatted
    (``{"k":v,...``).
    """
    pieces: list[pa.Array | str] = [] if lead is None else [lead]
    for index, (name, text) in enumerate(fields):
        key = key_piece(name, first=lead is None and index == 0)
        if isinstance(text, str):  # fold constants into the literal before the next value
            if pieces and isinstance(pieces[-1], str):
                pieces[-1] += key + text
            else:
                pieces.append(key + text)
        elif pieces and isinstance(pieces[-1], str):
            pieces[-1] += key
            pieces.append(text)
        else:
            pieces += [key, text]
    if pieces and isinstance(pieces[-1], str):
        pieces[-1] += "}\n"
    else:
        pieces.append("}\n")
    arrays = [p for p in pieces if not isinstance(p, str)]
    if not arrays:
        raise ValueError("object_lines needs at least one column of values")
    return pc.binary_join_element_wise(*pieces, "")


def joined_fields(table: pa.Table, names: Sequence[str], first: bool) -> pa.Array:
    """``"k1":v1,"k2":v2`` for each row (with a leading '{' or ',')."""
    pieces: list[pa.Array | str] = []
    for index, name in enumerate(names):
        pieces += [key_piece(name, first and index == 0), json_text(table.column(name))]
    return pc.binary_join_element_wise(*pieces, "")


def jsonl_lines(table: pa.Table, lead: pa.Array | None = None) -> pa.Array:
    """One JSON object per row, newline-terminated, keys in column order.

    ``lead``, when given, is each row's first fields already formatted
    (``{"k":v,...``, from ``joined_fields`` of a small per-group table gathered
    with ``take``); the table's columns follow it.
    """
    return object_lines([(name, json_text(table.column(name))) for name in table.column_names], lead=lead)


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


class BackgroundWriter:
    """Runs writes (``write_lines``, a Parquet ``write_table``) on one thread, in submission order.

    Arrow kernels and file writes release the GIL, so on two cores the next
    slice is formatted while the last one is written. At most ``depth``
    writes wait (bounded memory). An error in a write is raised by the next
    ``submit`` or by ``close``.
    """

    def __init__(self, depth: int = 3) -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tracekit-writer", daemon=True)
        self._thread.start()

    def submit(self, write: Callable[..., Any], *args: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((write, args))

    def write_lines(self, lines: pa.Array | pa.ChunkedArray, out: BinaryIO) -> None:
        self.submit(write_lines, lines, out)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            write, args = item
            if self._error is None:  # after an error, drain without writing
                try:
                    write(*args)
                except BaseException as exc:  # handed to the caller
                    self._error = exc
            del item, write, args  # drop the slice now, not when the next one arrives

    def close(self) -> None:
        """Wait for every write; raise the first error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error
