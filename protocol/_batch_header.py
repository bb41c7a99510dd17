"""The fixed 61-byte header of a Kafka RecordBatch v2 (magic 2).

This module is the one place that knows the header's byte layout. The
storage layer uses it to validate and stamp batches without decoding their
records; the record codec (`_records*.py`) builds on it.

Byte layout (big-endian, offsets from the start of the batch)::

    0  base_offset            int64   stamped by the broker on append
    8  batch_length           int32   bytes after this field (total - 12)
   12  partition_leader_epoch int32   stamped by the broker on append
   16  magic                  int8    always 2
   17  crc                    uint32  CRC-32C of bytes [21, end)
   21  attributes             int16   bits 0-2 codec, 3 timestamp type,
                                      4 transactional, 5 control
   23  last_offset_delta      int32   offset of last record - base_offset
   27  base_timestamp         int64   ms
   35  max_timestamp          int64   ms
   43  producer_id            int64   -1 when not idempotent
   51  producer_epoch         int16
   53  base_sequence          int32
   57  records_count          int32
   61  records ...

Theory of operation: the CRC starts at `attributes`, so the two fields the
broker writes (base offset, leader epoch) sit outside it and stamping is a
16-byte overwrite with no CRC recomputation. That is the property that lets
the broker handle batches as opaque bytes.

Error handling: `parse_header` and `check_batch` raise only
`CorruptBatchError` for bad input; anything else is a bug.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, TypeAlias

from crc32c import crc32c

from ._errors import CorruptBatchError

__all__ = [
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "MAGIC",
    "CRC_START",
    "BatchHeader",
    "parse_header",
    "check_batch",
    "check_batch_fields",
    "batch_size_at",
    "stamp_batch",
    "compute_crc",
    "CODEC_NONE",
    "CODEC_GZIP",
    "CODEC_SNAPPY",
    "CODEC_LZ4",
    "CODEC_ZSTD",
    "CODEC_MASK",
    "TIMESTAMP_TYPE_MASK",
    "TRANSACTIONAL_MASK",
    "CONTROL_MASK",
]

HEADER_SIZE = 61          # bytes before the first record
LOG_OVERHEAD = 12         # base_offset + batch_length: bytes not counted in batch_length
MAGIC = 2
CRC_START = 21            # first byte covered by the CRC
_MAGIC_POS = 16
_CRC_POS = 17

CODEC_NONE = 0
CODEC_GZIP = 1
CODEC_SNAPPY = 2
CODEC_LZ4 = 3
CODEC_ZSTD = 4
CODEC_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20

BytesLike: TypeAlias = bytes | bytearray | memoryview  # what the codec reads
HeaderFields: TypeAlias = tuple[int, int, int, int, int, int, int, int, int, int, int, int, int]

_HEADER = struct.Struct(">qiibIhiqqqhii")
assert _HEADER.size == HEADER_SIZE
_PREFIX = struct.Struct(">qi")       # base_offset, batch_length
_STAMP = struct.Struct(">qii")       # base_offset, batch_length, leader_epoch


class BatchHeader(NamedTuple):
    """The decoded 61-byte header. `size` is the whole batch in bytes."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def codec(self) -> int:
        return self.attributes & CODEC_MASK

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)


def batch_size_at(buf: BytesLike, pos: int = 0) -> int:
    """Return the total size of the batch starting at `pos`, from its length field.

    Raises `CorruptBatchError` when fewer than 12 bytes remain or the length
    is smaller than a header. The caller checks the size against its own limit
    before reading that many bytes (a garbage length never drives allocation).
    """
    if len(buf) - pos < LOG_OVERHEAD:
        raise CorruptBatchError("truncated batch: no room for the length field")
    batch_length: int = _PREFIX.unpack_from(buf, pos)[1]
    if batch_length < HEADER_SIZE - LOG_OVERHEAD:
        raise CorruptBatchError(f"batch length {batch_length} is smaller than a header")
    return batch_length + LOG_OVERHEAD


