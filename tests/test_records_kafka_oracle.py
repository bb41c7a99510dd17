"""Our record codec agrees with kafka-python's (the oracle) byte for byte where it matters.

kafka-python 3.0.12's `DefaultRecordBatchBuilder` / `DefaultRecordBatch`
implement RecordBatch v2 independently of us: batches either side builds
must decode on the other side field for field, with agreeing CRCs, for every
codec. kafka-python needs python-snappy for snappy; when it is absent we give
kafka.codec a cramjam-backed `snappy` shim so kafka-python's own xerial
framing code still runs against ours.
"""

from __future__ import annotations

import pytest

import kafka.codec
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from minilog.protocol import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    BatchBuilder,
    build_batch,
    check_batch,
    decode_records,
    parse_header,
    read_batch_records,
)
from minilog.protocol._compression import codec_available

CODECS = [
    pytest.param(c, id=name, marks=[] if codec_available(c) else [pytest.mark.skip("no cramjam")])
    for c, name in [(CODEC_NONE, "none"), (CODEC_GZIP, "gzip"), (CODEC_SNAPPY, "snappy"),
                    (CODEC_LZ4, "lz4"), (CODEC_ZSTD, "zstd")]
]


class _CramjamSnappy:
    """The two python-snappy calls kafka.codec makes, on top of cramjam."""

    @staticmethod
    def compress(data):
        import cramjam
        return bytes(cramjam.snappy.compress_raw(bytes(data)))

    @staticmethod
    def decompress(data):
        import cramjam
        return bytes(cramjam.snappy.decompress_raw(bytes(data)))


@pytest.fixture(autouse=True)
def _kafka_snappy(monkeypatch):
    if kafka.codec.snappy is None and codec_available(CODEC_SNAPPY):
        monkeypatch.setattr(kafka.codec, "snappy", _CramjamSnappy)


# (key, value, headers) per record; values compress well so kafka-python,
# which sends uncompressed when compression does not help, keeps the codec.
SCENARIOS = {
    "plain": [(None, b"value-%d" % i * 10, []) for i in range(5)],
    "keys": [(b"key-%d" % i, b"v" * 50, []) for i in range(5)],
    "null-value": [(b"k", None, []), (None, None, []), (b"k2", b"x" * 80, [])],
    "empty": [(b"", b"", []), (None, b"", []), (b"", b"y" * 90, [])],
    "headers": [(b"k", b"z" * 60, [("h1", b"a"), ("h\u00e9", None), ("", b"")]),
                (None, b"z" * 60, [("only", b"1" * 200)])],
    "large": [(b"big", bytes(range(256)) * 1024, [])],  # 256 KiB: multi-block xerial / lz4
    "many": [(None, b"m" * 100, []) for _ in range(3000)],  # offsetDelta varints of 1-2 bytes
}


def _kafka_build(records, codec, *, base_ts=1_700_000_000_000, producer=(-1, -1, -1)):
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=codec, is_transactional=False,
        producer_id=producer[0], producer_epoch=producer[1], base_sequence=producer[2],
        batch_size=1 << 30,
    )
    for i, (key, value, headers) in enumerate(records):
        assert builder.append(i, base_ts + i * 7, key, value, headers) is not None
    return bytes(builder.build())


