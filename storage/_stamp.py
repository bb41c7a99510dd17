"""Stamping a batch on append: the 16 bytes outside the CRC, and LogAppendTime.

Byte layout (RecordBatch v2, Kafka's; `minilog.protocol`'s batch header)::

    0  i64 base offset      \\
    8  i32 batch length      > stamped on every append, outside the CRC
    12 i32 leader epoch     /
    21 ...                  CRC-32C covers everything from the attributes on
    21 i16 attributes       bit 3: timestamp type (1 = LogAppendTime)
    35 i64 max timestamp

With message.timestamp.type=LogAppendTime the broker's time replaces the
max timestamp, the timestamp-type bit is set and the CRC recomputed (Kafka
does the same). The positions are pinned by assertions against
`parse_header`/`stamp_batch` (at import and after each stamp).
"""

from __future__ import annotations

import struct

from minilog.protocol import CRC_START, TIMESTAMP_TYPE_MASK, compute_crc, parse_header, stamp_batch

from ._fs import Buffer

__all__ = ["STAMP", "STAMP_BYTES", "stamp_log_append_time", "stamped_parts"]

STAMP_BYTES = 16                            # base offset, batch length, leader epoch
STAMP = struct.Struct(">qii")               # packed in one go on the append path
_ATTRIBUTES = struct.Struct(">h")
_ATTRIBUTES_POS = CRC_START                 # attributes are the first CRC-covered field
_MAX_TIMESTAMP = struct.Struct(">q")
_MAX_TIMESTAMP_POS = 35
_CRC = struct.Struct(">I")
_CRC_POS = CRC_START - 4


def _stamp_layout_matches_protocol() -> bool:
    probe = bytearray(STAMP.pack(0, 49, 0))
    stamp_batch(probe, 0, 7, 9)
    return bytes(probe) == STAMP.pack(7, 49, 9)


assert STAMP.size == STAMP_BYTES and _stamp_layout_matches_protocol()


def stamp_log_append_time(buf: bytearray, now_ms: int) -> None:
    """Set the LogAppendTime bit and max timestamp `now_ms` in `buf`; recompute the CRC."""
    header = parse_header(buf)
    _ATTRIBUTES.pack_into(buf, _ATTRIBUTES_POS, header.attributes | TIMESTAMP_TYPE_MASK)
    _MAX_TIMESTAMP.pack_into(buf, _MAX_TIMESTAMP_POS, now_ms)
    _CRC.pack_into(buf, _CRC_POS, compute_crc(buf, 0, header.size))
    after = parse_header(buf)
    assert after.max_timestamp == now_ms and after.attributes & TIMESTAMP_TYPE_MASK
    assert after._replace(max_timestamp=header.max_timestamp, crc=header.crc,
                          attributes=header.attributes) == header


def stamped_parts(view: memoryview, base_offset: int, batch_length: int, epoch: int,
                  log_append_time_ms: int | None) -> list[Buffer]:
    """What to write for `view` (one batch) stamped with its base offset and leader epoch.

    Without LogAppendTime: the 16 stamped bytes packed in one go and the rest
    of the batch as received (no copy; the caller's buffer is not modified).
    With it (`log_append_time_ms` given): one stamped copy carrying the
    broker's time, CRC recomputed.
    """
    if log_append_time_ms is None:
        return [STAMP.pack(base_offset, batch_length, epoch), view[STAMP_BYTES:]]
    copy = bytearray(view)
    stamp_batch(copy, 0, base_offset, epoch)
    stamp_log_append_time(copy, log_append_time_ms)
    return [copy]
