"""The record codec's public face: build batches, decode fetched records.

The codec has two halves, with this module on top:

* `_records_reference.py`, the reference codec: the record layout, `Record`,
  the batch walk (`iter_batches`), the limits and CRC check of a records
  section, and the one-record-at-a-time encoder and parser that define what
  a valid batch is (its docstring has the byte layout of a record);
* the fast paths, which never disagree with the reference and hand back
  what they do not cover: `_records_fast.py` encodes and decodes batches
  whose records share one layout with no Python code per record;
  `_records_scan.py` finds the fields of records of varying key and value
  length with one regular-expression scan.

Rules:

* There is one encoder (`build_batch`; `BatchBuilder` only collects
  columns for it) and one bulk decoder (`decode_records`). Each tries the
  fast path first and falls back to the reference; the fast path never
  raises and never disagrees with the reference (property tests in
  tests/test_records.py).
* Consumers get batches whole and skip what they do not want here
  (control batches, offsets below `min_offset`), never by decoding less.

Theory of operation: `build_batch` normalises its columns (all-null keys and
empty headers become "none at all"), computes timestamp deltas, takes
`encode_uniform` when the shape allows and `encode_general` otherwise,
compresses, packs the 61-byte header and computes the CRC over header tail
and body without concatenating them first. `decode_records` walks the
batches of a fetch response, checks each one's CRC and limits, and decodes
it with the first of `decode_uniform`, `scan_records` (+ `assemble_scanned`) and
the reference parser that accepts it.

`decode_records` pauses the cyclic GC while it builds its list (see the
comment there): the objects form no cycles, and generation-0 passes
otherwise cost ~40% of a bulk decode.

Error contract: every decoder (`iter_batches`, `read_batch_records`,
`decode_records`) raises only `CorruptBatchError` (or its subclass
`LimitExceededError` for a batch over `records_max` or
`decompressed_bytes_max`) on bad input. Anything else is a bug. Encoders
raise `ValueError`/`TypeError` for bad arguments.

Resource handling: limits are checked before allocation (see
`_records_reference.py`); the fast path's caches are bounded.
Thread-safety: functions are safe to call from several threads (caches are
rebuilt idempotently); `BatchBuilder` is not.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Sequence
from typing import Any

from crc32c import crc32c

from ._batch_header import (
    CODEC_MASK,
    CODEC_NONE,
    CONTROL_MASK,
    CRC_START,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_MASK,
    BytesLike,
)
from ._compression import compress
from ._records_fast import decode_uniform, encode_uniform
from ._records_scan import assemble_scanned, scan_records
from ._records_reference import (
    DECOMPRESSED_BYTES_MAX,
    RECORDS_MAX,
    Headers,
    Record,
    encode_general,
    iter_batches,
    iter_general,
    now_ms,
    read_batch_records,
    records_section,
    timestamp_deltas,
)

__all__ = [
    "Record",
    "build_batch",
    "BatchBuilder",
    "iter_batches",
    "read_batch_records",
    "decode_records",
    "RECORDS_MAX",
    "DECOMPRESSED_BYTES_MAX",
]

_HEADER = struct.Struct(">qiibIhiqqqhii")
assert _HEADER.size == HEADER_SIZE
_CRC = struct.Struct(">I")
_CRC_POS = 17


# ----------------------------------------------------------------------------
# Encoding

def build_batch(
    values: Sequence[BytesLike | None],
    keys: Sequence[BytesLike | None] | None = None,
    *,
    timestamps: Sequence[int] | int | None = None,
    headers: Sequence[Headers | None] | None = None,
    codec: int = CODEC_NONE,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
    timestamp_type: int = 0,
) -> bytes:
    """Encode records, given column by column, as one RecordBatch v2.

    Args:
        values: record values (bytes-like or None).
        keys: same length as `values`, or None for all-null keys.
        timestamps: ms since the epoch, one per record, or one int for all,
            or None for "now".
        headers: one list of (str, bytes | None) per record (None = no
            headers), or None for no headers at all.
        codec: CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4 or CODEC_ZSTD.
        timestamp_type: 0 create time, 1 log-append time (attribute bit 3).
        The rest are header fields, stored as given.

    Returns:
        The batch bytes. An empty `values` gives a valid 61-byte batch with
        0 records, last_offset_delta 0 and timestamps 0, uncompressed, as
        kafka-python's builder writes it.

    Raises:
        ValueError: lengths disagree, or a number does not fit its field.
        TypeError: a value, key or header is of the wrong type.
        CorruptBatchError: unknown or unavailable codec.
    """
    n = len(values)
    if keys is not None and len(keys) != n:
        raise ValueError(f"{len(keys)} keys for {n} values")
    if headers is not None and len(headers) != n:
        raise ValueError(f"{len(headers)} header lists for {n} values")
    # All-null keys or no headers at all take the same (fast) path as None.
    if keys is not None and _all_none(keys):
        keys = None
    if headers is not None and not any(headers):
        headers = None
    deltas: list[int] | None
    if n == 0:
        codec = CODEC_NONE
        base_ts = max_ts = 0
        deltas = None
    else:
        base_ts, max_ts, deltas = timestamp_deltas(timestamps, n)
    body = None
    if keys is None and headers is None:
        body = encode_uniform(values, deltas)
    if body is None:
        body = encode_general(values, keys, deltas, headers)
    if codec != CODEC_NONE:
        body = compress(codec, body)
    attributes = (codec & CODEC_MASK) | (TIMESTAMP_TYPE_MASK if timestamp_type else 0)
    if is_transactional:
        attributes |= TRANSACTIONAL_MASK
    try:
        header = _HEADER.pack(
            base_offset, HEADER_SIZE - LOG_OVERHEAD + len(body), partition_leader_epoch,
            MAGIC, 0, attributes, max(n - 1, 0), base_ts, max_ts,
            producer_id, producer_epoch, base_sequence, n,
        )
    except struct.error as exc:
        raise ValueError(f"batch header field out of range: {exc}") from None
    crc = crc32c(body, crc32c(memoryview(header)[CRC_START:]))
    return b"".join((header[:_CRC_POS], _CRC.pack(crc), header[_CRC_POS + 4 :], body))


def _all_none(items: Sequence[Any]) -> bool:
    try:
        return items.count(None) == len(items)
    except (AttributeError, TypeError):  # a Sequence without count()
        return all(item is None for item in items)


class BatchBuilder:
    """Accumulate records one by one, then `build()` one batch.

    Stores the columns and hands them to `build_batch` (the one encoder).
    `size_estimate` is an upper bound of the uncompressed batch size, for a
    producer's `batch_size` check. Not thread-safe.
    """

    def __init__(self, codec: int = CODEC_NONE, *, producer_id: int = -1,
                 producer_epoch: int = -1, base_sequence: int = -1,
                 is_transactional: bool = False, partition_leader_epoch: int = -1,
                 timestamp_type: int = 0) -> None:
        self._codec = codec
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._base_sequence = base_sequence
        self._is_transactional = is_transactional
        self._partition_leader_epoch = partition_leader_epoch
        self._timestamp_type = timestamp_type
        self._values: list[BytesLike | None] = []
        self._keys: list[BytesLike | None] = []
        self._timestamps: list[int] = []
        self._headers: list[Headers | None] = []
        self._any_key = False
        self._any_headers = False
        self.size_estimate = HEADER_SIZE

    @property
    def records_count(self) -> int:
        return len(self._values)

    def append(self, value: BytesLike | None, key: BytesLike | None = None,
               headers: Headers | None = None,
               timestamp_ms: int | None = None) -> int:
        """Add a record; return its offset delta within the batch."""
        delta = len(self._values)
        self._values.append(value)
        self._keys.append(key)
        self._headers.append(headers)
        self._timestamps.append(now_ms() if timestamp_ms is None else timestamp_ms)
        # 21 = worst-case length, attributes, timestamp and offset varints (as Kafka's)
        size = 21 + (len(value) + 5 if value is not None else 1)
        if key is not None:
            self._any_key = True
            size += len(key) + 5
        if headers:
            self._any_headers = True
            size += sum(len(k) * 4 + 10 + (len(v) if v else 0) for k, v in headers)
        self.size_estimate += size
        return delta

    def build(self) -> bytes:
        return build_batch(
            self._values,
            self._keys if self._any_key else None,
            timestamps=self._timestamps,
            headers=self._headers if self._any_headers else None,
            codec=self._codec, producer_id=self._producer_id, producer_epoch=self._producer_epoch,
            base_sequence=self._base_sequence, is_transactional=self._is_transactional,
            partition_leader_epoch=self._partition_leader_epoch, timestamp_type=self._timestamp_type,
        )


# ----------------------------------------------------------------------------
# Decoding

def decode_records(
    buf: BytesLike,
    topic: str,
    partition: int,
    *,
    min_offset: int = 0,
    verify_crc: bool = True,
    records_max: int = RECORDS_MAX,
    decompressed_bytes_max: int = DECOMPRESSED_BYTES_MAX,
) -> list[Record]:
    """Decode every record of the batches in `buf` (a fetch response's bytes).

    Skips control batches and records with offset < `min_offset` (a fetch
    may start mid-batch). A trailing partial batch is ignored. `records_max`
    and `decompressed_bytes_max` apply per batch.

    Raises:
        CorruptBatchError: a batch is malformed, fails its CRC, or is over a
            limit (`LimitExceededError`).
    """
    # The cyclic GC would run a generation-0 pass every ~350 records here
    # (each Record is a tracked container), costing
    # ~40% of the decode; the objects built here form no cycles, so pausing
    # it is safe. Resumed in `finally`. Caveat: a thread that disables the
    # GC while we run finds it re-enabled when we return.
    gc_was_enabled = gc.isenabled()
    if gc_was_enabled:
        gc.disable()
    try:
        return _decode_batches(buf, topic, partition, min_offset, verify_crc, records_max,
                               decompressed_bytes_max)
    finally:
        if gc_was_enabled:
            gc.enable()


def _decode_batches(buf: BytesLike, topic: str, partition: int, min_offset: int, verify_crc: bool,
                    records_max: int, decompressed_bytes_max: int) -> list[Record]:
    out: list[Record] = []
    for header, batch in iter_batches(buf):
        if header.attributes & CONTROL_MASK or header.next_offset <= min_offset:
            continue
        section = records_section(batch, header, verify_crc, records_max, decompressed_bytes_max)
        records = decode_uniform(section, header, topic, partition, min_offset)
        if records is None:
            scanned = scan_records(section, header.records_count)
            if scanned is not None:
                records = assemble_scanned(header, topic, partition, min_offset, scanned)
        if records is None:
            records = list(iter_general(section, header, topic, partition))
            if min_offset > header.base_offset:
                records = [r for r in records if r[2] >= min_offset]
        out += records
    return out

