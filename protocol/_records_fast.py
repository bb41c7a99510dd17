"""The record codec's fast paths: whole batches of one layout, no Python per record.

Rules:

* Every function here either returns exactly what the reference codec
  (`_records_reference.py`) would, or returns None and lets the caller take
  the reference path. None of them raises on bad input: they only recognise
  the shapes they are fast for. Property tests compare both paths.
* Caches (encode tables, decode plans, offset-delta columns) are bounded.

Theory of operation. Python pays per bytecode, not per byte, so both
directions avoid per-record work where the records share one layout:

* Encoding (`encode_uniform`). In the common producer case (no keys, no
  headers, values of one length, timestamps within 63 ms of the first)
  record i is `heads[i] + tsDelta_i + tails[i] + value_i` where `heads` and
  `tails` depend only on i and the value length: they are cached per value
  length and the body is one `bytes.join` over a list filled by four slice
  assignments, no Python code per record.
* Decoding (`decode_uniform`). Parse the first record, assume every record
  has its layout (same key and value lengths, no headers, offsetDelta == i,
  one-byte timestampDelta; any attributes byte), and check that assumption
  in bulk: records are then at a fixed stride within each offsetDelta
  varint width, so each fixed byte of the layout is one strided slice
  `rec[pos::stride]` compared with the expected column (`uniform_layout`).
  The checks, and an `itemgetter` of the slices of every value (and key),
  depend only on (record count, key length, value length), so they are
  planned once per shape and cached (the getters only when decoding);
  values are then cut by one C call and Records come from `map` over `zip`.
  Batches of under 8 records, or of any other layout, take the reference
  parser.
* `uniform_layout` is also the produce-path validator's fast path
  (`_validate.py`): when it says yes, every length varint, offset delta,
  field length and headers count of the batch has been checked, all in C.

Thread-safety: safe from several threads (caches are rebuilt idempotently).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

from ._batch_header import TIMESTAMP_TYPE_MASK, BatchHeader, BytesLike
from ._errors import CorruptBatchError
from ._records_reference import NO_HEADERS, Record, new_record
from ._varint import NULL as _NULL
from ._varint import VARINT as _VARINT
from ._varint import ZERO as _ZERO
from ._varint import read_varint as _read_varint
from ._varint import varint as _varint

__all__: list[str] = []   # private: `_records.py` is the public face

# ----------------------------------------------------------------------------
# Encoding

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


def encode_uniform(values: Sequence[BytesLike | None], deltas: Sequence[int] | None) -> bytes | None:
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
        lengths = set(map(len, values))  # type: ignore[arg-type]  # None raises TypeError
    except TypeError:  # a None value, or not bytes-like
        return None
    if len(lengths) != 1:
        return None
    heads, tails = _uniform_tables(lengths.pop(), n)
    if len(heads) != n:
        heads, tails = heads[:n], tails[:n]
    pieces: list[Any] = [_ZERO] * (4 * n + 1)  # the last piece: headersCount of the last record
    pieces[0 : 4 * n : 4] = heads
    if deltas is not None:  # else the _ZERO fill is timestampDelta 0
        pieces[1 : 4 * n : 4] = map(_VARINT.__getitem__, deltas)
    pieces[2 : 4 * n : 4] = tails
    pieces[3 : 4 * n : 4] = values
    try:
        return b"".join(pieces)
    except TypeError:  # e.g. str values: let the general path explain
        return None


# ----------------------------------------------------------------------------
# Decoding

def _od_column(width: int, k: int, lo: int, hi: int) -> bytes:
    """Byte k of the varints of offset deltas lo..hi-1, all of `width` bytes."""
    start = _OD_WIDTH_START[width]
    col = _OD_COLUMNS.get((width, k), b"")
    if len(col) < hi - start:
        # grow geometrically, so a large batch does not pay for the whole
        # width range (a million entries for width 3) on first sight
        stop = min(_OD_WIDTH_START[width + 1], UNIFORM_RECORDS_MAX, max(hi, start + 2 * len(col)))
        more = 0x80 if k < width - 1 else 0  # continuation bit; zigzag(i) = 2i for i >= 0
        col = bytes(((i << 1 >> 7 * k) & 0x7F) | more for i in range(start, stop))
        _OD_COLUMNS[(width, k)] = col
    return col[lo - start : hi - start]


# offsetDelta i takes 1 byte below 64, 2 below 8192, 3 below 2**20 (zigzag).
_OD_WIDTH_START = {1: 0, 2: 64, 3: 8192, 4: 1 << 20}
_OD_COLUMNS: dict[tuple[int, int], bytes] = {}
UNIFORM_RECORDS_MAX = 1 << 16   # larger batches take the general parser
UNIFORM_RECORDS_MIN = 8         # below this the general parser is as fast
_TS_DELTA = [(b >> 1) ^ -(b & 1) for b in range(128)]  # one-byte zigzag varints

# A plan: (records section length, segments), a segment being
# (stop, stride, [(start, expected column)], ts column start) for the records
# whose offsetDelta varint has one width. Getters: itemgetters cutting every
# key and every value (built only when decoding: the validator needs none).
_Segment = tuple[int, int, list[tuple[int, bytes]], int]
_Plan = tuple[int, list[_Segment]]
_Getters = tuple[Any, Any]
_Shape = tuple[int, int | None, int | None]

# Plans and getters per (records, key length, value length): batches from one
# producer repeat their shape, and building a plan costs more than checking a
# small batch. Bounded: a plan holds ~8 bytes per record, getters ~2 slices
# (~110 bytes) per record.
_UNIFORM_PLANS: dict[_Shape, _Plan] = {}
_UNIFORM_GETTERS: dict[_Shape, _Getters] = {}
_UNIFORM_PLANS_MAX = 64                # shapes cached
_UNIFORM_PLANS_RECORDS_MAX = 1 << 18   # records over all cached shapes: ~30 MB of getters at most


def uniform_layout(rec: bytes, header: BatchHeader) -> tuple[_Shape, bytes] | None:
    """Check in bulk that every record has record 0's layout; None if not.

    The layout is taken from record 0: key length K (or null), value length
    L (or null), no headers; record i must have offsetDelta i and a one-byte
    timestampDelta, and the records must fill `rec` exactly (the attributes
    byte is unused and not checked, as in the reference parser).
    Within each offsetDelta width the records then sit at a fixed stride,
    so every layout byte is checked for all records at once with a strided
    slice compared with a column planned once per shape.

    Returns:
        (the shape (records, key length, value length), the column of
        one-byte timestampDelta varints), or None (the caller takes the
        reference path). Never raises.
    """
    n = header.records_count
    if not UNIFORM_RECORDS_MIN <= n <= UNIFORM_RECORDS_MAX:
        return None
    shape = _first_shape(rec, n)
    if shape is None:
        return None
    plan = _UNIFORM_PLANS.get(shape) or _uniform_plan(shape)
    total_len, segments = plan
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
    return shape, ts_columns[0] if len(ts_columns) == 1 else b"".join(ts_columns)


def decode_uniform(rec: bytes, header: BatchHeader, topic: str, partition: int,
                   min_offset: int) -> list[Record] | None:
    """Decode a batch whose records share one layout (`uniform_layout`), or return None."""
    found = uniform_layout(rec, header)
    if found is None:
        return None
    shape, ts_column = found
    get_keys, get_values = _UNIFORM_GETTERS.get(shape) or _uniform_getters(shape)
    return _assemble(header, topic, partition, min_offset, ts_column,
                     None if get_keys is None else get_keys(rec),
                     None if get_values is None else get_values(rec))


def _record_layout(width: int, key_len: int | None, value_len: int | None) -> tuple[bytes, int, bytes, int, bytes, int]:
    """(head, stride, key field, key at, value field, value at) of a record
    whose offsetDelta varint is `width` bytes; positions relative to its start."""
    key_field = _NULL if key_len is None else _varint(key_len)
    value_field = _NULL if value_len is None else _varint(value_len)
    # length | attributes | ts | offsetDelta | key field, key | value field, value | headers
    body_len = 2 + width + len(key_field) + (key_len or 0) + len(value_field) + (value_len or 0) + 1
    head = _varint(body_len) + _ZERO
    key_at = len(head) + 1 + width
    return head, len(head) - 1 + body_len, key_field, key_at, value_field, key_at + len(key_field) + (key_len or 0)


def _segments(n: int) -> list[tuple[int, int, int]]:
    """(offsetDelta width, first record, end record) of each width present in n records."""
    return [(width, _OD_WIDTH_START[width], min(n, _OD_WIDTH_START[width + 1]))
            for width in (1, 2, 3) if _OD_WIDTH_START[width] < n]


def _uniform_plan(shape: _Shape) -> _Plan:
    """The checks of `uniform_layout` for one shape: (records section length, segments)."""
    n, key_len, value_len = shape
    segments: list[_Segment] = []
    pos = 0
    for width, lo, hi in _segments(n):
        count = hi - lo
        head, stride, key_field, key_at, value_field, value_at = _record_layout(width, key_len, value_len)
        ts_at = len(head)
        # the length varint; not the attributes byte, which Kafka and the reference ignore
        layout = [(j, head[j]) for j in range(len(head) - 1)]
        layout += [(key_at + j, key_field[j]) for j in range(len(key_field))]
        layout += [(value_at + j, value_field[j]) for j in range(len(value_field))]
        layout.append((value_at + len(value_field) + (value_len or 0), 0))  # headersCount 0
        checks = [(pos + at, bytes((byte,)) * count) for at, byte in layout]
        checks += [(pos + ts_at + 1 + j, _od_column(width, j, lo, hi)) for j in range(width)]
        stop = pos + count * stride
        segments.append((stop, stride, checks, pos + ts_at))
        pos = stop
    if (len(_UNIFORM_PLANS) >= _UNIFORM_PLANS_MAX
            or sum(cached[0] for cached in _UNIFORM_PLANS) + n > _UNIFORM_PLANS_RECORDS_MAX):
        _UNIFORM_PLANS.clear()
    plan: _Plan = (pos, segments)
    _UNIFORM_PLANS[shape] = plan
    return plan


def _uniform_getters(shape: _Shape) -> _Getters:
    """itemgetters of the slices of every key and every value (None for null ones).

    One itemgetter of all the slices cuts every key (value) in one C call,
    ~5x faster than a comprehension of slices. n >= 2, so it returns a tuple.
    """
    n, key_len, value_len = shape
    key_slices: list[slice] = []
    value_slices: list[slice] = []
    pos = 0
    for width, lo, hi in _segments(n):
        _, stride, key_field, key_at, value_field, value_at = _record_layout(width, key_len, value_len)
        stop = pos + (hi - lo) * stride
        first_key = pos + key_at + len(key_field)
        key_slices += [slice(p, p + (key_len or 0)) for p in range(first_key, stop, stride)]
        first_value = pos + value_at + len(value_field)
        value_slices += [slice(p, p + (value_len or 0)) for p in range(first_value, stop, stride)]
        pos = stop
    if (len(_UNIFORM_GETTERS) >= _UNIFORM_PLANS_MAX
            or sum(cached[0] for cached in _UNIFORM_GETTERS) + n > _UNIFORM_PLANS_RECORDS_MAX):
        _UNIFORM_GETTERS.clear()
    getters: _Getters = (None if key_len is None else itemgetter(*key_slices),
                         None if value_len is None else itemgetter(*value_slices))
    _UNIFORM_GETTERS[shape] = getters
    return getters


def _first_shape(rec: bytes, n: int) -> _Shape | None:
    """(n, key length, value length) read from record 0's key and value length varints.

    Only a guess of the shape: the plan built from it checks every layout
    byte of every record, record 0 included (length varint, offsetDelta,
    key and value fields, headers count) and the total length, so a wrong
    guess makes `uniform_layout` return None, never accept a bad record.
    Reading these two varints in place is what decoding record 0 with the
    reference parser cost before (a record object, a header copy).
    """
    try:
        pos = _read_varint(rec, 0)[1] + 1        # length varint, attributes byte
        pos = _read_varint(rec, pos)[1]          # timestampDelta
        pos = _read_varint(rec, pos)[1]          # offsetDelta
        key_len, pos = _read_varint(rec, pos)
        value_len = _read_varint(rec, pos + max(key_len, 0))[0]
    except (IndexError, CorruptBatchError):
        return None
    if not (-1 <= key_len <= len(rec) and -1 <= value_len <= len(rec)):
        return None
    return n, None if key_len < 0 else key_len, None if value_len < 0 else value_len


def _assemble(header: BatchHeader, topic: str, partition: int, min_offset: int,
              ts_column: bytes, keys: Sequence[bytes] | None, values: Sequence[bytes] | None) -> list[Record]:
    """Zip the decoded columns into Records, dropping offsets < min_offset."""
    n = header.records_count
    skip = min(max(min_offset - header.base_offset, 0), n)
    count = n - skip
    timestamps: Any
    if header.attributes & TIMESTAMP_TYPE_MASK:
        timestamps = repeat(header.max_timestamp, count)
    elif ts_column.count(0) == n:
        timestamps = repeat(header.base_timestamp, count)
    else:
        base, table = header.base_timestamp, _TS_DELTA
        timestamps = [base + table[b] for b in ts_column[skip:]]
    key_column: Any = repeat(None, count) if keys is None else keys[skip:] if skip else keys
    value_column: Any = repeat(None, count) if values is None else values[skip:] if skip else values
    offsets = range(header.base_offset + skip, header.base_offset + n)
    return list(map(new_record, zip(
        repeat(topic, count), repeat(partition, count), offsets, timestamps,
        key_column, value_column, repeat(NO_HEADERS, count),
    )))
