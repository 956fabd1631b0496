"""Bulk loads of the online store: Portrait's own writer of Feast's online layout (issue 16).

Feast's ``materialize`` turns every value into a protobuf object in Python and, on SQLite, upserts one row per
customer and feature. :func:`load` writes the same bytes column-wise instead: each feature column's serialized
``Value`` messages are built with numpy from the Arrow column (no protobuf object per value), Redis gets them as
pre-built RESP commands on one pipelined connection, SQLite as multi-row ``INSERT`` statements in large
transactions (Python's sqlite3 still takes one bytes and one text object per row, built by slicing, not in a
loop). A second thread prepares the next batch while one is written. Feast's ``get_online_features`` reads back
exactly what its own materialize would have written (``tests/features/test_bulk_load.py`` and
``tests/production/test_bulk_load_redis.py`` compare the two value for value, and the SQLite rows and Redis
hashes byte for byte), and the serving vectors (:class:`features.store.VectorLayout`) are built in the same
pass, from the same columns. The materialized intervals are recorded in the registry as Feast's materialize
records them (a file registry is written atomically: :func:`features.feast_internals.atomic_registry_writes`).

What a load holds
-----------------
The *target* of a load is what Feast's materialize over ``[start, end]`` leaves in the store: per customer and
view, the row with the latest event timestamp (then created timestamp) in the window, read with DuckDB from the
views' Parquet sources. Views fed by a push source (real-time features) are not bulk-loaded: their rows are
pushed one event at a time and Feast's own materialize keeps its timestamp check for them.

Incremental loads
-----------------
Every load keeps a 16-byte digest of each customer's serialized rows (all loaded views, values and timestamps)
in ``<feast_dir>/loads/<project>.<load id>.parquet``. The next load compares against it and writes only the
customers whose digest changed (and removes those who left the feature tables). It starts over with a full
load when the store's marker is missing (a Redis that restarted empty), names another load, layout or DuckDB
version, or when the registry shows a materialization this loader did not make (``feast materialize``).

Switching a load in
-------------------
Serving must not notice a load, and a load that dies (SIGKILL) must leave the previous values served.

* **SQLite** (the database is put in WAL mode, so readers never wait for the loader): a full load, or an
  incremental one changing more than ``settings.online_load_rebuild_share`` of the customers, writes every
  view's table (and the vectors') beside the live one, ``<table>__load``, in sorted key order, then swaps them
  in with ``ALTER TABLE ... RENAME`` in one transaction, with the marker. Smaller incremental loads update the
  live tables in one transaction. Either way Feast's tables keep their names, schema and index, so Feast reads
  and writes them as before. The previous tables are dropped afterwards; the file keeps their pages for the
  next load (it does not shrink).
* **Redis** keeps one hash per customer that every view shares (the real-time view's pushes land there too), so
  a load cannot be written beside it and renamed in: an atomic rename of a million keys blocks Redis for
  seconds at a million customers and would drop fields pushed meanwhile. The switch is a pointer instead.
  The serving vectors, which are what serving reads, live in two slots (``__precomputed__<service>`` and
  ``..._b``, two hash fields); a load writes every customer's vector into the slot not in use, then flips the
  pointer: one ``HSET`` of the sentinel entity's hash records the new slot's sentinel, retires the old one and
  writes the marker, atomically.
  :func:`features.store.read_vectors` follows the pointer (a reader that meets a retired sentinel switches
  slots and reads again). Only after the flip are the changed customers' Feast rows rewritten in place, one
  ``HSET`` per customer (all views at once) -- **the trade-off**: Feast's ``get_online_features`` (the Feast
  tools, and serving's per-view fallback for a customer without a vector) sees those rows change customer by
  customer over the seconds of that phase, never a half-written customer, and keeps the previous values if the
  load dies before the flip; a load that dies after it leaves the marker saying so, and the next load rewrites
  every customer's rows. The serving vectors are a complete new slot every load (the switch needs it); the
  Feast rows are written for changed customers only. A store holding no load (the first one, or a Redis that
  lost its data) has nothing to keep: rows and vectors are written in place in one pass, then the marker.

The marker
----------
A row of the synthetic view ``__portrait_load__`` for the sentinel entity (:data:`features.store.SIGNATURE_ID`),
so in Redis a field of the same hash as the vectors' sentinel: which load the store holds (generation, id,
slot, layout digest, the registry's materialization signature, whether the Feast rows are complete).
Serving's readiness fails when it is missing (:func:`features.store.load_marker`): a store that lost its data.

Limits: one string join key, Feast's default layouts (:func:`features.feast_internals.bulk_unsupported`), one
loader at a time per store.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sqlite3
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureService, FeatureStore, FeatureView
from feast.protos.feast.core.PrecomputedFeatureVector_pb2 import PrecomputedFeatureVector
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from features import feast_internals as fi
from features import store as fs
from portrait.files import atomic_path
from portrait.settings import Settings

logger = logging.getLogger(__name__)

LOAD_FORMAT = "portrait-load/1"
"""Bumped whenever what a load writes changes: a store loaded in another format is loaded in full again."""
STAGE_SUFFIX = "__load"
OLD_SUFFIX = "__previous"
RETIRED = "retired"
SWITCH_GRACE_S = 2.0
"""Redis: how long the previous vector slot stays readable after the flip (a read in flight finishes in it)."""

# ---- byte strings, column-wise -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Blobs:
    """One byte string per row, packed: row ``i`` is ``data[offsets[i]:offsets[i + 1]]`` (``offsets[0] == 0``)."""

    offsets: np.ndarray  # int64, n + 1
    data: np.ndarray  # uint8
    width: int | None = None  # set when every row has this length (concat then scatters in 2-D)
    row: bytes | None = None  # set when every row is these bytes (concat merges neighbouring constants)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def of_lengths(cls, lengths: np.ndarray, data: np.ndarray) -> Blobs:
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        uniform = len(lengths) > 0 and bool((lengths == lengths[0]).all())
        return cls(offsets, data, int(lengths[0]) if uniform else None)

    @classmethod
    def const(cls, value: bytes, n: int) -> Blobs:
        row = np.frombuffer(value, dtype=np.uint8)
        return cls(np.arange(n + 1, dtype=np.int64) * len(row), np.tile(row, n), len(row), value)

    @classmethod
    def fixed(cls, matrix: np.ndarray) -> Blobs:
        """Row ``i``: ``matrix[i]`` (a 2-D uint8 array)."""
        n, width = matrix.shape
        return cls(np.arange(n + 1, dtype=np.int64) * width, np.ascontiguousarray(matrix).reshape(-1), width)

    @classmethod
    def ragged(cls, matrix: np.ndarray, lengths: np.ndarray) -> Blobs:
        """Row ``i``: the first ``lengths[i]`` bytes of ``matrix[i]``."""
        lengths = lengths.astype(np.int64)
        if len(lengths) and (lengths == lengths[0]).all():  # every row as long: no mask needed
            return cls.fixed(np.ascontiguousarray(matrix[:, : lengths[0]]))
        keep = np.arange(matrix.shape[1]) < lengths[:, None]
        return cls.of_lengths(lengths, matrix[keep])

    @classmethod
    def from_list(cls, values: Sequence[bytes]) -> Blobs:
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
        return cls.of_lengths(lengths, np.frombuffer(b"".join(values), dtype=np.uint8))

    @classmethod
    def from_arrow(cls, array: pa.Array | pa.ChunkedArray) -> Blobs:
        """The bytes of a string or binary column (a null is an empty row)."""
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        array = array.cast(pa.large_binary())
        if array.null_count:
            array = pc.fill_null(array, pa.scalar(b"", pa.large_binary()))
        n = len(array)
        _, offsets_buf, data_buf = array.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[array.offset : array.offset + n + 1]
        data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
        return cls(offsets - offsets[0], data[offsets[0] : offsets[-1]])

    def take(self, rows: np.ndarray) -> Blobs:
        lengths = self.lengths[rows]
        out = Blobs.of_lengths(lengths, np.empty(0, np.uint8))
        source = np.arange(out.offsets[-1], dtype=np.int64) + np.repeat(
            self.offsets[:-1][rows] - out.offsets[:-1], lengths
        )
        return Blobs(out.offsets, self.data[source])

    def expand(self, rows: np.ndarray, n: int) -> Blobs:
        """These rows placed at positions ``rows`` (increasing) of ``n`` rows, the others empty."""
        lengths = np.zeros(n, dtype=np.int64)
        lengths[rows] = self.lengths
        return Blobs.of_lengths(lengths, self.data)

    def tolist(self) -> list[bytes]:
        array = pa.Array.from_buffers(
            pa.large_binary(), len(self), [None, pa.py_buffer(self.offsets), pa.py_buffer(self.data)]
        )
        return array.to_pylist()

    def digests(self) -> list[bytes]:
        """A 16-byte BLAKE2b digest of every row."""
        view = memoryview(self.data.tobytes())
        ends = self.offsets.tolist()
        return [
            hashlib.blake2b(view[a:b], digest_size=16).digest()
            for a, b in zip(ends[:-1], ends[1:], strict=True)
        ]


def concat(*parts: Blobs) -> Blobs:
    """Row-wise concatenation: row ``i`` is ``parts[0][i] + parts[1][i] + ...``."""
    merged: list[Blobs] = []
    for part in parts:  # neighbouring constants become one (fewer, larger scatters)
        if merged and part.row is not None and merged[-1].row is not None:
            merged[-1] = Blobs.const(merged[-1].row + part.row, len(part))
        else:
            merged.append(part)
    parts = tuple(merged)
    lengths = [part.lengths for part in parts]
    out = Blobs.of_lengths(np.sum(lengths, axis=0), np.empty(0, np.uint8))
    if all(part.row is not None for part in parts):
        return Blobs.const(b"".join(part.row for part in parts if part.row is not None), len(parts[0]))
    data = np.empty(out.offsets[-1], dtype=np.uint8)
    start = out.offsets[:-1].copy()
    for part, length in zip(parts, lengths, strict=True):
        size = int(part.offsets[-1])
        if size and part.width:
            data[start[:, None] + np.arange(part.width)] = part.data.reshape(-1, part.width)
        elif size:
            destination = np.arange(size, dtype=np.int64)
            destination += np.repeat(start - part.offsets[:-1], length)
            data[destination] = part.data
        start += length
    return Blobs(out.offsets, data, out.width)


def varint(values: np.ndarray) -> Blobs:
    """Protobuf base-128 varints of integers (negative int64 as their 10-byte two's complement)."""
    v = np.asarray(values)
    v = v.view(np.uint64) if v.dtype == np.int64 else v.astype(np.uint64)
    size = np.ones(len(v), dtype=np.int64)
    for k in range(1, 10):
        size += v >= np.uint64(1 << (7 * k))
    matrix = np.empty((len(v), 10), dtype=np.uint8)
    for k in range(10):
        group = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        matrix[:, k] = group | np.where(k < size - 1, 0x80, 0).astype(np.uint8)
    return Blobs.ragged(matrix, size)


def varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decimal(values: np.ndarray) -> Blobs:
    """ASCII decimal digits of non-negative integers (RESP lengths and counts)."""
    v = np.asarray(values, dtype=np.int64)
    if len(v) and (v == v[0]).all():
        return Blobs.const(str(int(v[0])).encode(), len(v))
    width = max(1, len(str(int(v.max())))) if len(v) else 1
    matrix = np.empty((len(v), width), dtype=np.uint8)
    rest = v.copy()
    for j in range(width - 1, -1, -1):
        matrix[:, j] = 48 + rest % 10
        rest //= 10
    size = np.ones(len(v), dtype=np.int64)
    for j in range(1, width):
        size += v >= 10**j
    keep = np.arange(width) >= width - size[:, None]
    return Blobs.of_lengths(size, matrix[keep])


def total(pieces: Sequence[Blobs]) -> np.ndarray:
    """The length of each row of ``concat(*pieces)``, without building it."""
    return np.sum([piece.lengths for piece in pieces], axis=0)


def delimited_pieces(tag: int, pieces: Sequence[Blobs]) -> list[Blobs]:
    """A length-delimited protobuf field over the concatenation of ``pieces``: the tag byte, the length as a
    varint, the pieces (left unconcatenated, so that a message is assembled in one pass at the end)."""
    return [Blobs.const(bytes([tag]), len(pieces[0])), varint(total(pieces)), *pieces]


def delimited(tag: int, payload: Blobs) -> Blobs:
    """A length-delimited protobuf field: the tag byte, the payload's length as a varint, the payload."""
    return concat(*delimited_pieces(tag, [payload]))


def where(blobs: Blobs, keep: np.ndarray) -> Blobs:
    """``blobs`` with the rows where ``keep`` is False emptied."""
    rows = np.flatnonzero(keep)
    return blobs if len(rows) == len(blobs) else blobs.take(rows).expand(rows, len(blobs))


# ---- Feast values, column-wise -----------------------------------------------------------------------------

_NUMERIC = frozenset({ValueType.INT32, ValueType.INT64, ValueType.FLOAT, ValueType.DOUBLE})


@dataclass
class Column:
    """One feature's values as Feast serializes them (``ValueProto.SerializeToString``; ``b""`` for a null)."""

    values: Blobs
    numbers: np.ndarray | None  # float64, NaN for a null: what the packed serving vectors hold
    text: Callable[[], list[str | None]]  # SQLite's value_text column


def _texts(values: list[Any], null: np.ndarray, form: Callable[[Any], str]) -> Callable[[], list[str | None]]:
    def build() -> list[str | None]:
        out: list[str | None] = list(map(form, values))
        for i in np.flatnonzero(null).tolist():
            out[i] = None
        return out

    return build


def encode(array: pa.Array | pa.ChunkedArray, value_type: ValueType) -> Column:
    """The column's values serialized as Feast's materialize serializes them.

    Feast converts ``column.to_numpy(zero_copy_only=False)`` with ``python_values_to_proto_values``: a null or a
    NaN becomes an empty ``Value``, a float column of an integer feature is truncated, an integer column with
    nulls passes through float64 (the same for integers below 2**53). Types without a vectorised path here go
    through Feast's own conversion, value by value.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    n = len(array)
    numeric_source = pa.types.is_integer(kind) or pa.types.is_float64(kind)
    if value_type in (ValueType.DOUBLE, ValueType.FLOAT) and numeric_source:
        x = array.to_numpy(zero_copy_only=False).astype(np.float64)
        null = np.isnan(x)
        x[null] = np.nan
        if value_type == ValueType.DOUBLE:
            matrix = np.empty((n, 9), dtype=np.uint8)
            matrix[:, 0] = 0x29  # field 5 (double_val), fixed64
            matrix[:, 1:] = x.astype("<f8").view(np.uint8).reshape(n, 8)
            values, numbers = Blobs.ragged(matrix, np.where(null, 0, 9)), x
        else:
            single = x.astype("<f4")
            matrix = np.empty((n, 5), dtype=np.uint8)
            matrix[:, 0] = 0x35  # field 6 (float_val), fixed32
            matrix[:, 1:] = single.view(np.uint8).reshape(n, 4)
            values, numbers = Blobs.ragged(matrix, np.where(null, 0, 5)), single.astype(np.float64)
        return Column(values, numbers, _texts(numbers.tolist(), null, repr))
    if value_type in (ValueType.INT64, ValueType.INT32) and numeric_source:
        raw = array.to_numpy(zero_copy_only=False)
        if raw.dtype.kind == "f":
            null = np.isnan(raw)
            ints = np.trunc(np.where(null, 0.0, raw)).astype(np.int64)
        else:
            null = np.zeros(n, dtype=bool)
            ints = raw.astype(np.int64)
        tag = 0x20 if value_type == ValueType.INT64 else 0x18  # fields 4 / 3, varint
        values = where(concat(Blobs.const(bytes([tag]), n), varint(ints)), ~null)
        numbers = np.where(null, np.nan, ints.astype(np.float64))
        return Column(values, numbers, _texts(ints.tolist(), null, str))
    if value_type == ValueType.BOOL and pa.types.is_boolean(kind):
        null = array.is_null().to_numpy(zero_copy_only=False)
        flags = pc.fill_null(array, False).to_numpy(zero_copy_only=False).astype(np.uint8)
        matrix = np.stack([np.full(n, 0x38, dtype=np.uint8), flags], axis=1)  # field 7 (bool_val)
        return Column(
            Blobs.ragged(matrix, np.where(null, 0, 2)), None, _texts(flags.astype(bool).tolist(), null, str)
        )
    textual = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if (value_type == ValueType.STRING and textual) or (
        value_type == ValueType.BYTES and (pa.types.is_binary(kind) or pa.types.is_large_binary(kind))
    ):
        null = array.is_null().to_numpy(zero_copy_only=False)
        tag = 0x12 if value_type == ValueType.STRING else 0x0A  # fields 2 / 1, length-delimited
        values = where(delimited(tag, Blobs.from_arrow(array)), ~null)
        text = array.to_pylist if value_type == ValueType.STRING else (lambda: [None] * n)
        return Column(values, None, text)
    return _encode_with_feast(array, value_type)


def _encode_with_feast(array: pa.Array, value_type: ValueType) -> Column:
    from feast.type_map import python_values_to_proto_values

    protos = python_values_to_proto_values(array.to_numpy(zero_copy_only=False), value_type)
    numbers = None
    if value_type in _NUMERIC:
        numbers = np.array(
            [np.nan if (k := p.WhichOneof("val")) is None else float(getattr(p, k)) for p in protos],
            dtype=np.float64,
        )
    return Column(
        Blobs.from_list([p.SerializeToString() for p in protos]),
        numbers,
        lambda: [fi.sqlite_text(p) for p in protos],
    )


def _per_unique(us: np.ndarray, convert: Callable[[int], Any]) -> tuple[list[Any], np.ndarray]:
    """``convert`` of each distinct value of ``us`` and where each row's value sits in that list."""
    unique, inverse = np.unique(us, return_inverse=True)
    return [convert(int(u)) for u in unique.tolist()], inverse.reshape(-1)


def _naive_utc(us: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=us)


def sqlite_epoch(us: int) -> int:
    """The integer SQLite's online store keeps for an event time (Feast's datetime adapter: the naive UTC
    datetime's ``timestamp()``, i.e. interpreted in the local time zone, truncated to seconds)."""
    return int(_naive_utc(us).timestamp())


def redis_timestamp(us: int) -> bytes:
    """The ``_ts:<view>`` field Redis' online store writes for an event time."""
    stamp = Timestamp()
    stamp.FromDatetime(_naive_utc(us).replace(tzinfo=UTC))
    return stamp.SerializeToString()


def read_back_timestamp(us: int, backend: str) -> bytes:
    """The serialized Timestamp that ``precompute_vectors`` records for a view's event time, which it takes from
    ``online_read``: SQLite gives it back to the second (local-time round trip), Redis through a float."""
    stamp = Timestamp()
    if backend == "sqlite":
        stamp.FromDatetime(datetime.fromtimestamp(sqlite_epoch(us)).replace(tzinfo=UTC))
    else:
        parsed = Timestamp.FromString(redis_timestamp(us))
        stamp.FromDatetime(datetime.fromtimestamp(parsed.seconds + parsed.nanos / 1_000_000_000.0, tz=UTC))
    return stamp.SerializeToString()


# ---- what to load ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewSpec:
    """A batch feature view as the loader reads it: its Parquet source and its features' value types."""

    name: str
    join_key: str
    features: tuple[tuple[str, ValueType], ...]
    path: str
    timestamp: str
    created: str | None

    @classmethod
    def of(cls, view: FeatureView) -> ViewSpec:
        source = view.batch_source
        join_keys = [column.name for column in view.entity_columns]
        if len(join_keys) != 1:
            raise ValueError(f"view {view.name}: the bulk loader handles one join key, not {join_keys}")
        return cls(
            name=view.name,
            join_key=join_keys[0],
            features=tuple((f.name, f.dtype.to_value_type()) for f in view.features),
            path=source.path,
            timestamp=source.timestamp_field,
            created=source.created_timestamp_column or None,
        )


def bulk_loadable(view: FeatureView) -> bool:
    """A batch view over Parquet files without a field mapping or a push source: what :func:`load` reads."""
    from feast import FileSource

    source = view.batch_source
    return (
        view.stream_source is None
        and isinstance(source, FileSource)
        and not source.field_mapping
        and str(source.path).endswith(".parquet")
        and len(view.entity_columns) == 1
    )


@dataclass
class Target:
    """Per customer (in serialized-key order) and view, the latest row of the window: what a load writes."""

    ids: pa.Array  # string
    views: dict[str, pa.Table]  # aligned with ids; "__ts" / "__created": event / created time in microseconds

    def __len__(self) -> int:
        return len(self.ids)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_target(specs: Sequence[ViewSpec], start: datetime, end: datetime) -> Target:
    """Every view's latest row per customer with ``start <= event time <= end`` (Feast's window, both ends
    included), aligned on one customer order: the order of Feast's serialized entity keys (length first), which
    is the SQLite tables' key order."""
    import duckdb

    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        for i, spec in enumerate(specs):
            ts, created = _quote(spec.timestamp), _quote(spec.created) if spec.created else None
            order = f"{ts} DESC" + (f", {created} DESC" if created else "")
            columns = ", ".join(_quote(name) for name, _ in spec.features)
            con.execute(
                f"CREATE TEMP TABLE v{i} AS SELECT {_quote(spec.join_key)}::VARCHAR AS __id, {columns}, "
                f"epoch_us({ts}) AS __ts, {f'epoch_us({created})' if created else 'NULL::BIGINT'} AS __created "
                f"FROM read_parquet($path, union_by_name = true) "
                f"WHERE {ts} >= $start AND {ts} <= $end AND {_quote(spec.join_key)} IS NOT NULL "
                f"QUALIFY row_number() OVER (PARTITION BY {_quote(spec.join_key)} ORDER BY {order}) = 1",
                {"path": _files(spec.path), "start": start, "end": end},
            )
        union = " UNION ".join(f"SELECT __id FROM v{i}" for i in range(len(specs)))
        size = "octet_length(encode(__id))"
        con.execute(
            "CREATE TEMP TABLE ids AS SELECT __id, row_number() OVER (ORDER BY "
            f"{size} % 256, ({size} // 256) % 256, ({size} // 65536) % 256, {size} // 16777216, encode(__id)) AS __pos "
            f"FROM ({union})"
        )
        ids = con.sql("SELECT __id FROM ids ORDER BY __pos").to_arrow_table().column(0)
        views = {  # one chunk each: batches are sliced from them, never re-assembled
            spec.name: con.sql(
                f"SELECT v.* EXCLUDE (__id) FROM ids LEFT JOIN v{i} v USING (__id) ORDER BY ids.__pos"
            )
            .to_arrow_table()
            .combine_chunks()
            for i, spec in enumerate(specs)
        }
    return Target(ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids, views)


def _files(path: str) -> list[str]:
    """The Parquet files of a source path (a glob); an empty list reads as no rows."""
    import glob

    files = sorted(glob.glob(path))
    if not files:
        raise FileNotFoundError(f"no feature files match {path}")
    return files


# ---- one batch of customers, encoded -----------------------------------------------------------------------


@dataclass
class ViewChunk:
    rows: np.ndarray  # positions (in the batch) of the customers that have a row in this view
    ts_us: np.ndarray  # event time of those rows, microseconds
    created_us: np.ndarray  # created time (microseconds), or a large negative where there is none
    has_created: np.ndarray
    columns: list[Column]  # one per feature, over those rows


@dataclass
class Chunk:
    positions: np.ndarray  # the customers' positions in the target
    keys: Blobs  # Feast's serialized entity keys
    views: dict[str, ViewChunk]

    def __len__(self) -> int:
        return len(self.positions)


_NO_TIME = -(2**63)


def encode_chunk(
    target: Target, specs: Sequence[ViewSpec], positions: np.ndarray, key_prefix: bytes
) -> Chunk:
    n = len(positions)
    contiguous = n > 0 and int(positions[-1]) - int(positions[0]) + 1 == n

    def pick(data: Any) -> Any:  # a zero-copy slice for a run of customers, else a take
        return (
            data.slice(int(positions[0]), n)
            if contiguous
            else data.take(pa.array(positions, type=pa.int64()))
        )

    ids = Blobs.from_arrow(pick(target.ids))
    size = np.ascontiguousarray(ids.lengths.astype("<u4")).view(np.uint8).reshape(n, 4)
    keys = concat(Blobs.const(key_prefix, n), Blobs.fixed(size), ids)
    views = {}
    for spec in specs:
        table = pick(target.views[spec.name])
        present = table.column("__ts").is_valid().to_numpy(zero_copy_only=False)
        where_present = np.flatnonzero(present)
        part = table.filter(pa.array(present)) if len(where_present) < n else table
        created = part.column("__created")
        views[spec.name] = ViewChunk(
            rows=where_present,
            ts_us=part.column("__ts").to_numpy().astype(np.int64),
            created_us=pc.fill_null(created, _NO_TIME).to_numpy().astype(np.int64),
            has_created=created.is_valid().to_numpy(zero_copy_only=False),
            columns=[encode(part.column(name), value_type) for name, value_type in spec.features],
        )
    return Chunk(positions, keys, views)


def chunk_digests(chunk: Chunk, specs: Sequence[ViewSpec]) -> list[bytes]:
    """Per customer, a digest of everything the load writes for it in the views (values and timestamps)."""
    n = len(chunk)
    parts = []
    for spec in specs:
        view = chunk.views[spec.name]
        present = np.zeros((n, 1), dtype=np.uint8)
        present[view.rows] = 1
        parts.append(Blobs.fixed(present))
        m = len(view.rows)
        if not m:
            continue
        pieces = [
            Blobs.fixed(view.ts_us.astype("<i8").view(np.uint8).reshape(m, 8)),
            Blobs.fixed(view.created_us.astype("<i8").view(np.uint8).reshape(m, 8)),
        ]
        for column in view.columns:
            pieces.append(Blobs.fixed(column.values.lengths.astype("<u4").view(np.uint8).reshape(m, 4)))
            pieces.append(column.values)
        parts.append(concat(*pieces).expand(view.rows, n))
    return concat(*parts).digests()


# ---- serving vectors, column-wise --------------------------------------------------------------------------


@dataclass
class VectorPlan:
    """How to build a service's packed vectors (:class:`features.store.VectorLayout`) from encoded columns."""

    service: str
    layout: fs.VectorLayout
    views: list[tuple[str, str]]  # (view, name_to_use) in the service's order
    numeric: list[tuple[str, int]]  # (view, feature index) per numeric layout entry
    other: list[tuple[str, int]]

    @classmethod
    def of(cls, service: FeatureService, specs: Sequence[ViewSpec]) -> VectorPlan | None:
        by_name = {spec.name: spec for spec in specs}
        if any(p.name not in by_name for p in service.feature_view_projections):
            return None
        layout = fs.VectorLayout.of(service)
        where_: dict[str, tuple[str, int]] = {}
        for projection in service.feature_view_projections:
            index = {name: i for i, (name, _) in enumerate(by_name[projection.name].features)}
            for feature in projection.features:
                where_[f"{projection.name_to_use()}__{feature.name}"] = (projection.name, index[feature.name])
        return cls(
            service=service.name,
            layout=layout,
            views=[(p.name, p.name_to_use()) for p in service.feature_view_projections],
            numeric=[where_[name] for name in layout.numeric],
            other=[where_[name] for name in layout.other],
        )

    def build(self, chunk: Chunk, backend: str, precomputed_at: bytes) -> tuple[np.ndarray, list[Blobs]]:
        """Which customers of the batch get a vector, and their serialized ``PrecomputedFeatureVector``s (as
        pieces to concatenate).

        Byte for byte what :func:`features.store.precompute_vectors` writes after Feast's materialize (but
        ``precomputed_at``): it reads the views back from the store, so on Redis a view without a row still
        gives a zero timestamp, and on SQLite timestamps come back to the second.
        """
        n = len(chunk)
        block = np.full((n, len(self.numeric)), np.nan)
        for j, (view, k) in enumerate(self.numeric):
            part = chunk.views[view]
            numbers = part.columns[k].numbers
            assert numbers is not None
            block[part.rows, j] = numbers
        has_row = np.zeros(n, dtype=bool)
        for view, _ in self.views:
            has_row[chunk.views[view].rows] = True
        first = b"\x0a" + varint_bytes(8 * len(self.numeric))  # Value.bytes_val
        first = (
            b"\x12" + varint_bytes(len(first) + 8 * len(self.numeric)) + first
        )  # PrecomputedFeatureVector.values
        pieces = [Blobs.const(first, n), Blobs.fixed(block.astype("<f8").view(np.uint8).reshape(n, -1))]
        for view, k in self.other:
            part = chunk.views[view]
            pieces += delimited_pieces(0x12, [part.columns[k].values.expand(part.rows, n)])
        for view, name in self.views:
            part = chunk.views[view]
            label = name.encode()
            head = b"\x0a" + varint_bytes(len(label)) + label

            def entry(stamp: bytes, head: bytes = head) -> bytes:
                inner = head + b"\x12" + varint_bytes(len(stamp)) + stamp
                return b"\x1a" + varint_bytes(len(inner)) + inner

            entries, inverse = _per_unique(part.ts_us, lambda us: entry(read_back_timestamp(us, backend)))
            # Redis' online_read gives a (zero) timestamp for a view without a row; SQLite's gives none.
            entries.append(entry(b"") if backend == "redis" else b"")
            which = np.full(n, len(entries) - 1)
            which[part.rows] = inverse
            pieces.append(Blobs.from_list(entries).take(which))
        pieces.append(Blobs.const(b"\x22" + varint_bytes(len(precomputed_at)) + precomputed_at, n))
        if backend == "redis" or has_row.all():
            return np.arange(n), pieces
        keep = np.flatnonzero(has_row)
        return keep, [piece.take(keep) for piece in pieces]


def vector_value(vectors: Sequence[Blobs]) -> list[Blobs]:
    """The vector view's ``Value(bytes_val=vector)`` of each vector (pieces to concatenate)."""
    return delimited_pieces(0x0A, vectors)


# ---- the marker and the digests on disk ---------------------------------------------------------------------


def config_digest(store: FeatureStore, specs: Sequence[ViewSpec], plan: VectorPlan | None) -> str:
    """What a load's bytes depend on besides the data: when it changes, the next load is a full one."""
    import duckdb

    parts = [
        LOAD_FORMAT,
        fs.VECTOR_FORMAT,
        f"duckdb {duckdb.__version__}",
        f"ek {store.config.entity_key_serialization_version}",
        *(f"{s.name}:{s.join_key}:{s.timestamp}:{s.created}:{list(s.features)}" for s in specs),
        f"vectors {plan.service}:{plan.layout.names}" if plan else "no vectors",
    ]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


def views_signature(store: FeatureStore, views: Sequence[str]) -> str:
    """The registry's materialized intervals of ``views`` (count, end), read without the registry cache."""
    parts = []
    for name in views:
        intervals = store.registry.get_feature_view(
            name, store.project, allow_cache=False
        ).materialization_intervals
        parts.append(f"{name}:{len(intervals)}:{intervals[-1][1].isoformat() if intervals else '-'}")
    return ";".join(parts)


def state_dir(settings: Settings) -> Path:
    return settings.feast_dir / "loads"


def state_file(settings: Settings, project: str, load_id: str) -> Path:
    return state_dir(settings) / f"{project}.{load_id}.parquet"


def write_state(path: Path, ids: pa.Array, digests: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"customer_id": ids, "digest": pa.array(digests, type=pa.binary(16))})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_state(path: Path) -> pa.Table | None:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException):
        return None


