"""The record codec's scan path: records of varying key and value length, no Python per record.

`_records_fast.uniform_layout` needs every record to have one layout; keyed
records (keys of varying length, as aggregate ids are) and events (values of
varying size) miss it and used to take the reference parser, one Python loop
iteration per record. This module finds every record's fields with one C
call instead and checks them in bulk.

Rules:

* `scan_records` either returns exactly the fields the reference parser
  (`_records_reference.iter_general`) would read, or None (the caller takes
  the reference path). It never raises on bad input. Property tests compare
  both paths.
* Shapes covered: records under 8192 bytes (1- or 2-byte length varint),
  timestampDelta of 1 or 2 bytes (-8192..8191 ms from the first record),
  offsetDelta i, keys of 0..63 bytes or all null,
  values of 0..`SCAN_VALUE_BYTES_MAX` bytes or all null, no headers, at
  least `SCAN_RECORDS_MIN` records. Any other batch returns None.

Theory of operation. Python's `re` engine is a C loop that can follow a
length-prefixed field when every possible length is an alternative: a key
field is "\\x00" (empty) or "\\x02." (1 byte) or ... "\\x7e.{63}", and a
value field likewise, the 2-byte varints nested under their first byte so a
length costs a few failed one-byte tests, not hundreds. One compiled pattern
matches one record, capturing (length varint, timestampDelta, offsetDelta
varint, key field, value field); `findall` over the section returns them
all, back to back, in one call. What the pattern cannot see is then checked
with C-level `map`s and comparisons, no Python frame per record:

* n matches whose lengths add up to the section tile it exactly (matches
  never overlap), so no byte was skipped;
* the offsetDelta column equals varint(0..n-1) (one list comparison);
* each record's length varint equals the bytes its fields took
  (`map(len, ...)` sums against a dict decoding the varints);
* the key and value columns are either all null or all not null; one
  `itemgetter(slice(w, None))` cuts every field's bytes out of its match
  when all length prefixes have one width w, else a table maps each
  field's first byte to its slice (`map(getitem, ...)`).

The pattern is compiled on first use (tens of ms) and then shared.

Thread-safety: safe from several threads (compiling twice is harmless).
"""

from __future__ import annotations

import re
from itertools import repeat
from operator import add, getitem, itemgetter, sub
from typing import Any

from ._batch_header import TIMESTAMP_TYPE_MASK, BatchHeader
from ._records_reference import NO_HEADERS, Record, new_record
from ._varint import varint as _varint

__all__: list[str] = []   # private: used by `_records.py` and `_validate.py`

SCAN_KEY_BYTES_MAX = 63        # one-byte key length varints
SCAN_VALUE_BYTES_MAX = 1023    # values up to 1 KiB (the pattern grows with it)
SCAN_RECORDS_MIN = 8           # below this the reference parser is as fast
SCAN_RECORDS_MAX = 1 << 13     # offset deltas of 1 or 2 bytes

_RECORD_OVERHEAD = 2   # attributes, headersCount: one byte each

# varint(i) for the offset deltas; the value of every 1- or 2-byte varint the
# length group can capture (negative and non-canonical ones included: the
# reference parser reads them too, and then refuses or accepts them)
_OD_VARINTS = [_varint(i) for i in range(SCAN_RECORDS_MAX)]
_LENGTHS = {bytes((b,)): (b >> 1) ^ -(b & 1) for b in range(0x80)}
_LENGTHS.update({bytes((b1, b2)): (z >> 1) ^ -(z & 1)
                 for b1 in range(0x80, 0x100) for b2 in range(0x80)
                 for z in ((b1 & 0x7F) | (b2 << 7),)})
_FIRST_BYTE = itemgetter(slice(0, 1))
_CUT = {1: itemgetter(slice(1, None)), 2: itemgetter(slice(2, None))}
_HIGH_BYTES = bytes(range(0x80, 0x100))
_SLICE_AFTER_PREFIX = [slice(1, None) if b < 0x80 else slice(2, None) for b in range(0x100)]
_NULL = 1   # varint(-1)

_pattern: re.Pattern[bytes] | None = None


def _field(max_len: int) -> bytes:
    """A capturing alternation of every length-prefixed field of 0..max_len bytes, or null."""
    alternatives = [b"\x01"]
    alternatives += [re.escape(bytes((2 * k,))) + (b".{%d}" % k if k else b"") for k in range(min(64, max_len + 1))]
    by_first: dict[int, list[bytes]] = {}
    for k in range(64, max_len + 1):
        prefix = _varint(k)
        by_first.setdefault(prefix[0], []).append(re.escape(prefix[1:]) + b".{%d}" % k)
    alternatives += [re.escape(bytes((first,))) + b"(?:" + b"|".join(rest) + b")" for first, rest in by_first.items()]
    return b"(" + b"|".join(alternatives) + b")"


