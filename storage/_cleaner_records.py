"""The cleaner's per-batch decision: keep a batch as stored, drop it, or re-encode it.

Rules (Kafka's `LogCleaner.shouldRetainRecord` and `MemoryRecords.filterTo`):

- A keyed record survives when its offset is at least the offset map's
  offset for its key (or its key is not in the map). A record without a key
  never survives cleaning (Kafka counts it as invalid; a topic switched from
  `delete` to `compact` may hold some).
- A tombstone (key with a null value) survives while its batch's delete
  horizon has not passed. The horizon is KIP-534's: the first time a batch
  holding a surviving tombstone is cleaned, the batch is re-encoded with
  attribute bit 6 set and its base timestamp field holding
  `now + delete.retention.ms`; record timestamps are re-based on it
  (negative deltas), so every reader sees the same record timestamps.
- Control batches are kept as stored (minilog writes none; Kafka's
  transaction markers would need the transaction index).
- A batch of a producer id that is that producer's last batch in the log
  is kept even when all its records go: as an empty batch (header only,
  0 records) with the same base offset, last offset delta and sequence
  fields, so the producer's idempotence state survives (Kafka's
  RETAIN_EMPTY). Other empty batches are dropped.
- A batch whose records all survive (and whose horizon needs no setting)
  is kept byte for byte. Otherwise it is re-encoded: same base offset,
  last offset delta, leader epoch, producer fields and codec; each kept
  record with its original offset, timestamp, key, value and headers.

Byte layout of a record (docs/on-disk-format.md; `minilog.protocol` owns
the decoder): length varint, attributes int8, timestampDelta varlong,
offsetDelta varint, key (varint length, -1 = null), value (likewise),
headers count varint, then per header a key (length, utf-8) and a value.

Error handling: `filter_batch` raises `CorruptBatchError` for a batch it
cannot decode (the cleaner then marks the partition uncleanable).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from minilog.protocol import (
    CODEC_MASK,
    CODEC_NONE,
    CRC_START,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    TIMESTAMP_TYPE_MASK,
    BatchHeader,
    Record,
    decode_records,
)
from minilog.protocol._compression import compress
from minilog.protocol._varint import varint, zigzag_varint

from crc32c import crc32c

__all__ = [
    "DELETE_HORIZON_MASK",
    "BatchDecision",
    "FilterContext",
    "filter_batch",
    "delete_horizon_ms",
    "encode_batch",
    "keyless_records",
]

DELETE_HORIZON_MASK = 0x40            # KIP-534: the base timestamp is the delete horizon
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC = struct.Struct(">I")
_CRC_POS = 17
_NULL = b"\x01"                        # varint(-1)
_ZERO = b"\x00"

KEEP = "keep"          # write the stored bytes unchanged
DROP = "drop"          # write nothing
REWRITE = "rewrite"    # write `BatchDecision.data`


@dataclass(frozen=True)
class FilterContext:
    """What one cleaning pass knows when it looks at a batch."""

    offset_for_key: Callable[[bytes, int], int]  # the offset map's dict.get(key, -1)
    now_ms: int
    delete_retention_ms: int
    producer_last_batch: dict[int, int]         # producer id -> base offset of its last batch


@dataclass(frozen=True)
class BatchDecision:
    action: str                     # KEEP, DROP or REWRITE
    data: bytes | None = None       # the new batch for REWRITE
    records_in: int = 0
    records_kept: int = 0
    tombstones_dropped: int = 0
    keyless_dropped: int = 0
    horizon_ms: int | None = None   # the delete horizon of tombstones it keeps, if any


def delete_horizon_ms(header: BatchHeader) -> int | None:
    """The batch's KIP-534 delete horizon, or None when it has none yet."""
    return header.base_timestamp if header.attributes & DELETE_HORIZON_MASK else None