def diff(ids: pa.Array, digests: list[bytes], previous: pa.Table) -> tuple[np.ndarray, pa.Array]:
    """The positions of the customers whose digest differs from (or is absent in) ``previous``, and the ids of
    the customers of ``previous`` that are gone."""
    current = pa.table(
        {"customer_id": ids, "digest": pa.array(digests, type=pa.binary(16)), "pos": np.arange(len(ids))}
    )
    joined = current.join(
        previous.rename_columns(["customer_id", "before"]), "customer_id", join_type="left outer"
    )
    before = joined.column("before").cast(pa.binary())
    same = pc.fill_null(pc.equal(joined.column("digest").cast(pa.binary()), before), False)
    changed = np.sort(pc.filter(joined.column("pos"), pc.invert(same)).to_numpy())
    gone = previous.join(current.select(["customer_id", "pos"]), "customer_id", join_type="left anti")
    return changed, gone.column("customer_id").combine_chunks()


# ---- the load -----------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    mode: str  # "full" or "incremental"
    why: str  # why this mode
    generation: int
    customers: int  # customers in the target
    written: int  # customers whose Feast rows were written
    deleted: int  # customers removed (they left the feature tables)
    vectors: int  # serving vectors written
    vector_service: str | None  # the service whose vectors the load built (None: none)
    switch: str  # how the load was switched in
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _Load:
    settings: Settings
    store: FeatureStore
    specs: list[ViewSpec]
    target: Target
    plan: VectorPlan | None
    backend: str
    key_prefix: bytes
    batch: int
    progress: Callable[[int, int], None] | None
    previous: dict[str, Any] | None
    generation: int
    load_id: str
    slot: str
    written_at: datetime
    precomputed_at: bytes
    seconds: dict[str, float] = field(default_factory=dict)

    def prepared(self, positions: np.ndarray, build: Callable[[Chunk], Any]) -> Iterator[tuple[Chunk, Any]]:
        """Each batch of ``positions`` encoded and passed through ``build``, on a second thread that prepares
        the next batch while the caller writes this one (numpy, SQLite and socket writes release the GIL)."""
        batches = [positions[lo : lo + self.batch] for lo in range(0, len(positions), self.batch)]
        results: dict[int, Any] = {}

        def work(i: int) -> None:
            started = time.perf_counter()
            try:
                chunk = encode_chunk(self.target, self.specs, batches[i], self.key_prefix)
                results[i] = (chunk, build(chunk))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                results[i] = exc
            self.timed("prepare", started)

        worker: threading.Thread | None = None
        for i in range(len(batches)):
            if worker is None:
                worker = threading.Thread(target=work, args=(i,), daemon=True)
                worker.start()
            worker.join()
            result = results.pop(i)
            worker = None
            if i + 1 < len(batches):
                worker = threading.Thread(target=work, args=(i + 1,), daemon=True)
                worker.start()
            if isinstance(result, BaseException):
                if worker is not None:
                    worker.join()
                raise result
            yield result

    def timed(self, name: str, started: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def tick(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


def load(
    settings: Settings,
    store: FeatureStore,
    views: Sequence[FeatureView],
    *,
    start: datetime,
    end: datetime,
    intervals: dict[str, datetime],
    full: bool,
    progress: Callable[[int, int], None] | None = None,
) -> LoadResult:
    """Load ``views`` (batch views, :func:`bulk_loadable`) for the window ``[start, end]`` into the online
    store, switch the load in (see the module docstring) and record ``[intervals[view], end]`` as materialized
    in the registry. ``full`` writes every customer; otherwise only the customers whose rows changed since the
    load the store holds (a full load all the same when that load cannot be compared with).
    ``progress(done, total)`` is called after each batch of customers written."""
    reason = fi.bulk_unsupported(store)
    if reason:
        raise NotImplementedError(f"the bulk loader does not write this online store ({reason})")
    started = time.perf_counter()
    specs = sorted((ViewSpec.of(view) for view in views), key=lambda spec: spec.name)
    plan = None
    with suppress(Exception):  # no serving service registered: no vectors
        plan = VectorPlan.of(store.get_feature_service(fs.SERVING_SERVICE, allow_cache=False), specs)
    backend = store.config.online_store.type
    digest = config_digest(store, specs, plan)
    names = [spec.name for spec in specs]
    previous = fs.load_marker(store)
    why = _why_full(full, previous, digest, views_signature(store, names))
    state = None
    if why is None:
        assert previous is not None
        state = read_state(state_file(settings, store.project, previous["load"]))
        why = None if state is not None else "the previous load's digests are missing"
    now = Timestamp()
    now.GetCurrentTime()
    slot = "a" if backend == "sqlite" or previous is None else ("b" if previous.get("slot") == "a" else "a")
    step = time.perf_counter()
    target = read_target(specs, start, end)
    job = _Load(
        settings=settings,
        store=store,
        specs=specs,
        target=target,
        plan=plan,
        backend=backend,
        key_prefix=fi.entity_key_prefix(specs[0].join_key),
        batch=settings.online_load_batch,
        progress=progress,
        previous=previous,
        generation=(int(previous.get("generation", -1)) + 1) if previous else 0,
        load_id=uuid.uuid4().hex[:16],
        slot=slot,
        written_at=now.ToDatetime(UTC),
        precomputed_at=now.SerializeToString(),
    )
    job.timed("read", step)
    marker = {
        "format": LOAD_FORMAT,
        "generation": job.generation,
        "load": job.load_id,
        "slot": slot,
        "config": digest,
        "signature": views_signature(store, names),
        "rows": "complete",
        "customers": len(target),
        "end": end.isoformat(),
        "written_at": job.written_at.isoformat(),
    }
    result = (_load_sqlite if backend == "sqlite" else _load_redis)(job, marker, state, why)
    step = time.perf_counter()
    fi.record_materialization(store, {name: (intervals[name], end) for name in names})
    _settle(job, {**marker, "signature": views_signature(store, names)})
    job.timed("registry", step)
    _drop_other_states(settings, store.project, job.load_id)
    result.seconds = {**job.seconds, "total": time.perf_counter() - started}
    logger.info(
        "loaded %d customers into the %s online store (%s: %s; %d written, %d removed, %d vectors) in %.1f s",
        len(target),
        backend,
        result.mode,
        result.why,
        result.written,
        result.deleted,
        result.vectors,
        result.seconds["total"],
    )
    return result


def _why_full(full: bool, previous: dict[str, Any] | None, digest: str, signature: str) -> str | None:
    """Why this load must write every customer (None: an incremental load can)."""
    if previous is None:
        return "the store holds no load (its marker is missing)"
    if full:
        return "a full load was asked for"
    if previous.get("format") != LOAD_FORMAT or previous.get("config") != digest:
        return "the store holds a load of another format or layout"
    if previous.get("rows") != "complete":
        return "the previous load did not finish writing the Feast rows"
    if previous.get("signature") != signature:
        return "the registry shows a materialization since the previous load"
    return None


def _drop_other_states(settings: Settings, project: str, keep: str) -> None:
    for path in state_dir(settings).glob(f"{project}.*.parquet"):
        if path.name != f"{project}.{keep}.parquet":
            with suppress(OSError):
                path.unlink()


def _marker_value(marker: dict[str, Any]) -> bytes:
    return ValueProto(bytes_val=json.dumps(marker, sort_keys=True).encode()).SerializeToString()


def _sentinel_value(plan: VectorPlan, signature: str) -> bytes:
    """The vectors' sentinel: their layout and the service's materialization signature they match."""
    return ValueProto(bytes_val=plan.layout.marker(signature).SerializeToString()).SerializeToString()


def _service_signature(job: _Load) -> str:
    assert job.plan is not None
    service = job.store.get_feature_service(job.plan.service, allow_cache=False)
    return fs.materialization_signature(job.store, service, allow_cache=False)


def _retired_value(slot: str) -> bytes:
    vector = PrecomputedFeatureVector(values=[ValueProto(string_val=RETIRED), ValueProto(string_val=slot)])
    return ValueProto(bytes_val=vector.SerializeToString()).SerializeToString()


def _sentinel_key(job: _Load) -> bytes:
    ident = fs.SIGNATURE_ID.encode()
    return job.key_prefix + struct.pack("<I", len(ident)) + ident


def _keys_of(job: _Load, ids: pa.Array) -> Blobs:
    """Feast's serialized entity keys of customer ids."""
    blobs = Blobs.from_arrow(ids)
    n = len(blobs)
    size = np.ascontiguousarray(blobs.lengths.astype("<u4")).view(np.uint8).reshape(n, 4)
    return concat(Blobs.const(job.key_prefix, n), Blobs.fixed(size), blobs)


def _settle(job: _Load, marker: dict[str, Any]) -> None:
    """After the registry records the load: the marker and the vectors' sentinel carry its signature."""
    rows: list[tuple[FeatureView, bytes]] = [(fs.load_view(), _marker_value(marker))]
    if job.plan is not None:
        view = fs.vector_slot_view(job.plan.service, job.slot)
        rows.append((view, _sentinel_value(job.plan, _service_signature(job))))
    sentinel = fs.entity_key(fs.SIGNATURE_ID)
    # Later than the switch's own writes: Feast's Redis writer skips a row that is not newer than the stored one.
    written = max(datetime.now(UTC), job.written_at + timedelta(milliseconds=1))
    for view, value in rows:
        feature = view.features[0].name
        fi.online_write(job.store, view, [(sentinel, {feature: ValueProto.FromString(value)}, written, None)])


# ---- SQLite --------------------------------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        logger.warning(
            "could not put %s in WAL mode (%s): readers may wait for the load's commits", path, mode
        )
    con.execute("PRAGMA synchronous = NORMAL")
    # Debian's (and many distributions') SQLite is built with SECURE_DELETE on: every page a DROP frees is
    # overwritten with zeros through the WAL, which made dropping the replaced tables of a 1M-customer load
    # take 56 s. FAST zeroes deleted content only where it costs no extra I/O; the freed pages hold feature
    # values (no raw input) and are overwritten by the next load, which reuses them.
    con.execute("PRAGMA secure_delete = FAST")
    con.execute("PRAGMA cache_size = -262144")
    con.execute("PRAGMA journal_size_limit = 67108864")
    return con


@dataclass
class _SqliteTable:
    live: str

    @property
    def stage(self) -> str:
        return self.live + STAGE_SUFFIX

    @property
    def old(self) -> str:
        return self.live + OLD_SUFFIX


def _insert_sql(table: str, rows: int = 1) -> str:
    columns = ", ".join(fi.SQLITE_COLUMNS)
    one = "(" + ", ".join("?" * len(fi.SQLITE_COLUMNS)) + ")"
    return f"INSERT INTO {_quote(table)} ({columns}) VALUES " + ", ".join([one] * rows)


def _upsert_sql(table: str) -> str:
    update = ", ".join(
        f"{c} = excluded.{c}" for c in fi.SQLITE_COLUMNS if c not in ("entity_key", "feature_name")
    )
    return _insert_sql(table) + f" ON CONFLICT(entity_key, feature_name) DO UPDATE SET {update}"


@dataclass
class _Rows:
    """A table's rows for a batch of customers, grouped by customer: per customer its entity key, event and
    created time, then (value, value_text) for each feature in ``names`` order (Feast's key order)."""

    names: tuple[str, ...]
    params: list[Any]

    @property
    def width(self) -> int:
        return 3 + 2 * len(self.names)


CUSTOMERS_PER_STATEMENT = 32
"""SQLite: customers per INSERT statement. A customer's entity key and timestamps are bound once and reused by
its rows (numbered parameters), its feature names are literals of the statement: two bindings per row."""


@functools.lru_cache(maxsize=64)
def _rows_sql(table: str, names: tuple[str, ...], customers: int) -> str:
    width = 3 + 2 * len(names)
    literals = ["'" + name.replace("'", "''") + "'" for name in names]
    values = []
    for c in range(customers):
        base = c * width
        for j, literal in enumerate(literals):
            value = base + 4 + 2 * j
            values.append(f"(?{base + 1}, {literal}, ?{value}, ?{value + 1}, ?{base + 2}, ?{base + 3})")
    return f"INSERT INTO {_quote(table)} ({', '.join(fi.SQLITE_COLUMNS)}) VALUES " + ", ".join(values)


def _insert(con: sqlite3.Connection, table: str, rows: _Rows) -> None:
    """Insert a batch's rows, :data:`CUSTOMERS_PER_STATEMENT` customers per statement."""
    width, flat = rows.width, rows.params
    step = width * CUSTOMERS_PER_STATEMENT
    whole = len(flat) - len(flat) % step
    if whole:
        sql = _rows_sql(table, rows.names, CUSTOMERS_PER_STATEMENT)
        con.executemany(sql, (flat[i : i + step] for i in range(0, whole, step)))
    if whole < len(flat):
        sql = _rows_sql(table, rows.names, 1)
        con.executemany(sql, (flat[i : i + width] for i in range(whole, len(flat), width)))


@dataclass
class _SqliteBatch:
    params: dict[str, _Rows]  # per view (and the vector view): the batch's rows, in key order
    digests: list[bytes]
    vectors: int


def _sqlite_batch(job: _Load, chunk: Chunk, *, digests: bool) -> _SqliteBatch:
    """A batch's rows for every table, as SQLite's ``online_write_batch`` would write them, in key order
    (customer, then feature name)."""
    keys = np.array(chunk.keys.tolist(), dtype=object)
    out: dict[str, _Rows] = {}
    for spec in job.specs:
        view = chunk.views[spec.name]
        names = [name for name, _ in spec.features]
        order = sorted(range(len(names)), key=names.__getitem__)
        rows = _Rows(tuple(names[k] for k in order), [])
        width, m = rows.width, len(view.rows)
        flat: list[Any] = [None] * (width * m)
        flat[0::width] = keys[view.rows].tolist()
        event, inverse = _per_unique(view.ts_us, sqlite_epoch)
        flat[1::width] = np.array(event, dtype=object)[inverse].tolist()
        created, inverse = _per_unique(
            view.created_us, lambda us: None if us == _NO_TIME else sqlite_epoch(us)
        )
        flat[2::width] = np.array(created, dtype=object)[inverse].tolist()
        for slot, k in enumerate(order):
            flat[3 + 2 * slot :: width] = view.columns[k].values.tolist()
            flat[4 + 2 * slot :: width] = view.columns[k].text()
        rows.params = flat
        out[spec.name] = rows
    vectors = 0
    if job.plan is not None:
        where_, blobs = job.plan.build(chunk, "sqlite", job.precomputed_at)
        vectors = len(where_)
        rows = _Rows((fi.VECTOR_FEATURE,), [None] * (5 * vectors))
        rows.params[0::5] = keys[where_].tolist()
        rows.params[1::5] = [int(job.written_at.timestamp())] * vectors
        rows.params[3::5] = concat(*vector_value(blobs)).tolist()
        out[fs.vector_slot_view(job.plan.service, "a").name] = rows
    return _SqliteBatch(out, chunk_digests(chunk, job.specs) if digests else [], vectors)


def _load_sqlite(job: _Load, marker: dict[str, Any], state: pa.Table | None, why: str | None) -> LoadResult:
    store = job.store
    views: list[FeatureView] = [store.get_feature_view(spec.name) for spec in job.specs]
    if job.plan is not None:
        views.append(fs.vector_slot_view(job.plan.service, "a"))
    for view in [*views, fs.load_view()]:
        fi.create_online_table(store, view)
    tables = {view.name: _SqliteTable(fi.sqlite_table(store, view)) for view in views}
    n = len(job.target)
    everyone = np.arange(n)
    vectors = 0
    with closing(_connect(fi.sqlite_path(store))) as con:
        digests: list[bytes] = []
        changed, gone = everyone, pa.array([], type=pa.string())
        if why is None:
            assert state is not None
            step = time.perf_counter()
            for lo in range(0, n, job.batch):
                chunk = encode_chunk(job.target, job.specs, everyone[lo : lo + job.batch], job.key_prefix)
                digests += chunk_digests(chunk, job.specs)
            changed, gone = diff(job.target.ids, digests, state)
            job.timed("compare", step)
        rebuild = why is not None or len(changed) + len(gone) > job.settings.online_load_rebuild_share * max(
            n, 1
        )
        if rebuild:
            collected, vectors = _sqlite_rebuild(job, con, tables, collect=why is not None)
            digests = digests or collected
        write_state(state_file(job.settings, store.project, job.load_id), job.target.ids, digests)
        step = time.perf_counter()
        sentinel_key, stamp = _sentinel_key(job), int(job.written_at.timestamp())
        con.execute("BEGIN IMMEDIATE")
        try:
            if rebuild:
                for table in tables.values():
                    con.execute(f"ALTER TABLE {_quote(table.live)} RENAME TO {_quote(table.old)}")
                    con.execute(f"ALTER TABLE {_quote(table.stage)} RENAME TO {_quote(table.live)}")
            else:
                vectors = _sqlite_update(job, con, tables, changed, gone)
            marker_row = (sentinel_key, fs.LOAD_FEATURE, _marker_value(marker), None, stamp, None)
            con.execute(_upsert_sql(fi.sqlite_table(store, fs.load_view())), marker_row)
            if job.plan is not None:
                table = tables[fs.vector_slot_view(job.plan.service, "a").name].live
                sentinel = _sentinel_value(job.plan, _service_signature(job))
                con.execute(
                    _upsert_sql(table), (sentinel_key, fi.VECTOR_FEATURE, sentinel, None, stamp, None)
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        job.timed("switch", step)
        step = time.perf_counter()
        if rebuild:
            for table in tables.values():
                con.execute(f"DROP TABLE IF EXISTS {_quote(table.old)}")
        job.timed("cleanup", step)
    return LoadResult(
        mode="full" if why is not None else "incremental",
        why=why or "the store holds the previous load",
        generation=job.generation,
        customers=n,
        written=n if rebuild else len(changed),
        deleted=len(gone),
        vectors=vectors,
        vector_service=job.plan.service if job.plan else None,
        switch="tables rebuilt beside the live ones, renamed in" if rebuild else "one transaction",
    )


def _sqlite_rebuild(
    job: _Load, con: sqlite3.Connection, tables: dict[str, _SqliteTable], *, collect: bool
) -> tuple[list[bytes], int]:
    """Every customer written into ``<table>__load`` copies of the live tables (the same schema, rows in key
    order), then the live tables' indexes moved over; returns the digests (when ``collect``) and the vectors
    written. Nothing here is visible to readers until the caller renames the copies in."""
    con.execute("BEGIN IMMEDIATE")
    for table in tables.values():
        con.execute(f"DROP TABLE IF EXISTS {_quote(table.stage)}")
        con.execute(f"DROP TABLE IF EXISTS {_quote(table.old)}")
        (ddl,) = con.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table.live,)
        ).fetchone()
        con.execute(f"CREATE TABLE {_quote(table.stage)} (" + ddl.split("(", 1)[1])
    con.execute("COMMIT")
    digests: list[bytes] = []
    vectors, n = 0, len(job.target)
    for chunk, batch in job.prepared(np.arange(n), lambda chunk: _sqlite_batch(job, chunk, digests=collect)):
        step = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        for name, flat in batch.params.items():
            _insert(con, tables[name].stage, flat)
        con.execute("COMMIT")
        job.timed("write", step)
        digests += batch.digests
        vectors += batch.vectors
        job.tick(int(chunk.positions[-1]) + 1, n)
    step = time.perf_counter()
    con.execute("BEGIN IMMEDIATE")
    for table in tables.values():
        indexes = con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
            (table.live,),
        ).fetchall()
        for name, sql in indexes:  # Feast's index names are fixed: moved to the new table, same name
            con.execute(f"DROP INDEX {_quote(name)}")
            con.execute(sql.replace(_quote(table.live), _quote(table.stage), 1))
    con.execute("COMMIT")
    job.timed("index", step)
    return digests, vectors