def _compiled() -> re.Pattern[bytes]:
    global _pattern
    if _pattern is None:
        _pattern = re.compile(
            b"(?s)"
            b"([\x00-\x7f]|[\x80-\xff][\x00-\x7f])"     # length: 1 or 2 bytes
            b"."                                        # attributes (unused)
            b"([\x00-\x7f]|[\x80-\xff][\x00-\x7f])"     # timestampDelta: 1 or 2 bytes
            b"([\x00-\x7f]|[\x80-\xff][\x00-\x7f])"     # offsetDelta: 1 or 2 bytes
            + _field(SCAN_KEY_BYTES_MAX) + _field(SCAN_VALUE_BYTES_MAX)
            + b"\x00")                                  # no headers
    return _pattern


def scan_records(rec: bytes, n: int) -> tuple[list[int], list[bytes] | None, list[bytes] | None] | None:
    """Find the fields of `n` records of a covered shape (module rules); None if not.

    Returns:
        (the timestampDeltas, the keys or None
        when all are null, the values or None when all are null), exactly
        as the reference parser reads them; or None. Never raises.
    """
    if not SCAN_RECORDS_MIN <= n <= SCAN_RECORDS_MAX:
        return None
    rows = _compiled().findall(rec)
    if len(rows) != n:
        return None
    lengths, ts_deltas, offset_deltas, keys, values = zip(*rows)
    if list(offset_deltas) != _OD_VARINTS[:n]:
        return None
    # each record's declared length == what its fields took
    used = list(map(add, map(add, map(len, ts_deltas), map(len, offset_deltas)),
                    map(add, map(len, keys), map(len, values))))
    if used != list(map(sub, map(_LENGTHS.__getitem__, lengths), repeat(_RECORD_OVERHEAD, n))):
        return None
    if sum(map(len, lengths)) + sum(used) + _RECORD_OVERHEAD * n != len(rec):
        return None   # a gap between matches: some bytes were not a record
    keys_ok, key_column = _column(keys, n)
    values_ok, value_column = _column(values, n)
    if not (keys_ok and values_ok):
        return None
    return list(map(_LENGTHS.__getitem__, ts_deltas)), key_column, value_column


def _column(fields: tuple[bytes, ...], n: int) -> tuple[bool, list[bytes] | None]:
    """(True, the fields' bytes without their length prefixes, or None if all
    are null), or (False, None) when some but not all are null."""
    firsts = b"".join(map(_FIRST_BYTE, fields))
    nulls = firsts.count(_NULL)
    if nulls:
        return nulls == n, None
    if firsts.isascii():                          # all one-byte prefixes
        cut: Any = _CUT[1]
    elif not firsts.translate(None, _HIGH_BYTES):  # all two-byte prefixes
        cut = _CUT[2]
    else:                                         # both: a slice per field, chosen by a table
        cut_each: Any = getitem
        return True, list(map(cut_each, fields, map(_SLICE_AFTER_PREFIX.__getitem__, firsts)))
    return True, list(map(cut, fields))


def assemble_scanned(header: BatchHeader, topic: str, partition: int, min_offset: int,
                     scanned: tuple[list[int], list[bytes] | None, list[bytes] | None]) -> list[Record]:
    """Records from `scan_records`' columns, dropping offsets < min_offset; no Python per record."""
    ts_deltas, keys, values = scanned
    n = header.records_count
    skip = min(max(min_offset - header.base_offset, 0), n)
    count = n - skip
    timestamps: Any
    if header.attributes & TIMESTAMP_TYPE_MASK:
        timestamps = repeat(header.max_timestamp, count)
    else:
        timestamps = map(add, repeat(header.base_timestamp, count), ts_deltas[skip:] if skip else ts_deltas)
    key_column: Any = repeat(None, count) if keys is None else keys[skip:] if skip else keys
    value_column: Any = repeat(None, count) if values is None else values[skip:] if skip else values
    offsets = range(header.base_offset + skip, header.base_offset + n)
    return list(map(new_record, zip(
        repeat(topic, count), repeat(partition, count), offsets, timestamps,
        key_column, value_column, repeat(NO_HEADERS, count),
    )))
