"""Validate a produced RecordBatch v2 before it is stored, as Kafka's LogValidator does.

A batch with a good CRC can still be unreadable: its CRC covers whatever the
producer wrote. Kafka's broker therefore walks every produced batch's records
before appending it (`LogValidator.validateMessagesAndAssignOffsets`), and so
does minilog's, here, once per batch on the produce path. A batch that passes
is one every consumer can read: the reference decoder
(`_records_reference.iter_general`) reads it, with dense offsets.

Rules (what `validate_batch` checks; the error is the Kafka one):

    the buffer is exactly one batch, magic 2           CorruptBatchError    CORRUPT_MESSAGE
    CRC-32C of attributes..end matches (verify_crc)    CorruptBatchError    CORRUPT_MESSAGE
    records_count >= 1, not a control batch            InvalidRecordError   INVALID_RECORD
    last_offset_delta == records_count - 1             InvalidRecordError   INVALID_RECORD
    at most RECORDS_MAX records                        InvalidRecordError   INVALID_RECORD
    compressed: known codec, decompresses within       InvalidRecordError   INVALID_RECORD
      max_message_bytes * DECOMPRESSION_RATIO_MAX
      (and DECOMPRESSED_BYTES_MAX, as consumers)
    each record: length varint >= 6 and inside the     InvalidRecordError   INVALID_RECORD
      section; its fields (timestamp, offset delta,
      key, value, headers) end exactly at its end
    record i has offsetDelta i                         InvalidRecordError   INVALID_RECORD
    key and value lengths are -1 or fit the record;    InvalidRecordError   INVALID_RECORD
      headers count fits; header keys non-null UTF-8
    records fill the section exactly                   InvalidRecordError   INVALID_RECORD
    timestamps: create time: max over the records ==   InvalidRecordError   INVALID_RECORD
      max_timestamp, none below -1 (NO_TIMESTAMP);
      log-append time: max_timestamp >= -1

`InvalidRecordError` is a `CorruptBatchError`: a caller that does not care
which maps both to CORRUPT_MESSAGE. Kafka does not refuse a wrong
max_timestamp, it rewrites it (and the CRC); minilog stores the producer's
bytes unchanged (DESIGN.md), so a max_timestamp that would mislead the time
index is refused instead. The record `attributes` byte is unused by Kafka and
not checked, as in Kafka and the reference decoder.

Theory of operation. The check must cost far less than the append (the
produce path's budget is per batch, not per record), so it is a structural
walk over the varints, never a decode into objects:

* Uncompressed batches whose records share one layout (what producers send:
  one key length, one value length, no headers) are checked with no Python
  code per record by `_records_fast.uniform_layout`: every layout byte of
  every record (length varint, offset delta i, key and value lengths,
  headers count) is one strided slice compared with a planned column, in C;
  the timestamp bytes are one more slice, ranked with `bytes.translate` and
  reduced with `max`/`min`.
* Records of varying key and value length (keyed events) are found by
  `_records_scan.scan_records`: one regular-expression scan and C-level
  checks, no Python code per record either.
* Anything else takes `_walk_records`: one loop iteration per record, one-
  byte varints inline, no slices of keys or values, no objects.
* Compressed batches are decompressed first with a hard bound (the codecs in
  `_compression.py` stop at bound + 1 output bytes, and a zstd frame that
  declares more is refused before any output), then checked as above. A
  4 KB zstd batch that would inflate to 100 MiB costs at most the bound.

Error contract: `validate_batch` raises only `CorruptBatchError` and its
subclass `InvalidRecordError` on bad input; anything else is a bug.
Resource handling: memory is at most the batch plus its decompressed
section (bounded as above). Thread-safety: safe from several threads.
"""

from __future__ import annotations

from crc32c import crc32c

from ._batch_header import (
    CODEC_MASK,
    CODEC_NONE,
    CONTROL_MASK,
    CRC_START,
    HEADER_SIZE,
    TIMESTAMP_TYPE_MASK,
    BatchHeader,
    BytesLike,
    parse_header,
)
from ._compression import decompress
from ._errors import CorruptBatchError, InvalidRecordError
from ._records_fast import uniform_layout
from ._records_reference import DECOMPRESSED_BYTES_MAX, RECORD_BYTES_MIN, RECORDS_MAX
from ._records_scan import scan_records
from ._varint import read_varint as _read_varint

__all__ = ["validate_batch", "decompressed_bytes_bound", "DECOMPRESSION_RATIO_MAX"]

# A compressed batch may inflate to at most this many times max.message.bytes.
# Real producers stay far below it (a batch is sized by its uncompressed
# bytes in minilog's client; Kafka's estimates a ratio); a bomb does not.
DECOMPRESSION_RATIO_MAX = 16
NO_TIMESTAMP = -1

