"""The reference record codec: one record at a time, any layout.

Everything about the records of a RecordBatch v2 that must be *right* lives
here; `_records_fast.py` only makes the common shapes fast, and is tested
against this module. The 61-byte header lives in `_batch_header.py`
(docs/on-disk-format.md has the byte-by-byte picture). Each record is::

    length          varint   bytes after this field
    attributes      int8     unused, 0
    timestampDelta  varlong  timestamp - batch base_timestamp
    offsetDelta     varint   offset - batch base_offset
    keyLength       varint   -1 = null key
    key             bytes
    valueLength     varint   -1 = null value
    value           bytes
    headersCount    varint
    headers         [keyLength varint, key utf-8, valueLength varint (-1 null), value]

Every varint is Kafka's zigzag (signed) base-128 varint. A compressed batch
keeps the header in the clear and compresses the records section as one blob
(`_compression.py`); the CRC-32C covers attributes..end of the *stored*
(compressed) bytes.

Rules:

* `_iter_general` is the definition of "a batch we can read": the fast
  decoder (`_records_fast._decode_uniform`) and the produce-path validator
  (`_validate.py`) must agree with it on every input (property tests).
* Nothing here trusts a length before checking it against the bytes present:
  a declared record count, field length or decompressed size never drives an
  allocation (`_records_section` checks the limits first).

Theory of operation. Encoding (`_encode_general`) builds a list of pieces
and joins it once. Decoding (`_iter_general`) walks the records in order;
one-byte varints (almost all of them) are decoded inline, which makes it
~2x faster than a call per field, longer ones go to `read_varint`. Slices
never raise, so an overrun is caught by the `pos == record_end` check at the
end of each record (pos only grows).

`Record` is a NamedTuple: the bulk path creates it with
`tuple.__new__(Record, fields)` through `functools.partial` (no Python frame
per record), attribute access uses C-level tuple getters, and the repr is
readable. Bulk construction cost measured on CPython 3.11, 2-vCPU Xeon VM,
GC paused (`perf/bench_records.py --record-types`): namedtuple via
tuple.__new__ ~145-240 ns, slotted class ~330-360 ns, namedtuple `_make`
~210-370 ns, namedtuple `__new__` ~280-490 ns; a plain tuple ~45-80 ns.

Error contract: the decoders here (`iter_batches`, `read_batch_records`)
raise only `CorruptBatchError` (or its subclass `LimitExceededError` for a
batch over `records_max` or `decompressed_bytes_max`) on bad input, never
IndexError, struct.error, UnicodeDecodeError, zlib.error or a codec
library's exception. Anything else is a bug. `_encode_general` raises
`TypeError` for a value, key or header of the wrong type.

Resource handling: a batch's declared record count is checked against
`records_max` and its records section against `decompressed_bytes_max`
before anything is allocated; decompression is bounded by the latter.
Thread-safety: every function is safe to call from several threads.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any, NamedTuple

from crc32c import crc32c

from ._batch_header import (
    CODEC_MASK,
    CODEC_NONE,
    CRC_START,
    HEADER_SIZE,
    LOG_OVERHEAD,
    TIMESTAMP_TYPE_MASK,
    BatchHeader,
    BytesLike,
    batch_size_at,
    parse_header,
)
from ._compression import decompress
from ._errors import CorruptBatchError, LimitExceededError
from ._varint import NULL as _NULL
from ._varint import ZERO as _ZERO
from ._varint import read_varint as _read_varint
from ._varint import varint as _varint

__all__ = [
    "Record",
    "iter_batches",
    "read_batch_records",
    "RECORDS_MAX",
    "DECOMPRESSED_BYTES_MAX",
]

RECORDS_MAX = 1_000_000                   # records in one batch, default limit
DECOMPRESSED_BYTES_MAX = 64 * 1024 * 1024  # records section after decompression
RECORD_BYTES_MIN = 7    # length, attributes, ts, offset, key, value, headers: 1 byte each

Headers = Sequence[tuple[str, bytes | None]]


class Record(NamedTuple):
    """One consumed record.

    `headers` is a read-only sequence of (str, bytes | None) pairs: a list
    when the record has headers, the shared empty tuple `()` when it has none
    (one object for every header-less record instead of a new list each).
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers


NO_HEADERS: tuple[()] = ()   # every header-less Record's headers (shared, immutable)
new_record: Any = partial(tuple.__new__, Record)  # C-level constructor from a tuple


# ----------------------------------------------------------------------------
# Encoding

def now_ms() -> int:
    return time.time_ns() // 1_000_000


