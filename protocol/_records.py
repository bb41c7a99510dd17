"""The records of a Kafka RecordBatch v2: build batches, decode them.

The 61-byte header lives in `_batch_header.py`; this module owns what
follows it (docs/on-disk-format.md has the byte-by-byte picture). Each
record is::

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

Theory of operation. Python pays per bytecode, not per byte, so both
directions avoid per-record work where the records share one layout:

* Encoding builds a list of pieces and joins it once. Varints of small
  numbers come from lookup tables. In the common producer case (no keys, no
  headers, values of one length, timestamps within 63 ms of the first)
  record i is `heads[i] + tsDelta_i + tails[i] + value_i` where `heads` and
  `tails` depend only on i and the value length: they are cached per value
  length and the body is one `bytes.join` over a list filled by four slice
  assignments (`_encode_uniform`), no Python code per record.
* Decoding parses the first record, assumes every record has its layout
  (same key and value lengths, no headers, offsetDelta == i, one-byte
  timestampDelta), and checks that assumption in bulk: records are then at
  a fixed stride within each offsetDelta varint width, so each fixed byte of
  the layout is one strided slice `rec[pos::stride]` compared with the
  expected column (`_decode_uniform`). The checks, and an `itemgetter` of
  the slices of every value (and key), depend only on (record count, key
  length, value length), so they are planned once per shape and cached;
  values are then cut by one C call and Records come from `map` over `zip`.
  Batches of under 8 records, or of any other layout, take the general
  per-record parser (`_iter_general`), which is also the reference the fast
  path is tested against.

`Record` is a NamedTuple: the bulk path creates it with
`tuple.__new__(Record, fields)` through `functools.partial` (no Python frame
per record), attribute access uses C-level tuple getters, and the repr is
readable. Bulk construction cost measured on CPython 3.11, 2-vCPU Xeon VM,
GC paused (`perf/bench_records.py --record-types`): namedtuple via
tuple.__new__ ~145-240 ns, slotted class ~330-360 ns, namedtuple `_make`
~210-370 ns, namedtuple `__new__` ~280-490 ns; a plain tuple ~45-80 ns.

`decode_records` pauses the cyclic GC while it builds its list (see the
comment there): the objects form no cycles, and generation-0 passes
otherwise cost ~40% of a bulk decode.

Error contract: every decoder here (`iter_batches`, `read_batch_records`,
`decode_records`) raises only `CorruptBatchError` (or its subclass
`LimitExceededError` for a batch over `records_max` or
`decompressed_bytes_max`) on bad input, never IndexError, struct.error,
UnicodeDecodeError, zlib.error or a codec library's exception. Anything else
is a bug. Encoders raise `ValueError`/`TypeError` for bad arguments.

Resource handling: a batch's declared record count is checked against
`records_max` and its records section against `decompressed_bytes_max`
before anything is allocated; decompression is bounded by the latter. The
module caches (encode tables, decode plans) are bounded (see their limits).
Thread-safety: functions are safe to call from several threads (caches are
rebuilt idempotently); `BatchBuilder` is not.
"""

from __future__ import annotations

import gc
import struct
import time
from functools import partial
from operator import itemgetter
from itertools import repeat
from typing import NamedTuple
from collections.abc import Iterator, Sequence

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
    BatchHeader,
    batch_size_at,
    parse_header,
)
from ._compression import compress, decompress
from ._errors import CorruptBatchError, LimitExceededError
from ._varint import NULL as _NULL
from ._varint import VARINT as _VARINT
from ._varint import ZERO as _ZERO
from ._varint import read_varint as _read_varint
from ._varint import varint as _varint

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

RECORDS_MAX = 1_000_000                   # records in one batch, default limit
DECOMPRESSED_BYTES_MAX = 64 * 1024 * 1024  # records section after decompression

_HEADER = struct.Struct(">qiibIhiqqqhii")
assert _HEADER.size == HEADER_SIZE
_CRC = struct.Struct(">I")
_CRC_POS = 17
_RECORD_BYTES_MIN = 7    # length, attributes, ts, offset, key, value, headers: 1 byte each


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
    headers: Sequence[tuple[str, bytes | None]]