# A one-byte zigzag varint b decodes to (b >> 1) ^ -(b & 1), in -64..63;
# _TS_RANK maps it to that value + 64 (0..127), which keeps the order, so the
# largest and smallest timestampDelta of a column are max() and min() of the
# translated bytes, in C.
_TS_RANK = bytes(((b >> 1) ^ -(b & 1)) + 64 for b in range(128)) + bytes(128)
_RANK_BYTES = [bytes((r,)) for r in range(128)]
_RANKS_UP_TO = [bytes(range(r + 1)) for r in range(128)]
_new_header = tuple.__new__       # a BatchHeader from checked fields, without NamedTuple's __new__


def decompressed_bytes_bound(max_message_bytes: int) -> int:
    """The most bytes a batch of a topic with this max.message.bytes may decompress to.

    Also never more than a consumer's default `decompressed_bytes_max`, so
    that every stored batch is readable with the decoder's defaults.
    """
    return min(max_message_bytes * DECOMPRESSION_RATIO_MAX, DECOMPRESSED_BYTES_MAX)


def validate_batch(batch: BytesLike, *, max_message_bytes: int, verify_crc: bool = True,
                   fields: tuple[int, ...] | None = None) -> BatchHeader:
    """Check that `batch` is exactly one well-formed RecordBatch v2 (see the module rules).

    Args:
        batch: the batch's bytes, nothing before or after it. Its size is
            the caller's to check against max.message.bytes first
            (MESSAGE_TOO_LARGE); this function does not.
        max_message_bytes: the topic's max.message.bytes; a compressed
            batch may decompress to `decompressed_bytes_bound()` of it.
        verify_crc: False when the caller has already checked the CRC of
            these very bytes.
        fields: the 13 header fields `check_batch_fields` returned for these
            very bytes (magic, bounds and CRC checked): the header is then
            not parsed again and the CRC not recomputed (the produce path
            checks each batch's header once, DESIGN.md).

    Returns:
        The parsed header.

    Raises:
        CorruptBatchError: framing or CRC (CORRUPT_MESSAGE).
        InvalidRecordError: the records (INVALID_RECORD).
    """
    if fields is None:
        header = parse_header(batch)
    else:
        header = _new_header(BatchHeader, fields)
        verify_crc = False
    size = header.size
    if size != len(batch):
        raise CorruptBatchError(f"batch declares {size} bytes, {len(batch)} were sent")
    view = memoryview(batch)
    if verify_crc:
        actual = crc32c(view[CRC_START:size])
        if actual != header.crc:
            raise CorruptBatchError(f"CRC mismatch: stored {header.crc:#010x}, computed {actual:#010x}")
    n = header.records_count
    if n < 1:
        raise InvalidRecordError("batch has no records")
    if header.attributes & CONTROL_MASK:
        raise InvalidRecordError("clients may not produce control batches")
    if n > RECORDS_MAX:
        raise InvalidRecordError(f"batch declares {n} records, consumers accept at most {RECORDS_MAX}")
    if header.last_offset_delta != n - 1:
        raise InvalidRecordError(
            f"last offset delta {header.last_offset_delta} does not match {n} records")
    section = _section(view, header, decompressed_bytes_bound(max_message_bytes))
    if n * RECORD_BYTES_MIN > len(section):
        raise InvalidRecordError(f"{n} records cannot fit in {len(section)} bytes")
    found = uniform_layout(section, header)
    if found is not None:
        if _uniform_timestamps_ok(header, found[1]):
            return header
        ranks = found[1].translate(_TS_RANK)
        ts_min, ts_max = min(ranks) - 64, max(ranks) - 64
    else:
        scanned = scan_records(section, n)
        if scanned is not None:
            ts_min, ts_max = min(scanned[0]), max(scanned[0])
        else:
            ts_min, ts_max = _walk_records(section, n)
    _check_timestamps(header, ts_min, ts_max)
    return header


def _uniform_timestamps_ok(header: BatchHeader, ts_column: bytes) -> bool:
    """The common answer of `_check_timestamps` for a column of one-byte
    timestampDeltas, without a Python-level pass over the column.

    The largest delta must be max_timestamp - base_timestamp: its rank is
    present, and deleting every rank up to it leaves nothing. The smallest
    timestamp is >= -1 whenever base_timestamp >= 63 (deltas are >= -64).
    False means "look closer" (`_check_timestamps` names the problem).
    """
    if header.attributes & TIMESTAMP_TYPE_MASK or header.base_timestamp < 63:
        return False
    top = header.max_timestamp - header.base_timestamp + 64
    if not 0 <= top < 128:
        return False
    ranks = ts_column.translate(_TS_RANK)
    return _RANK_BYTES[top] in ranks and not ranks.translate(None, _RANKS_UP_TO[top])