def _ours_build(records, codec, *, base_ts=1_700_000_000_000):
    return build_batch(
        [r[1] for r in records], [r[0] for r in records],
        timestamps=[base_ts + i * 7 for i in range(len(records))],
        headers=[r[2] for r in records], codec=codec,
    )


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_kafka_built_batches_decode_with_ours(codec, scenario):
    """A batch from kafka-python's builder decodes with ours field for field."""
    records = SCENARIOS[scenario]
    raw = _kafka_build(records, codec)
    header = check_batch(raw)  # our CRC agrees with kafka-python's
    kbatch = DefaultRecordBatch(raw)
    assert header.crc == kbatch.crc and kbatch.validate_crc()
    expected = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in kbatch]
    ours = decode_records(raw, "t", 3)
    # headers is a sequence: () for header-less records (kafka-python gives [])
    assert [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in ours] == expected
    assert all((r.topic, r.partition) == ("t", 3) for r in ours)
    lazy = list(read_batch_records(raw))
    assert [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in lazy] == expected


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_our_batches_decode_with_kafka(codec, scenario):
    """A batch from build_batch reads in kafka-python, which validates its CRC."""
    records = SCENARIOS[scenario]
    raw = _ours_build(records, codec)
    kbatch = DefaultRecordBatch(raw)
    assert kbatch.validate_crc()
    assert kbatch.compression_type == codec
    assert kbatch.records_count == len(records)
    assert kbatch.last_offset_delta == len(records) - 1
    got = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in kbatch]
    want = [(i, 1_700_000_000_000 + i * 7, k, v, h) for i, (k, v, h) in enumerate(records)]
    assert got == want


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_uncompressed_bytes_identical_to_kafka(scenario):
    """Uncompressed, our encoder writes exactly kafka-python's bytes (header fields aside)."""
    records = SCENARIOS[scenario]
    ours = _ours_build(records, CODEC_NONE)
    theirs = _kafka_build(records, CODEC_NONE)
    # kafka-python writes leader epoch 0, we write Kafka's "unknown" (-1)
    assert ours[61:] == theirs[61:]
    assert parse_header(ours)._replace(partition_leader_epoch=0, crc=0) == \
        parse_header(theirs)._replace(crc=0)


@pytest.mark.parametrize("ts_of", [lambda i: 5, lambda i: 5 + i % 64, lambda i: 5 + i // 100],
                         ids=["shared", "deltas-0-63", "slow-clock"])
def test_fast_path_bytes_identical_to_kafka(ts_of):
    """The uniform encode fast path (no keys, 1-byte timestamp deltas) writes kafka-python's exact bytes."""
    for n in (1, 63, 64, 65, 8191, 8192, 8193):
        values = [b"q" * 100] * n
        timestamps = [ts_of(i) for i in range(n)]
        builder = DefaultRecordBatchBuilder(2, CODEC_NONE, False, -1, -1, -1, 1 << 30)
        for i, v in enumerate(values):
            builder.append(i, timestamps[i], None, v, [])
        theirs = bytes(builder.build())
        ours = build_batch(values, timestamps=timestamps, partition_leader_epoch=0)
        assert ours == theirs, n


def test_producer_fields_and_builder_agree_with_kafka():
    """Idempotent-producer fields land where kafka-python reads them; BatchBuilder == build_batch."""
    bb = BatchBuilder(CODEC_LZ4, producer_id=42, producer_epoch=3, base_sequence=100)
    for i in range(10):
        assert bb.append(b"v" * 40, key=b"k%d" % i, headers=[("i", b"%d" % i)], timestamp_ms=1000 + i) == i
    raw = bb.build()
    kbatch = DefaultRecordBatch(raw)
    assert (kbatch.producer_id, kbatch.producer_epoch, kbatch.base_sequence) == (42, 3, 100)
    assert kbatch.validate_crc() and kbatch.max_timestamp == 1009 and kbatch.first_timestamp == 1000
    assert [r.headers for r in kbatch] == [[("i", b"%d" % i)] for i in range(10)]
    assert bb.records_count == 10 and bb.size_estimate >= len(bytes(_ours_uncompressed(bb)))


def _ours_uncompressed(bb):
    return build_batch(bb._values, bb._keys, timestamps=bb._timestamps, headers=bb._headers)


def test_empty_batch_matches_kafka():
    """An empty batch is what kafka-python builds for no records: 61 bytes, count 0, readable both ways."""
    builder = DefaultRecordBatchBuilder(2, CODEC_NONE, False, -1, -1, -1, 1 << 20)
    theirs = bytes(builder.build())
    ours = build_batch([], partition_leader_epoch=0)
    assert ours == theirs and len(ours) == 61
    assert list(DefaultRecordBatch(ours)) == []
    assert decode_records(theirs, "t", 0) == [] and list(read_batch_records(theirs)) == []
    # a compressed empty batch falls back to uncompressed, as kafka-python's does
    assert build_batch([], codec=CODEC_ZSTD, partition_leader_epoch=0) == theirs


def test_log_append_time_uses_max_timestamp_like_kafka():
    """With timestamp type LOG_APPEND_TIME every record reads the batch max timestamp."""
    raw = build_batch([b"a", b"b"], timestamps=[10, 20], timestamp_type=1)
    assert [r.timestamp for r in DefaultRecordBatch(raw)] == [20, 20]
    assert [r.timestamp for r in decode_records(raw, "t", 0)] == [20, 20]
