"""Kafka's zigzag varints, as used inside RecordBatch v2 records.

A signed value n is zigzag-mapped to an unsigned one (0->0, -1->1, 1->2,
-2->3, ...: `(n << 1) ^ (n >> 63)`), then written 7 bits per byte, low group
first, with the high bit set on every byte but the last. int32 fields take
at most 5 bytes, int64 ("varlong") at most 10.

Theory of operation: encoding small non-negative numbers (lengths, offset
deltas) is a list lookup in `VARINT`; decoding is `read_varint`, and the hot
loops in `_records_reference.py` inline its one- and two-byte cases.

Error handling: `read_varint` raises IndexError when the buffer ends inside
the varint (callers turn it into `CorruptBatchError`) and `CorruptBatchError`
for a varint longer than 10 bytes. `zigzag_varint` raises ValueError for a
number outside int64.
"""

from __future__ import annotations

from ._errors import CorruptBatchError

__all__ = ["zigzag_varint", "varint", "read_varint", "VARINT", "VARINT_TABLE_SIZE", "NULL", "ZERO"]


def zigzag_varint(n: int) -> bytes:
    """Kafka's signed varint: zigzag, then 7 bits per byte, low group first."""
    if not -(1 << 63) <= n < (1 << 63):
        raise ValueError(f"{n} does not fit a varlong")
    z = ((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


VARINT_TABLE_SIZE = 1 << 14
VARINT = [zigzag_varint(i) for i in range(VARINT_TABLE_SIZE)]  # non-negative only
NULL = b"\x01"   # varint(-1): null key / value
ZERO = b"\x00"   # varint(0)


def varint(n: int) -> bytes:
    """`zigzag_varint(n)`, from the table when 0 <= n < VARINT_TABLE_SIZE."""
    return VARINT[n] if 0 <= n < VARINT_TABLE_SIZE else zigzag_varint(n)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode the zigzag varint at `pos`; return (value, next position).

    Raises IndexError when truncated (callers convert it) and
    CorruptBatchError for a varint longer than 10 bytes.
    """
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    z = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptBatchError("varint longer than 10 bytes")
