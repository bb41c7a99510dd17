"""Issue 8 item 8 end to end: a real `minilog serve` process refuses every invalid batch sent
over a real socket with CORRUPT_MESSAGE or INVALID_RECORD, and stores nothing of it."""

from __future__ import annotations

import os
import struct

import lz4.frame
import zstandard
from crc32c import crc32c

from minilog.protocol import CODEC_LZ4, CODEC_ZSTD, ErrorCode, build_batch, decode_records

_HEADER = struct.Struct(">qiibIhiqqqhii")
MiB = 1024 * 1024


def _rebuild(raw: bytes, body: bytes | None = None, **fields: int) -> bytes:
    """`raw` with header fields and (stored, possibly compressed) records body replaced; CRC fixed."""
    names = ("base_offset", "batch_length", "partition_leader_epoch", "magic", "crc", "attributes",
             "last_offset_delta", "base_timestamp", "max_timestamp", "producer_id", "producer_epoch",
             "base_sequence", "records_count")
    values = dict(zip(names, _HEADER.unpack_from(raw)))
    values.update(fields)
    body = raw[61:] if body is None else body
    values["batch_length"] = 49 + len(body)
    head = _HEADER.pack(*(values[name] for name in names))
    return head[:17] + struct.pack(">I", crc32c(head[21:] + body)) + head[21:] + body


def _invalid_batches() -> list[tuple[str, bytes, int]]:
    three = build_batch([b"one", b"two", b"three"], timestamps=[10, 12, 11])
    zstd_bomb = zstandard.ZstdCompressor().compressobj(size=100 * MiB)
    zstd_body = b"".join([zstd_bomb.compress(bytes(MiB)) for _ in range(100)] + [zstd_bomb.flush()])
    lz4_body = lz4.frame.compress(bytes(100 * MiB), block_linked=False, store_size=False)
    crc_damaged = bytearray(three)
    crc_damaged[-1] ^= 0xFF
    return [
        ("records_count 2 with 3 records", _rebuild(three, records_count=2, last_offset_delta=1),
         ErrorCode.INVALID_RECORD),
        ("random record bytes, CRC fixed", _rebuild(three, os.urandom(40)), ErrorCode.INVALID_RECORD),
        ("last_offset_delta 1000 for 3 records", _rebuild(three, last_offset_delta=1000),
         ErrorCode.INVALID_RECORD),
        ("zstd batch inflating to 100 MiB", _rebuild(three, zstd_body, attributes=CODEC_ZSTD),
         ErrorCode.INVALID_RECORD),
        ("lz4 batch inflating to 100 MiB", _rebuild(three, lz4_body, attributes=CODEC_LZ4),
         ErrorCode.INVALID_RECORD),
        ("max_timestamp not the records' largest", _rebuild(three, max_timestamp=99),
         ErrorCode.INVALID_RECORD),
        ("bad CRC", bytes(crc_damaged), ErrorCode.CORRUPT_MESSAGE),
        ("a valid batch followed by an invalid one", three + _rebuild(three, last_offset_delta=1000),
         ErrorCode.INVALID_RECORD),
    ]


def test_issue_8_invalid_batches_are_refused_and_nothing_is_stored(broker):
    """Each invalid batch gets its error code over a real socket, the log end does not move,
    the connection stays usable, and a fetch afterwards returns only the valid batches."""
    c = broker.client()
    assert c.create_topic("t", 1) == 0
    good = build_batch([b"a", b"b", b"c"], timestamps=5)
    assert c.produce("t", 0, good)["base_offset"] == 0
    cases = _invalid_batches()
    assert len(cases[3][1]) < 10_000, "the zstd bomb is a few KB"
    for name, bad, code in cases:
        r = c.produce("t", 0, bad)
        assert r["error_code"] == code, (name, r)
        assert c.list_offset("t", 0, -1)["offset"] == 3, name
    assert c.produce("t", 0, good)["base_offset"] == 3
    _, data = c.fetch("t", 0, 0)
    records = decode_records(data, "t", 0)
    assert [(r.offset, r.value) for r in records] == list(enumerate([b"a", b"b", b"c"] * 2))
    assert "Traceback" not in broker.logs()