def _sqlite_update(
    job: _Load, con: sqlite3.Connection, tables: dict[str, _SqliteTable], changed: np.ndarray, gone: pa.Array
) -> int:
    """Inside the caller's transaction: the changed customers' rows replaced, the departed ones' removed;
    returns the vectors written."""
    vectors = 0
    for chunk, batch in job.prepared(changed, lambda chunk: _sqlite_batch(job, chunk, digests=False)):
        step = time.perf_counter()
        keys = [(key,) for key in chunk.keys.tolist()]
        for name, table in tables.items():
            con.executemany(f"DELETE FROM {_quote(table.live)} WHERE entity_key = ?", keys)
            if name in batch.params:
                _insert(con, table.live, batch.params[name])
        job.timed("write", step)
        vectors += batch.vectors
        job.tick(int(np.searchsorted(changed, chunk.positions[-1])) + 1, len(changed))
    if len(gone):
        keys = [(key,) for key in _keys_of(job, gone).tolist()]
        for table in tables.values():
            con.executemany(f"DELETE FROM {_quote(table.live)} WHERE entity_key = ?", keys)
    return vectors


# ---- Redis ---------------------------------------------------------------------------------------------------


def _bulk(pieces: Sequence[Blobs]) -> list[Blobs]:
    """RESP bulk strings over the concatenation of ``pieces``: ``$<length>\\r\\n<bytes>\\r\\n``."""
    n = len(pieces[0])
    return [
        Blobs.const(b"$", n),
        decimal(total(pieces)),
        Blobs.const(b"\r\n", n),
        *pieces,
        Blobs.const(b"\r\n", n),
    ]