def _section(view: memoryview, header: BatchHeader, bound: int) -> bytes:
    """The records section, decompressed within `bound` bytes."""
    codec = header.attributes & CODEC_MASK
    if codec == CODEC_NONE:
        if len(view) - HEADER_SIZE > DECOMPRESSED_BYTES_MAX:
            raise InvalidRecordError(f"records section of {len(view) - HEADER_SIZE} bytes is over "
                                     f"{DECOMPRESSED_BYTES_MAX}")
        return bytes(view[HEADER_SIZE:])
    try:
        return decompress(codec, view[HEADER_SIZE:], bound)
    except CorruptBatchError as exc:  # a bomb, bad data, unknown codec: the CRC was right
        raise InvalidRecordError(str(exc)) from None


def _check_timestamps(header: BatchHeader, delta_min: int, delta_max: int) -> None:
    if header.attributes & TIMESTAMP_TYPE_MASK:
        if header.max_timestamp < NO_TIMESTAMP:
            raise InvalidRecordError(f"log-append timestamp {header.max_timestamp} is negative")
        return
    base = header.base_timestamp
    if base + delta_max != header.max_timestamp:
        raise InvalidRecordError(
            f"max timestamp {header.max_timestamp} is not the records' largest, {base + delta_max}")
    if base + delta_min < NO_TIMESTAMP:
        raise InvalidRecordError(f"record timestamp {base + delta_min} is negative")


def _walk_records(rec: bytes, n: int) -> tuple[int, int]:
    """Walk `n` records of any layout; return (smallest, largest) timestampDelta.

    The reference parser's loop (`iter_general`) without its slices and
    objects: one-byte varints inline, lengths checked against the record.
    An overrun is caught by the `pos == record_end` check (pos only grows).
    """
    end = len(rec)
    pos = 0
    read = _read_varint
    ts_min = ts_max = 0
    try:
        for i in range(n):
            b = rec[pos]
            if b < 0x80:
                length = (b >> 1) ^ -(b & 1)
                pos += 1
            elif rec[pos + 1] < 0x80:  # two bytes: records of 64..8191 bytes
                z = (b & 0x7F) | (rec[pos + 1] << 7)
                length = (z >> 1) ^ -(z & 1)
                pos += 2
            else:
                length, pos = read(rec, pos)
            record_end = pos + length
            if length < 6 or record_end > end:
                raise InvalidRecordError(f"record {i}: length {length} at {pos} is out of bounds")
            b = rec[pos + 1]  # pos: attributes, unused
            if b < 0x80:
                ts = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                ts, pos = read(rec, pos + 1)
            if ts > ts_max or not i:
                ts_max = ts
            if ts < ts_min or not i:
                ts_min = ts
            b = rec[pos]
            if b < 0x80:
                offset_delta = (b >> 1) ^ -(b & 1)
                pos += 1
            else:
                offset_delta, pos = read(rec, pos)
            if offset_delta != i:
                raise InvalidRecordError(f"record {i} has offset delta {offset_delta}")
            for _field in (0, 1):  # key, value
                b = rec[pos]
                if b < 0x80 and not b & 1:
                    pos += 1 + (b >> 1)
                elif b == 1:
                    pos += 1
                else:
                    size, pos = read(rec, pos)
                    if size < -1 or pos + size > record_end:
                        raise InvalidRecordError(f"record {i}: field length {size} does not fit the record")
                    pos += max(size, 0)
            if rec[pos] == 0:
                pos += 1
            else:
                pos = _walk_headers(rec, pos, record_end)
            if pos != record_end:
                raise InvalidRecordError(
                    f"record {i} declares {length} bytes, its fields use {pos - record_end + length}")
    except IndexError:
        raise InvalidRecordError("a record overruns the records section") from None
    except CorruptBatchError as exc:  # read_varint: a varint of more than 10 bytes
        if isinstance(exc, InvalidRecordError):
            raise
        raise InvalidRecordError(str(exc)) from None
    if pos != end:
        raise InvalidRecordError(f"{end - pos} bytes left after {n} records")
    return ts_min, ts_max


def _walk_headers(rec: bytes, pos: int, record_end: int) -> int:
    count, pos = _read_varint(rec, pos)
    if not 0 <= count <= (record_end - pos) // 2:  # a header takes >= 2 bytes
        raise InvalidRecordError(f"bad header count {count}")
    for _ in range(count):
        size, pos = _read_varint(rec, pos)
        if size < 0 or pos + size > record_end:
            raise InvalidRecordError(f"header key length {size} does not fit the record")
        try:
            rec[pos : pos + size].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRecordError("header key is not UTF-8") from None
        pos += size
        size, pos = _read_varint(rec, pos)
        if size < -1 or pos + size > record_end:
            raise InvalidRecordError(f"header value length {size} does not fit the record")
        pos += max(size, 0)
    return pos