def timestamp_deltas(timestamps: Sequence[int] | int | None, n: int) -> tuple[int, int, list[int] | None]:
    """Return (base timestamp, max timestamp, deltas or None when all equal)."""
    if timestamps is None:
        timestamps = now_ms()
    if isinstance(timestamps, int):
        return timestamps, timestamps, None
    if len(timestamps) != n:
        raise ValueError(f"{len(timestamps)} timestamps for {n} values")
    base = timestamps[0]
    if timestamps.count(base) == n:
        return base, base, None
    return base, max(timestamps), [t - base for t in timestamps]


def encode_general(values: Sequence[BytesLike | None], keys: Sequence[BytesLike | None] | None,
                   deltas: Sequence[int] | None, headers: Sequence[Headers | None] | None) -> bytes:
    """Records section, one record at a time; any keys, headers, timestamps."""
    pieces: list[BytesLike] = []
    append = pieces.append
    varint = _varint
    for i, value in enumerate(values):
        key = keys[i] if keys is not None else None
        hdrs = headers[i] if headers is not None else None
        mid: list[Any] = [
            _ZERO,
            varint(deltas[i]) if deltas is not None else _ZERO,
            varint(i),
            _NULL if key is None else varint(len(key)),
            b"" if key is None else key,
            _NULL if value is None else varint(len(value)),
            b"" if value is None else value,
        ]
        if hdrs:
            mid.append(varint(len(hdrs)))
            for h_key, h_value in hdrs:
                if not isinstance(h_key, str):
                    raise TypeError(f"header key must be str, not {type(h_key).__name__}")
                raw = h_key.encode("utf-8")
                mid += (varint(len(raw)), raw)
                mid += (_NULL, b"") if h_value is None else (varint(len(h_value)), h_value)
        else:
            mid.append(_ZERO)
        try:
            record = b"".join(mid)
        except TypeError as exc:
            raise TypeError(f"record {i}: key and value must be bytes-like or None: {exc}") from None
        append(varint(len(record)))
        append(record)
    return b"".join(pieces)


# ----------------------------------------------------------------------------
# Decoding: batches