_NO_HEADERS: tuple = ()   # every header-less Record's headers (shared, immutable)
_new_record = partial(tuple.__new__, Record)  # C-level constructor from a tuple


# ----------------------------------------------------------------------------
# Encoding

def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def build_batch(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None = None,
    *,
    timestamps: Sequence[int] | int | None = None,
    headers: Sequence[Sequence[tuple[str, bytes | None]] | None] | None = None,
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
    if n == 0:
        codec = CODEC_NONE
        base_ts = max_ts = 0
        deltas = None
    else:
        base_ts, max_ts, deltas = _timestamp_deltas(timestamps, n)
    body = None
    if keys is None and headers is None:
        body = _encode_uniform(values, deltas)
    if body is None:
        body = _encode_general(values, keys, deltas, headers)
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


def _all_none(items) -> bool:
    try:
        return items.count(None) == len(items)
    except (AttributeError, TypeError):  # a Sequence without count()
        return all(item is None for item in items)


def _timestamp_deltas(timestamps, n: int) -> tuple[int, int, list[int] | None]:
    """Return (base timestamp, max timestamp, deltas or None when all equal)."""
    if timestamps is None:
        timestamps = _now_ms()
    if isinstance(timestamps, int):
        return timestamps, timestamps, None
    if len(timestamps) != n:
        raise ValueError(f"{len(timestamps)} timestamps for {n} values")
    base = timestamps[0]
    if timestamps.count(base) == n:
        return base, base, None
    return base, max(timestamps), [t - base for t in timestamps]


# Tables of the uniform fast path, per value length. Record i is
#   heads[i] + timestampDelta (1 byte) + tails[i] + value_i
# where heads[i] holds the previous record's headersCount (0), record i's
# length and attributes, and tails[i] its offsetDelta, null key and value
# length. Bounded: a few lengths, a few offsets.
_UNIFORM_CACHE: dict[int, tuple[list[bytes], list[bytes]]] = {}
_UNIFORM_CACHE_LENGTHS_MAX = 32
_UNIFORM_CACHE_RECORDS_MAX = 1 << 16


def _uniform_tables(value_len: int, n: int) -> tuple[list[bytes], list[bytes]]:
    cached = _UNIFORM_CACHE.get(value_len)
    if cached is not None and len(cached[0]) >= n:
        return cached
    vlen = _varint(value_len)
    # attributes, timestampDelta, null key, valueLength, value, headersCount
    fixed = 1 + 1 + 1 + len(vlen) + value_len + 1
    count = max(n, len(cached[0]) if cached else 0)
    ods = list(map(_varint, range(count)))
    heads = [b"".join((_ZERO if i else b"", _varint(fixed + len(od)), _ZERO))
             for i, od in enumerate(ods)]
    tails = [od + _NULL + vlen for od in ods]
    if count <= _UNIFORM_CACHE_RECORDS_MAX:
        if len(_UNIFORM_CACHE) >= _UNIFORM_CACHE_LENGTHS_MAX:
            _UNIFORM_CACHE.clear()
        _UNIFORM_CACHE[value_len] = heads, tails
    return heads, tails


def _encode_uniform(values, deltas) -> bytes | None:
    """Records section for null keys, no headers, one value length, and
    timestamp deltas all 0 (`deltas` None) or all in 0..63 (one varint byte).

    Returns None when the records do not fit that shape (the caller takes
    the general path, which also reports bad types).
    """
    n = len(values)
    if n == 0:
        return None
    if deltas is not None and not (min(deltas) >= 0 and max(deltas) < 64):
        return None
    try:
        lengths = set(map(len, values))
    except TypeError:  # a None value, or not bytes-like
        return None
    if len(lengths) != 1:
        return None
    heads, tails = _uniform_tables(lengths.pop(), n)
    if len(heads) != n:
        heads, tails = heads[:n], tails[:n]
    pieces = [_ZERO] * (4 * n + 1)  # the last piece: headersCount of the last record
    pieces[0 : 4 * n : 4] = heads
    if deltas is not None:  # else the _ZERO fill is timestampDelta 0
        pieces[1 : 4 * n : 4] = map(_VARINT.__getitem__, deltas)
    pieces[2 : 4 * n : 4] = tails
    pieces[3 : 4 * n : 4] = values
    try:
        return b"".join(pieces)
    except TypeError:  # e.g. str values: let the general path explain
        return None


def _encode_general(values, keys, deltas, headers) -> bytes:
    """Records section, one record at a time; any keys, headers, timestamps."""
    pieces = []
    append = pieces.append
    varint = _varint
    for i, value in enumerate(values):
        key = keys[i] if keys is not None else None
        hdrs = headers[i] if headers is not None else None
        mid = [
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
        self._options = dict(
            codec=codec, producer_id=producer_id, producer_epoch=producer_epoch,
            base_sequence=base_sequence, is_transactional=is_transactional,
            partition_leader_epoch=partition_leader_epoch, timestamp_type=timestamp_type,
        )
        self._values: list = []
        self._keys: list = []
        self._timestamps: list[int] = []
        self._headers: list = []
        self._any_key = False
        self._any_headers = False
        self.size_estimate = HEADER_SIZE

    @property
    def records_count(self) -> int:
        return len(self._values)

    def append(self, value: bytes | None, key: bytes | None = None,
               headers: Sequence[tuple[str, bytes | None]] | None = None,
               timestamp_ms: int | None = None) -> int:
        """Add a record; return its offset delta within the batch."""
        delta = len(self._values)
        self._values.append(value)
        self._keys.append(key)
        self._headers.append(headers)
        self._timestamps.append(_now_ms() if timestamp_ms is None else timestamp_ms)
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
            **self._options,
        )


# ----------------------------------------------------------------------------
# Decoding: batches

def iter_batches(buf) -> Iterator[tuple[BatchHeader, memoryview]]:
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


def _records_section(batch, header: BatchHeader, verify_crc: bool, records_max: int,
                     decompressed_bytes_max: int) -> bytes:
    """Check one batch's CRC and limits; return its records section, decompressed."""
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
    if header.records_count * _RECORD_BYTES_MIN > len(section):
        raise CorruptBatchError(
            f"{header.records_count} records cannot fit in {len(section)} bytes")
    return section


def read_batch_records(
    batch,
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
    section = _records_section(batch, header, verify_crc, records_max, decompressed_bytes_max)
    yield from _iter_general(section, header, topic, partition)


def _iter_general(rec: bytes, header: BatchHeader, topic: str, partition: int) -> Iterator[Record]:
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
    new = _new_record
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
                key, pos = _read_bytes(rec, pos, record_end)
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
                value, pos = _read_bytes(rec, pos, record_end)
            if rec[pos] == 0:
                headers = _NO_HEADERS
                pos += 1
            else:
                headers, pos = _read_headers(rec, pos, record_end)
            if pos != record_end:
                raise CorruptBatchError(
                    f"record declares {length} bytes, its fields use {pos - record_end + length}")
            yield new((topic, partition, base_offset + offset_delta,
                       base_ts + ts_delta if log_append_ts is None else log_append_ts,
                       key, value, headers))
    except (IndexError, UnicodeDecodeError) as exc:
        raise CorruptBatchError(f"malformed record: {exc}") from None
    if pos != end:
        raise CorruptBatchError(f"{end - pos} bytes left after {header.records_count} records")


def _read_headers(rec: bytes, pos: int, record_end: int) -> tuple[list, int]:
    count, pos = _read_varint(rec, pos)
    if not 0 <= count <= (record_end - pos) // 2:  # a header takes >= 2 bytes
        raise CorruptBatchError(f"bad header count {count}")
    headers = []
    for _ in range(count):
        h_key, pos = _read_bytes(rec, pos, record_end)
        if h_key is None:
            raise CorruptBatchError("null header key")
        h_value, pos = _read_bytes(rec, pos, record_end)
        headers.append((h_key.decode("utf-8"), h_value))
    return headers, pos


def _read_bytes(rec: bytes, pos: int, limit: int) -> tuple[bytes | None, int]:
    """Read a varint length (-1 = null) and that many bytes, within `limit`."""
    n, pos = _read_varint(rec, pos)
    if n < 0:
        if n != -1:
            raise CorruptBatchError(f"negative length {n}")
        return None, pos
    if pos + n > limit:
        raise CorruptBatchError(f"field of {n} bytes overruns its record")
    return rec[pos : pos + n], pos + n


# ----------------------------------------------------------------------------
# Decoding: the bulk path

def decode_records(
    buf,
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


def _decode_batches(buf, topic, partition, min_offset, verify_crc, records_max,
                    decompressed_bytes_max) -> list[Record]:
    out: list[Record] = []
    for header, batch in iter_batches(buf):
        if header.attributes & CONTROL_MASK or header.next_offset <= min_offset:
            continue
        section = _records_section(batch, header, verify_crc, records_max, decompressed_bytes_max)
        records = _decode_uniform(section, header, topic, partition, min_offset)
        if records is None:
            records = list(_iter_general(section, header, topic, partition))
            if min_offset > header.base_offset:
                records = [r for r in records if r[2] >= min_offset]
        out += records
    return out


def _od_column(width: int, k: int, lo: int, hi: int) -> bytes:
    """Byte k of the varints of offset deltas lo..hi-1, all of `width` bytes."""
    start = _OD_WIDTH_START[width]
    col = _OD_COLUMNS.get((width, k), b"")
    if len(col) < hi - start:
        # grow geometrically, so a large batch does not pay for the whole
        # width range (a million entries for width 3) on first sight
        stop = min(_OD_WIDTH_START[width + 1], _UNIFORM_RECORDS_MAX, max(hi, start + 2 * len(col)))
        more = 0x80 if k < width - 1 else 0  # continuation bit; zigzag(i) = 2i for i >= 0
        col = bytes(((i << 1 >> 7 * k) & 0x7F) | more for i in range(start, stop))
        _OD_COLUMNS[(width, k)] = col
    return col[lo - start : hi - start]


# offsetDelta i takes 1 byte below 64, 2 below 8192, 3 below 2**20 (zigzag).
_OD_WIDTH_START = {1: 0, 2: 64, 3: 8192, 4: 1 << 20}
_OD_COLUMNS: dict[tuple[int, int], bytes] = {}
_UNIFORM_RECORDS_MAX = 1 << 16   # larger batches take the general parser
_TS_DELTA = [(b >> 1) ^ -(b & 1) for b in range(128)]  # one-byte zigzag varints


def _decode_uniform(rec: bytes, header: BatchHeader, topic: str, partition: int,
                    min_offset: int) -> list[Record] | None:
    """Decode a batch whose records share one layout, or return None.

    The layout is taken from record 0: key length K (or null), value length
    L (or null), no headers; record i must have attributes 0, offsetDelta i
    and a one-byte timestampDelta. Within each offsetDelta width the records
    then sit at a fixed stride, so every layout byte is checked for all
    records at once with a strided slice. Returns None (caller uses the
    general parser) as soon as anything differs; never raises on its own.
    """
    n = header.records_count
    if not _UNIFORM_RECORDS_MIN <= n <= _UNIFORM_RECORDS_MAX:
        return None
    try:
        first = next(_iter_general(rec[:_first_record_end(rec)], header._replace(records_count=1), "", 0))
    except (CorruptBatchError, StopIteration):
        return None
    if first.headers or first.offset != header.base_offset:
        return None
    key, value = first.key, first.value
    shape = (n, None if key is None else len(key), None if value is None else len(value))
    plan = _UNIFORM_PLANS.get(shape) or _uniform_plan(*shape)
    total_len, segments, get_keys, get_values = plan
    if total_len != len(rec):
        return None
    ts_columns = []
    for stop, stride, checks, ts_start in segments:
        for check_start, expected in checks:
            if rec[check_start:stop:stride] != expected:
                return None
        ts_column = rec[ts_start:stop:stride]
        if not ts_column.isascii():
            return None  # a multi-byte timestampDelta: general path
        ts_columns.append(ts_column)
    return _assemble(header, topic, partition, min_offset, b"".join(ts_columns),
                     None if get_keys is None else get_keys(rec),
                     None if get_values is None else get_values(rec))


# Plans of the uniform decode path, per (records, key length, value length):
# batches from one producer repeat their shape, and building a plan costs
# more than checking a small batch. Bounded.
_UNIFORM_PLANS: dict[tuple, tuple] = {}
_UNIFORM_PLANS_MAX = 64                # shapes cached
_UNIFORM_PLANS_RECORDS_MAX = 1 << 18   # ~2 slices (~110 bytes) per record: ~30 MB at most
_UNIFORM_RECORDS_MIN = 8   # below this the general parser is as fast


def _uniform_plan(n: int, key_len: int | None, value_len: int | None) -> tuple:
    """(records section length, segments) for `n` records of one layout.

    A segment covers the records whose offsetDelta varint has one width:
    (stop, stride, [(start, expected column)], ts start), positions absolute
    in the records section; plus itemgetters cutting all keys and all values.
    """
    key_field = _NULL if key_len is None else _varint(key_len)
    value_field = _NULL if value_len is None else _varint(value_len)
    key_len, value_len = key_len or 0, value_len or 0
    segments = []
    key_slices: list[slice] = []
    value_slices: list[slice] = []
    pos = 0
    for width in (1, 2, 3):
        lo, hi = _OD_WIDTH_START[width], min(n, _OD_WIDTH_START[width + 1])
        if lo >= hi:
            break
        count = hi - lo
        # length | attributes | ts | offsetDelta | key field, key | value field, value | headers
        body_len = 2 + width + len(key_field) + key_len + len(value_field) + value_len + 1
        head = _varint(body_len) + _ZERO
        stride = len(head) - 1 + body_len
        ts_at = len(head)
        key_at = ts_at + 1 + width
        value_at = key_at + len(key_field) + key_len
        layout = [(j, head[j]) for j in range(len(head))]
        layout += [(key_at + j, key_field[j]) for j in range(len(key_field))]
        layout += [(value_at + j, value_field[j]) for j in range(len(value_field))]
        layout.append((value_at + len(value_field) + value_len, 0))  # headersCount 0
        checks = [(pos + at, bytes((byte,)) * count) for at, byte in layout]
        checks += [(pos + ts_at + 1 + j, _od_column(width, j, lo, hi)) for j in range(width)]
        stop = pos + count * stride
        segments.append((stop, stride, checks, pos + ts_at))
        first_key = pos + key_at + len(key_field)
        key_slices += [slice(p, p + key_len) for p in range(first_key, stop, stride)]
        first_value = pos + value_at + len(value_field)
        value_slices += [slice(p, p + value_len) for p in range(first_value, stop, stride)]
        pos = stop
    # One itemgetter of all the slices cuts every key (value) in one C call,
    # ~5x faster than a comprehension of slices. n >= 2, so it returns a tuple.
    get_keys = None if key_field == _NULL else itemgetter(*key_slices)
    get_values = None if value_field == _NULL else itemgetter(*value_slices)
    if (len(_UNIFORM_PLANS) >= _UNIFORM_PLANS_MAX
            or sum(shape[0] for shape in _UNIFORM_PLANS) + n > _UNIFORM_PLANS_RECORDS_MAX):
        _UNIFORM_PLANS.clear()
    shape = (n, None if key_field == _NULL else key_len, None if value_field == _NULL else value_len)
    plan = _UNIFORM_PLANS[shape] = (pos, segments, get_keys, get_values)
    return plan


def _first_record_end(rec: bytes) -> int:
    try:
        length, pos = _read_varint(rec, 0)
    except (IndexError, CorruptBatchError):
        return 0
    return max(pos + length, 0)


def _assemble(header: BatchHeader, topic: str, partition: int, min_offset: int,
              ts_column: bytes, keys: list | None, values: list | None) -> list[Record]:
    """Zip the decoded columns into Records, dropping offsets < min_offset."""
    n = header.records_count
    skip = min(max(min_offset - header.base_offset, 0), n)
    count = n - skip
    if header.attributes & TIMESTAMP_TYPE_MASK:
        timestamps = repeat(header.max_timestamp, count)
    elif ts_column.count(0) == n:
        timestamps = repeat(header.base_timestamp, count)
    else:
        base, table = header.base_timestamp, _TS_DELTA
        timestamps = [base + table[b] for b in ts_column[skip:]]
    keys = repeat(None, count) if keys is None else keys[skip:] if skip else keys
    values = repeat(None, count) if values is None else values[skip:] if skip else values
    offsets = range(header.base_offset + skip, header.base_offset + n)
    return list(map(_new_record, zip(
        repeat(topic, count), repeat(partition, count), offsets, timestamps,
        keys, values, repeat(_NO_HEADERS, count),
    )))