def filter_batch(header: BatchHeader, batch: Any, ctx: FilterContext) -> BatchDecision:
    """Decide what becomes of one stored batch (see the module rules)."""
    if header.is_control:
        return BatchDecision(KEEP)
    records = decode_records(batch, "", -1)
    horizon = delete_horizon_ms(header)
    retain_deletes = horizon is None or ctx.now_ms < horizon
    get = ctx.offset_for_key
    # Hot loop (every record of every cleaned batch): one comprehension, C-level
    # dict lookups; Record fields by index (2 offset, 4 key, 5 value).
    latest = [r for r in records if r[4] is not None and r[2] >= get(r[4], -1)]
    keyless = sum(1 for r in records if r[4] is None) if len(latest) < len(records) else 0
    tombstones = [r for r in latest if r[5] is None]
    tombstones_dropped = 0
    if tombstones and not retain_deletes:
        kept = [r for r in latest if r[5] is not None]
        tombstones_dropped, tombstones_kept = len(tombstones), 0
    else:
        kept, tombstones_kept = latest, len(tombstones)
    set_horizon = tombstones_kept > 0 and horizon is None
    if set_horizon:
        horizon = ctx.now_ms + ctx.delete_retention_ms
    counts: dict[str, Any] = dict(
        records_in=len(records), records_kept=len(kept), tombstones_dropped=tombstones_dropped,
        keyless_dropped=keyless, horizon_ms=horizon if tombstones_kept else None)
    last_of_producer = (header.producer_id >= 0
                        and ctx.producer_last_batch.get(header.producer_id) == header.base_offset)
    if not kept and not last_of_producer:
        return BatchDecision(DROP, **counts)
    if len(kept) == header.records_count and not set_horizon:
        return BatchDecision(KEEP, **counts)
    return BatchDecision(REWRITE, encode_batch(header, kept, delete_horizon=horizon if set_horizon else None),
                         **counts)


def encode_batch(header: BatchHeader, records: Sequence[Record], *,
                 delete_horizon: int | None = None) -> bytes:
    """Re-encode `records` (a subset of the batch `header` describes, in offset order).

    Keeps base offset, last offset delta, leader epoch, producer id, epoch,
    base sequence, timestamp type and codec. With `delete_horizon` the base
    timestamp becomes the horizon and attribute bit 6 is set; a batch that
    already has a horizon keeps it. With no records the batch is Kafka's
    empty batch: header only, uncompressed, base timestamp = max timestamp.

    Raises:
        ValueError: a record's offset lies outside the batch.
    """
    attributes = header.attributes
    log_append_time = bool(attributes & TIMESTAMP_TYPE_MASK)
    if delete_horizon is not None:
        attributes |= DELETE_HORIZON_MASK
        base_timestamp = delete_horizon
    elif records or attributes & DELETE_HORIZON_MASK:
        base_timestamp = header.base_timestamp
    else:
        base_timestamp = header.max_timestamp
    if not records:
        attributes &= ~CODEC_MASK
        max_timestamp, body = header.max_timestamp, b""
    else:
        if log_append_time:
            max_timestamp = header.max_timestamp
        else:
            max_timestamp = max(r.timestamp for r in records)
        body = _encode_records(records, header.base_offset, header.last_offset_delta,
                               base_timestamp)
        codec = attributes & CODEC_MASK
        if codec != CODEC_NONE:
            body = compress(codec, body)
    packed = _HEADER.pack(
        header.base_offset, HEADER_SIZE - LOG_OVERHEAD + len(body), header.partition_leader_epoch,
        MAGIC, 0, attributes, header.last_offset_delta, base_timestamp, max_timestamp,
        header.producer_id, header.producer_epoch, header.base_sequence, len(records))
    crc = crc32c(body, crc32c(memoryview(packed)[CRC_START:]))
    return b"".join((packed[:_CRC_POS], _CRC.pack(crc), packed[_CRC_POS + 4:], body))


def _encode_records(records: Sequence[Record], base_offset: int, last_offset_delta: int,
                    base_timestamp: int) -> bytes:
    pieces: list[bytes] = []
    append = pieces.append
    for record in records:
        offset_delta = record.offset - base_offset
        if not 0 <= offset_delta <= last_offset_delta:
            raise ValueError(f"record offset {record.offset} outside the batch at {base_offset}")
        key, value, headers = record.key, record.value, record.headers
        fields = [_ZERO, zigzag_varint(record.timestamp - base_timestamp), varint(offset_delta),
                  _NULL if key is None else varint(len(key)), key or b"",
                  _NULL if value is None else varint(len(value)), value or b"",
                  varint(len(headers))]
        for h_key, h_value in headers:
            raw = h_key.encode("utf-8")
            fields += (varint(len(raw)), raw)
            fields += (_NULL, b"") if h_value is None else (varint(len(h_value)), h_value)
        body = b"".join(fields)
        append(varint(len(body)))
        append(body)
    return b"".join(pieces)


def keyless_records(batch: Any) -> int:
    """How many records of the one batch `batch` have no key (a compacted topic refuses them).

    Control batches count 0. Raises `CorruptBatchError` when the batch cannot be decoded.
    """
    records = decode_records(batch, "", -1)
    return sum(1 for record in records if record.key is None)