def parse_header(buf: BytesLike, pos: int = 0) -> BatchHeader:
    """Decode the header at `pos` without looking at the records or the CRC."""
    if len(buf) - pos < HEADER_SIZE:
        raise CorruptBatchError(
            f"truncated batch header: {len(buf) - pos} bytes, need {HEADER_SIZE}"
        )
    header = BatchHeader._make(_HEADER.unpack_from(buf, pos))
    if header.magic != MAGIC:
        raise CorruptBatchError(f"unsupported magic {header.magic}, expected {MAGIC}")
    if header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
        raise CorruptBatchError(f"batch length {header.batch_length} is smaller than a header")
    if header.records_count < 0 or header.last_offset_delta < 0:
        raise CorruptBatchError("negative record count or offset delta")
    return header


def compute_crc(buf: BytesLike, pos: int = 0, size: int | None = None) -> int:
    """CRC-32C of the batch at `pos` from `attributes` to its end."""
    if size is None:
        size = batch_size_at(buf, pos)
    view = memoryview(buf)[pos + CRC_START : pos + size]
    crc: int = crc32c(view)
    return crc


def check_batch(buf: BytesLike, pos: int = 0, size_max: int | None = None) -> BatchHeader:
    """Parse and fully validate the batch at `pos`: length, magic, bounds, CRC.

    Args:
        buf: bytes-like holding one or more batches.
        pos: where the batch starts.
        size_max: reject batches larger than this many bytes (before reading them).

    Returns:
        The header. The batch occupies `buf[pos : pos + header.size]`.

    Raises:
        CorruptBatchError: truncated, wrong magic, oversized, or CRC mismatch.
    """
    return BatchHeader._make(check_batch_fields(buf, pos, size_max))


def check_batch_fields(buf: BytesLike, pos: int = 0, size_max: int | None = None) -> HeaderFields:
    """`check_batch` without building a `BatchHeader`: the same checks, and the
    13 header fields as a plain tuple in `BatchHeader` order (the log's append
    path unpacks them into locals).

    Raises:
        CorruptBatchError: as `check_batch`.
    """
    # Fast path (every append): one unpack, every check on locals, no
    # intermediate objects. Anything that fails falls through to the
    # step-by-step checks below, which name the problem.
    if len(buf) - pos >= HEADER_SIZE:
        fields: HeaderFields = _HEADER.unpack_from(buf, pos)
        size = fields[1] + LOG_OVERHEAD
        records_count, last_offset_delta = fields[12], fields[6]
        if (fields[3] == MAGIC and HEADER_SIZE <= size <= len(buf) - pos
                and (size_max is None or size <= size_max)
                and 0 <= records_count <= last_offset_delta + 1 and last_offset_delta >= 0
                and crc32c(memoryview(buf)[pos + CRC_START : pos + size]) == fields[4]):
            return fields
    size = batch_size_at(buf, pos)
    if size_max is not None and size > size_max:
        raise CorruptBatchError(f"batch of {size} bytes exceeds the limit of {size_max}")
    if len(buf) - pos < size:
        raise CorruptBatchError(f"truncated batch: {len(buf) - pos} of {size} bytes present")
    header = parse_header(buf, pos)
    actual = compute_crc(buf, pos, size)
    if actual != header.crc:
        raise CorruptBatchError(f"CRC mismatch: stored {header.crc:#010x}, computed {actual:#010x}")
    if header.last_offset_delta < header.records_count - 1:
        raise CorruptBatchError("last offset delta smaller than record count - 1")
    raise AssertionError(f"check_batch fast path rejected a valid batch: {header}")


def stamp_batch(buf: bytearray | memoryview, pos: int, base_offset: int, leader_epoch: int) -> None:
    """Overwrite base offset and leader epoch in place; the CRC stays valid."""
    _, batch_length = _PREFIX.unpack_from(buf, pos)
    _STAMP.pack_into(buf, pos, base_offset, batch_length, leader_epoch)