def iter_batches(buf: BytesLike) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Walk the whole batches lying back to back in `buf`, records untouched.

    Yields (header, view of the whole batch). A trailing partial batch (a
    fetch response may end with one) ends the walk silently. Neither the CRC
    nor the records are checked here; `read_batch_records` does that.

    Raises:
        CorruptBatchError: a complete-looking batch has a bad length or magic.
    """
    view = memoryview(buf).cast("B") if not isinstance(buf, bytes) else memoryview(buf)
    end = len(view)
    pos = 0
    while end - pos >= LOG_OVERHEAD:
        size = batch_size_at(view, pos)
        if size > end - pos:
            return  # trailing partial batch
        header = parse_header(view, pos)
        yield header, view[pos : pos + size]
        pos += size


def records_section(batch: BytesLike, header: BatchHeader, verify_crc: bool, records_max: int,
                    decompressed_bytes_max: int) -> bytes:
    """Check one batch's CRC and limits; return its records section, decompressed.

    Raises:
        LimitExceededError: over `records_max` or `decompressed_bytes_max`.
        CorruptBatchError: truncated, CRC mismatch, codec failure, or more
            records declared than the section can hold.
    """
    if header.records_count > records_max:
        raise LimitExceededError(
            f"batch declares {header.records_count} records, limit is {records_max}")
    size = header.size
    if len(batch) < size:
        raise CorruptBatchError(f"truncated batch: {len(batch)} of {size} bytes present")
    if verify_crc:
        actual = crc32c(memoryview(batch)[CRC_START:size])
        if actual != header.crc:
            raise CorruptBatchError(
                f"CRC mismatch: stored {header.crc:#010x}, computed {actual:#010x}")
    codec = header.attributes & CODEC_MASK
    if codec == CODEC_NONE:
        if size - HEADER_SIZE > decompressed_bytes_max:
            raise LimitExceededError(
                f"records section of {size - HEADER_SIZE} bytes, limit {decompressed_bytes_max}")
        section = bytes(memoryview(batch)[HEADER_SIZE:size])
    else:
        section = decompress(codec, memoryview(batch)[HEADER_SIZE:size], decompressed_bytes_max)
    if header.records_count * RECORD_BYTES_MIN > len(section):
        raise CorruptBatchError(
            f"{header.records_count} records cannot fit in {len(section)} bytes")
    return section


def read_batch_records(
    batch: BytesLike,
    *,
    verify_crc: bool = True,
    records_max: int = RECORDS_MAX,
    decompressed_bytes_max: int = DECOMPRESSED_BYTES_MAX,
    topic: str = "",
    partition: int = -1,
) -> Iterator[Record]:
    """Lazily iterate the records of the one batch at the start of `batch`.

    Control batches are not skipped here (check `parse_header(...).is_control`).
    Records carry `topic` and `partition` as given (defaults "" and -1).
    The header, CRC and limits are checked on the first `next()`.

    Raises:
        CorruptBatchError: anything wrong with the batch, possibly after some
            records have been yielded.
    """
    header = parse_header(batch)
    section = records_section(batch, header, verify_crc, records_max, decompressed_bytes_max)
    yield from iter_general(section, header, topic, partition)


def iter_general(rec: bytes, header: BatchHeader, topic: str, partition: int) -> Iterator[Record]:
    """The reference record parser: any layout, one record at a time.

    Varints of one byte (almost all of them) are decoded inline, which makes
    this ~2x faster than a call per field; longer ones go to `_read_varint`.
    Slices never raise, so overruns are caught by the `pos == record_end`
    check at the end of each record (pos only grows).
    """
    base_offset = header.base_offset
    base_ts = header.base_timestamp
    log_append_ts = header.max_timestamp if header.attributes & TIMESTAMP_TYPE_MASK else None
    end = len(rec)
    pos = 0
    read = _read_varint
    new = new_record
    key: bytes | None
    value: bytes | None
    headers: Headers
    try:
        for _ in range(header.records_count):
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
                raise CorruptBatchError(f"record length {length} at {pos} is out of bounds")
            b = rec[pos + 1]  # pos: attributes, unused by Kafka
            if b < 0x80:
                ts_delta = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                ts_delta, pos = read(rec, pos + 1)
            b = rec[pos]
            if b < 0x80:
                offset_delta = (b >> 1) ^ -(b & 1)
                pos += 1
            else:
                offset_delta, pos = read(rec, pos)
            b = rec[pos]
            if b < 0x80 and not b & 1:
                pos += 1
                key = rec[pos : pos + (b >> 1)]
                pos += b >> 1
            elif b == 1:
                key = None
                pos += 1
            else:
                key, pos = read_bytes(rec, pos, record_end)
            b = rec[pos]
            if b < 0x80 and not b & 1:
                pos += 1
                value = rec[pos : pos + (b >> 1)]
                pos += b >> 1
            elif b > 0x80 and not b & 1 and rec[pos + 1] < 0x80:  # 64..8191 bytes
                n = ((b & 0x7F) | (rec[pos + 1] << 7)) >> 1
                pos += 2
                value = rec[pos : pos + n]
                pos += n
            elif b == 1:
                value = None
                pos += 1
            else:
                value, pos = read_bytes(rec, pos, record_end)
            if rec[pos] == 0:
                headers = NO_HEADERS
                pos += 1
            else:
                headers, pos = _read_headers(rec, pos, record_end)
            if pos != record_end:
                raise CorruptBatchError(
                    f"record declares {length} bytes, its fields use {pos - record_end + length}")
            record: Record = new((topic, partition, base_offset + offset_delta,
                                  base_ts + ts_delta if log_append_ts is None else log_append_ts,
                                  key, value, headers))
            yield record
    except (IndexError, UnicodeDecodeError) as exc:
        raise CorruptBatchError(f"malformed record: {exc}") from None
    if pos != end:
        raise CorruptBatchError(f"{end - pos} bytes left after {header.records_count} records")


def _read_headers(rec: bytes, pos: int, record_end: int) -> tuple[list[tuple[str, bytes | None]], int]:
    count, pos = _read_varint(rec, pos)
    if not 0 <= count <= (record_end - pos) // 2:  # a header takes >= 2 bytes
        raise CorruptBatchError(f"bad header count {count}")
    headers = []
    for _ in range(count):
        h_key, pos = read_bytes(rec, pos, record_end)
        if h_key is None:
            raise CorruptBatchError("null header key")
        h_value, pos = read_bytes(rec, pos, record_end)
        headers.append((h_key.decode("utf-8"), h_value))
    return headers, pos


def read_bytes(rec: bytes, pos: int, limit: int) -> tuple[bytes | None, int]:
    """Read a varint length (-1 = null) and that many bytes, within `limit`."""
    n, pos = _read_varint(rec, pos)
    if n < 0:
        if n != -1:
            raise CorruptBatchError(f"negative length {n}")
        return None, pos
    if pos + n > limit:
        raise CorruptBatchError(f"field of {n} bytes overruns its record")
    return rec[pos : pos + n], pos + n