def _bulk_const(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class _Pipe:
    """Pre-built RESP commands on one connection. The replies of a batch are read after the next batch is
    sent, so Redis works on one batch while the next is built; an error reply is raised."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.connection = client.connection_pool.get_connection()
        self.pending: list[int] = []

    def send(self, payload: Blobs, commands: int) -> None:
        if not commands:
            return
        self.connection.send_packed_command([memoryview(payload.data)], check_health=False)
        self.pending.append(commands)
        if len(self.pending) > 1:
            self._read(self.pending.pop(0))

    def flush(self) -> None:
        while self.pending:
            self._read(self.pending.pop(0))

    def _read(self, commands: int) -> None:
        for _ in range(commands):
            self.connection.read_response()

    def close(self) -> None:
        self.client.connection_pool.release(self.connection)


def _field_pairs(name: bytes, pieces: Sequence[Blobs], rows: np.ndarray, n: int) -> list[Blobs]:
    """``$4\\r\\n<name>\\r\\n$<len>\\r\\n<value>\\r\\n`` for the rows that have the field (the values are
    the concatenation of ``pieces``), empty elsewhere."""
    m = len(pieces[0])
    pair = [Blobs.const(_bulk_const(name), m), *_bulk(pieces)]
    return [piece.expand(rows, n) for piece in pair] if m < n else pair


def _hset(keys: Blobs, pairs: list[Blobs], counts: np.ndarray) -> Blobs:
    """``HSET key field value ...`` per row: ``pairs`` the pieces from :func:`_field_pairs`, ``counts`` the
    fields of each row; assembled in one pass."""
    n = len(keys)
    head = [Blobs.const(b"*", n), decimal(2 + 2 * counts), Blobs.const(b"\r\n$4\r\nHSET\r\n", n)]
    return concat(*head, *_bulk([keys]), *pairs)


def _hdel(keys: Blobs, fields: list[bytes]) -> Blobs:
    n = len(keys)
    head = b"*%d\r\n$4\r\nHDEL\r\n" % (2 + len(fields))
    return concat(
        Blobs.const(head, n), *_bulk([keys]), Blobs.const(b"".join(_bulk_const(f) for f in fields), n)
    )


def _view_pairs(job: _Load, chunk: Chunk) -> tuple[list[Blobs], np.ndarray]:
    """Every view's fields of the batch's customers (Feast's Redis layout) and how many each customer has."""
    n = len(chunk)
    counts = np.zeros(n, dtype=np.int64)
    pairs: list[Blobs] = []
    for spec in job.specs:
        view = chunk.views[spec.name]
        counts[view.rows] += len(spec.features) + 1
        for (name, _), column in zip(spec.features, view.columns, strict=True):
            pairs += _field_pairs(fi.redis_field(spec.name, name), [column.values], view.rows, n)
        stamps, inverse = _per_unique(view.ts_us, redis_timestamp)
        values = Blobs.from_list(stamps).take(inverse) if len(view.rows) else Blobs.const(b"", 0)
        pairs += _field_pairs(fi.redis_ts_field(spec.name), [values], view.rows, n)
    return pairs, counts


@dataclass
class _RedisBatch:
    payload: Blobs
    commands: int
    digests: list[bytes]
    vectors: int


def _load_redis(job: _Load, marker: dict[str, Any], state: pa.Table | None, why: str | None) -> LoadResult:
    """Vectors into the idle slot (with the Feast rows too when the store holds nothing to keep), the switch,
    then the changed customers' Feast rows in place, then the previous slot removed."""
    store, plan = job.store, job.plan
    suffix = fi.redis_key_suffix(store)
    n = len(job.target)
    everyone = np.arange(n)
    direct = job.previous is None  # nothing to keep: one pass writes everything, then the marker
    slot_view = fs.vector_slot_view(plan.service, job.slot) if plan else None
    vector_field = fi.redis_field(slot_view.name, fi.VECTOR_FEATURE) if slot_view else b""
    vector_ts_field = fi.redis_ts_field(slot_view.name) if slot_view else b""
    stamp = redis_timestamp(int(job.written_at.timestamp() * 1_000_000))

    def first_pass(chunk: Chunk) -> _RedisBatch:
        m = len(chunk)
        pairs, counts = _view_pairs(job, chunk) if direct else ([], np.zeros(m, dtype=np.int64))
        vectors = 0
        if plan is not None:
            rows, blobs = plan.build(chunk, "redis", job.precomputed_at)
            vectors = len(rows)
            pairs += _field_pairs(vector_field, vector_value(blobs), rows, m)
            pairs += _field_pairs(vector_ts_field, [Blobs.const(stamp, len(rows))], rows, m)
            counts[rows] += 2
        keep = np.flatnonzero(counts)
        payload = _hset(concat(chunk.keys, Blobs.const(suffix, m)), pairs, counts)
        payload = payload.take(keep) if len(keep) < m else payload
        return _RedisBatch(payload, len(keep), chunk_digests(chunk, job.specs), vectors)

    client = fi.redis_bulk_client(store, job.settings.online_load_redis_timeout_s)
    pipe = _Pipe(client)
    try:
        step = time.perf_counter()
        digests: list[bytes] = []
        vectors = 0
        for chunk, batch in job.prepared(everyone, first_pass):
            pipe.send(batch.payload, batch.commands)
            digests += batch.digests
            vectors += batch.vectors
            job.tick(int(chunk.positions[-1]) + 1, n)
        pipe.flush()
        job.timed("write" if direct else "vectors", step)
        changed, gone = (np.empty(0, np.int64) if direct else everyone), pa.array([], type=pa.string())
        if why is None:
            assert state is not None
            changed, gone = diff(job.target.ids, digests, state)
        write_state(state_file(job.settings, store.project, job.load_id), job.target.ids, digests)
        step = time.perf_counter()
        sentinel = _sentinel_key(job) + suffix
        marker_field = fi.redis_field(fs.LOAD_VIEW, fs.LOAD_FEATURE)
        rows_pending = len(changed) or len(gone)
        # The switch: one HSET of the sentinel's hash (the marker, the new slot's sentinel, the old one retired).
        mapping = {
            marker_field: _marker_value({**marker, "rows": "writing"} if rows_pending else marker),
            fi.redis_ts_field(fs.LOAD_VIEW): stamp,
        }
        if plan is not None:
            mapping[vector_field] = _sentinel_value(plan, _service_signature(job))
            mapping[vector_ts_field] = stamp
            old_slot = (job.previous or {}).get("slot")
            if old_slot in fs.VECTOR_SLOTS and old_slot != job.slot:
                mapping[
                    fi.redis_field(fs.vector_slot_view(plan.service, old_slot).name, fi.VECTOR_FEATURE)
                ] = _retired_value(job.slot)
        client.hset(sentinel, mapping=mapping)
        job.timed("switch", step)
        if rows_pending:
            step = time.perf_counter()
            for _, payload in job.prepared(
                changed,
                lambda chunk: _hset(
                    concat(chunk.keys, Blobs.const(suffix, len(chunk))), *_view_pairs(job, chunk)
                ),
            ):
                pipe.send(payload, len(payload))
            if len(gone):
                keys = concat(_keys_of(job, gone), Blobs.const(suffix, len(gone)))
                pipe.send(_hdel(keys, _all_fields(job)), len(gone))
            pipe.flush()
            client.hset(sentinel, mapping={marker_field: _marker_value(marker)})
            job.timed("write", step)
        _drop_old_slot(job, pipe, state, suffix)
    finally:
        pipe.close()
        client.close()
    return LoadResult(
        mode="full" if why is not None else "incremental",
        why=why or "the store holds the previous load",
        generation=job.generation,
        customers=n,
        written=n if direct else len(changed),
        deleted=len(gone),
        vectors=vectors,
        vector_service=plan.service if plan else None,
        switch=(
            "written in place (the store held no load)"
            if direct
            else f"vector slot {job.slot} switched in by one HSET, then the changed Feast rows in place"
        ),
    )


def _drop_old_slot(job: _Load, pipe: _Pipe, state: pa.Table | None, suffix: bytes) -> None:
    """After a grace period for reads in flight, the previous slot's vectors are removed (HDEL)."""
    old_slot = (job.previous or {}).get("slot")
    if job.plan is None or old_slot not in fs.VECTOR_SLOTS or old_slot == job.slot:
        return
    step = time.perf_counter()
    time.sleep(SWITCH_GRACE_S)
    old = fs.vector_slot_view(job.plan.service, old_slot).name
    fields = [fi.redis_field(old, fi.VECTOR_FEATURE), fi.redis_ts_field(old)]
    ids = job.target.ids
    if state is not None:
        ids = pc.unique(
            pa.concat_arrays([ids, state.column("customer_id").combine_chunks().cast(pa.string())])
        )
    for lo in range(0, len(ids), job.batch):
        part = ids.slice(lo, job.batch)
        pipe.send(_hdel(concat(_keys_of(job, part), Blobs.const(suffix, len(part))), fields), len(part))
    pipe.flush()
    job.timed("cleanup", step)


def _all_fields(job: _Load) -> list[bytes]:
    """Every field a load writes in a customer's hash (to remove a customer who left the feature tables)."""
    out = []
    for spec in job.specs:
        out += [fi.redis_field(spec.name, name) for name, _ in spec.features]
        out.append(fi.redis_ts_field(spec.name))
    if job.plan is not None:
        for slot in fs.VECTOR_SLOTS:
            name = fs.vector_slot_view(job.plan.service, slot).name
            out += [fi.redis_field(name, fi.VECTOR_FEATURE), fi.redis_ts_field(name)]
    return out
