"""The record codec round-trips, rejects bad batches cleanly, and enforces its limits."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from minilog.protocol import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    BatchBuilder,
    CorruptBatchError,
    LimitExceededError,
    Record,
    build_batch,
    check_batch,
    decode_records,
    iter_batches,
    parse_header,
    read_batch_records,
)
from minilog.protocol._compression import codec_available, compress

ALL_CODECS = [c for c in (CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD)
              if codec_available(c)]


def _craft(section: bytes, *, codec=CODEC_NONE, count=1, base_offset=0, attributes_extra=0,
           last_offset_delta=None) -> bytes:
    """A batch with a hand-made records section and a correct CRC."""
    last = count - 1 if last_offset_delta is None else last_offset_delta
    header = struct.pack(">qiibIhiqqqhii", base_offset, 49 + len(section), -1, 2, 0,
                         codec | attributes_extra, max(last, 0), 0, 0, -1, -1, -1, count)
    body = header[21:] + section
    return header[:17] + struct.pack(">I", crc32c(body)) + body


def _fields(records):
    return [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in records]


# One case table: (columns given to build_batch, expected records section bytes).
# Record bytes: length, attrs, tsDelta, offsetDelta, keyLen, key, valueLen, value, headers.
CASES = [
    (dict(values=[b"a"], timestamps=5), b"\x0e\x00\x00\x00\x01\x02a\x00"),
    (dict(values=[None], keys=[b"k"], timestamps=5), b"\x0e\x00\x00\x00\x02k\x01\x00"),
    (dict(values=[b"", b"b"], timestamps=[5, 4]),
     b"\x0c\x00\x00\x00\x01\x00\x00" + b"\x0e\x00\x01\x02\x01\x02b\x00"),
    (dict(values=[b"v"], headers=[[("h", b"x"), ("n", None)]], timestamps=0),
     b"\x1c\x00\x00\x00\x01\x02v\x04\x02h\x02x\x02n\x01"),
    (dict(values=[b"x" * 64], timestamps=0),  # value length 64 -> 2-byte varint
     b"\x8e\x01\x00\x00\x00\x01\x80\x01" + b"x" * 64 + b"\x00"),
]


@pytest.mark.parametrize("columns,section", CASES)
def test_case_table_encode_and_decode(columns, section):
    """Each case encodes to exactly its bytes, and those bytes decode back to the columns."""
    columns = dict(columns)
    values, keys = columns.pop("values"), columns.pop("keys", None)
    raw = build_batch(values, keys, **columns)
    assert raw[61:] == section
    check_batch(raw)
    headers = columns.get("headers") or [[]] * len(values)
    want = [(i, keys[i] if keys else None, values[i], headers[i]) for i in range(len(values))]
    for decoded in (decode_records(_craft(section, count=len(values)), "t", 0),
                    read_batch_records(raw)):
        assert [(r.offset, r.key, r.value, list(r.headers)) for r in decoded] == want


def _three_batches():
    return [
        build_batch([b"x" * 30] * 70, timestamps=1, base_offset=0),
        build_batch([b"a", None], [None, b"k"], timestamps=[2, 3], base_offset=70,
                    headers=[[("h", b"1")], None], codec=CODEC_LZ4),
        build_batch([b"z" * 10] * 3, timestamps=9, base_offset=72, codec=CODEC_ZSTD),
    ]


def test_decode_whole_with_trailing_bytes_and_truncated_at_every_byte():
    """Whole, with trailing junk-free partial batch, and every truncation: complete batches only, never a crash."""
    batches = _three_batches()
    buf = b"".join(batches)
    per_batch = [decode_records(b, "t", 0) for b in batches]
    assert decode_records(buf, "t", 0) == [r for recs in per_batch for r in recs]
    assert [r.offset for r in decode_records(buf, "t", 0)] == list(range(75))
    ends = [sum(map(len, batches[: i + 1])) for i in range(len(batches))]
    for cut in range(len(buf) + 1):
        complete = sum(1 for e in ends if e <= cut)
        expected = [r for recs in per_batch[:complete] for r in recs]
        assert decode_records(buf[:cut], "t", 0) == expected, cut
        assert len(list(iter_batches(buf[:cut]))) == complete
    for batch in batches:
        for cut in range(len(batch)):
            with pytest.raises(CorruptBatchError):
                list(read_batch_records(batch[:cut]))


def test_trailing_partial_batch_is_ignored_but_garbage_length_is_not():
    """A trailing partial batch is ignored; a length below a header raises."""
    good = build_batch([b"v"], timestamps=1)
    assert len(decode_records(good + good[:30], "t", 0)) == 1
    bad_length = struct.pack(">qi", 0, 5) + b"\0" * 60
    with pytest.raises(CorruptBatchError):
        decode_records(good + bad_length, "t", 0)


@pytest.mark.parametrize("codec", [c for c in ALL_CODECS if c != CODEC_NONE])
def test_decompression_bomb_is_rejected_with_bounded_memory(codec):
    """16 MiB of zeros in a tiny batch is refused at a 1 MiB limit without inflating it all."""
    section = compress(codec, b"\x00" * (16 << 20))
    raw = _craft(section, codec=codec, count=1)
    assert len(raw) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceededError):
            decode_records(raw, "t", 0, decompressed_bytes_max=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    with pytest.raises(CorruptBatchError):
        list(read_batch_records(raw, decompressed_bytes_max=1 << 20))


def test_records_max_is_enforced_before_decoding():
    """A batch declaring more records than records_max is refused; at the limit it decodes."""
    raw = build_batch([b"v"] * 10, timestamps=1)
    assert len(decode_records(raw, "t", 0, records_max=10)) == 10
    with pytest.raises(LimitExceededError):
        decode_records(raw, "t", 0, records_max=9)
    with pytest.raises(LimitExceededError):
        next(read_batch_records(raw, records_max=9))
    lying = _craft(b"", count=2_000_000_000)
    with pytest.raises(CorruptBatchError):
        decode_records(lying, "t", 0)


def test_count_and_bytes_must_agree():
    """Fewer records than declared, or bytes left over, is corrupt."""
    section = build_batch([b"a", b"b"], timestamps=1)[61:]
    with pytest.raises(CorruptBatchError):
        decode_records(_craft(section, count=3), "t", 0)
    with pytest.raises(CorruptBatchError):
        decode_records(_craft(section, count=1), "t", 0)
    with pytest.raises(CorruptBatchError):
        decode_records(_craft(section + b"\x00", count=2), "t", 0)


def test_control_batches_are_skipped():
    """decode_records drops control batches (transaction markers); read_batch_records shows them."""
    marker = _craft(# commit marker: key (version 0, type 1), value (version 0, coordinator epoch 0)
                    b"\x20\x00\x00\x00\x08\x00\x00\x00\x01\x0c" + b"\x00" * 6 + b"\x00",
                    count=1, base_offset=1, attributes_extra=0x20 | 0x10)
    assert parse_header(marker).is_control
    data = build_batch([b"a"], timestamps=1) + marker + build_batch([b"b"], timestamps=1, base_offset=2)
    assert [(r.offset, r.value) for r in decode_records(data, "t", 0)] == [(0, b"a"), (2, b"b")]
    assert len(list(read_batch_records(marker))) == 1


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_min_offset_skips_earlier_records(codec):
    """Records below min_offset are dropped, in both the uniform and the general layout."""
    uniform = build_batch([b"u" * 20] * 100, timestamps=1, base_offset=10, codec=codec)
    general = build_batch([b"g", b"gg", b"ggg"], [b"k", None, b"k"], timestamps=[1, 2, 3],
                          base_offset=110, codec=codec)
    data = uniform + general
    for min_offset in (0, 10, 11, 75, 109, 110, 111, 112, 113, 500):
        got = [r.offset for r in decode_records(data, "t", 0, min_offset=min_offset)]
        assert got == [o for o in range(10, 113) if o >= min_offset], min_offset


def test_crc_mismatch_raises_unless_disabled():
    """A flipped payload bit fails the CRC; verify_crc=False decodes it anyway."""
    raw = bytearray(build_batch([b"hello"], timestamps=1))
    raw[-4] ^= 0x01  # the first "l" of "hello"
    with pytest.raises(CorruptBatchError, match="CRC"):
        decode_records(bytes(raw), "t", 0)
    assert decode_records(bytes(raw), "t", 0, verify_crc=False)[0].value == b"hemlo"


def test_snappy_without_cramjam_is_a_clean_error(monkeypatch):
    """With cramjam missing, snappy batches raise CorruptBatchError both ways, nothing else."""
    from minilog.protocol import _compression

    raw = _craft(b"\x82SNAPPY\x00" + b"\x00\x00\x00\x01" * 2, codec=CODEC_SNAPPY, count=1)
    monkeypatch.setattr(_compression, "_cramjam", None)
    assert not _compression.codec_available(CODEC_SNAPPY)
    with pytest.raises(CorruptBatchError, match="snappy"):
        decode_records(raw, "t", 0)
    with pytest.raises(CorruptBatchError, match="snappy"):
        build_batch([b"v"], codec=CODEC_SNAPPY)


def test_record_type_is_a_readable_tuple():
    """Record has attribute access, a useful repr, and equality by fields."""
    rec = decode_records(build_batch([b"v"], [b"k"], timestamps=7, headers=[[("a", None)]]), "top", 2)[0]
    assert rec == Record("top", 2, 0, 7, b"k", b"v", [("a", None)])
    assert repr(rec) == ("Record(topic='top', partition=2, offset=0, timestamp=7, key=b'k', "
                         "value=b'v', headers=[('a', None)])")
    # header-less records share one immutable empty tuple (no list per record),
    # on the uniform fast path and on the general one alike
    plain = decode_records(build_batch([b"v"] * 20, timestamps=7), "top", 2)
    plain += decode_records(build_batch([b"v", b"vv"], timestamps=7), "top", 2)
    assert all(r.headers == () and r.headers is plain[0].headers for r in plain)


def test_batch_builder_delegates_to_build_batch():
    """BatchBuilder's bytes equal build_batch's for the same columns."""
    bb = BatchBuilder(CODEC_GZIP, producer_id=7, producer_epoch=1, base_sequence=5)
    assert bb.records_count == 0
    for i in range(5):
        assert bb.append(b"v%d" % i, timestamp_ms=100 + i) == i
    raw = bb.build()
    assert raw == build_batch([b"v%d" % i for i in range(5)], timestamps=list(range(100, 105)),
                              codec=CODEC_GZIP, producer_id=7, producer_epoch=1, base_sequence=5)
    assert bb.size_estimate >= len(build_batch(bb._values, timestamps=bb._timestamps))


def test_build_batch_argument_errors():
    """Mismatched columns and wrong types are ValueError/TypeError, not corrupt bytes."""
    with pytest.raises(ValueError):
        build_batch([b"a"], [b"k", b"k"])
    with pytest.raises(ValueError):
        build_batch([b"a"], timestamps=[1, 2])
    with pytest.raises(TypeError):
        build_batch(["text"], timestamps=1)
    with pytest.raises(TypeError):
        build_batch([b"a"], headers=[[(b"bytes-key", b"v")]], timestamps=1)


@pytest.mark.parametrize("n", [8, 63, 64, 65, 8192, 8193])
@pytest.mark.parametrize("key_len,value_len", [(None, 100), (None, None), (8, 0), (3, 200)])
def test_uniform_batches_take_the_fast_path(n, key_len, value_len):
    """Batches of one layout are decoded by the bulk path (a perf guard, not a timing)."""
    from minilog.protocol import _records_fast

    values = [None if value_len is None else b"v" * value_len] * n
    keys = None if key_len is None else [b"k" * key_len] * n
    raw = build_batch(values, keys, timestamps=[100 + i % 50 for i in range(n)])
    header = parse_header(raw)
    fast = _records_fast.decode_uniform(raw[61:], header, "t", 0, 0)
    assert fast is not None
    assert fast == list(read_batch_records(raw, topic="t", partition=0))


def test_multi_byte_timestamp_deltas_and_negative_deltas():
    """Timestamps far apart or going backwards round-trip (general decode path)."""
    ts = [1_000_000, 999_000, 5_000_000_000, 1_000_001]
    raw = build_batch([b"x"] * 4, timestamps=ts)
    assert [r.timestamp for r in decode_records(raw, "t", 0)] == ts
    assert parse_header(raw).max_timestamp == max(ts)


# ---------------------------------------------------------------------------
# Properties

_record = st.tuples(
    st.none() | st.binary(max_size=40),
    st.none() | st.binary(max_size=300),
    st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=3),
    st.integers(min_value=-(1 << 40), max_value=1 << 40),
)


@given(st.integers(-(1 << 63), (1 << 63) - 1))
def test_property_varint_round_trip(n):
    """Kafka zigzag varints round-trip over the whole int64 range, in at most 10 bytes."""
    from minilog.protocol._varint import read_varint, varint

    raw = varint(n)
    assert len(raw) <= 10 and read_varint(raw + b"junk", 0) == (n, len(raw))
    with pytest.raises(CorruptBatchError):
        read_varint(b"\xff" * 11, 0)


@settings(max_examples=150, deadline=None)
@given(records=st.lists(_record, max_size=30), codec=st.sampled_from(ALL_CODECS),
       base_offset=st.integers(0, 1 << 50))
def test_property_round_trip_any_records(records, codec, base_offset):
    """Any records round-trip through build_batch and both decoders."""
    keys = [r[0] for r in records]
    values = [r[1] for r in records]
    headers = [r[2] for r in records]
    ts = [1_600_000_000_000 + r[3] for r in records]
    raw = build_batch(values, keys, timestamps=ts, headers=headers, codec=codec,
                      base_offset=base_offset)
    check_batch(raw)
    want = [(base_offset + i, ts[i], keys[i], values[i], headers[i]) for i in range(len(records))]
    assert _fields(decode_records(raw, "t", 0)) == want
    assert _fields(read_batch_records(raw)) == want


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 300), value_len=st.integers(0, 200), key_len=st.none() | st.integers(0, 20),
       ts_step=st.sampled_from([0, 0, 1, 40, 1000]), codec=st.sampled_from(ALL_CODECS),
       min_offset=st.integers(0, 400), data=st.data())
def test_property_uniform_fast_path_equals_general_parser(n, value_len, key_len, ts_step, codec,
                                                          min_offset, data):
    """Batches of one layout (the bulk fast path) decode exactly as the reference parser does."""
    seed = data.draw(st.binary(min_size=1, max_size=4))
    values = [(seed * (value_len // len(seed) + 1))[:value_len] for _ in range(n)]
    keys = None if key_len is None else [bytes([i % 256]) * key_len for i in range(n)]
    ts = [10_000 + i * ts_step for i in range(n)]
    raw = build_batch(values, keys, timestamps=ts, codec=codec)
    fast = decode_records(raw, "t", 1, min_offset=min_offset)
    slow = [r for r in read_batch_records(raw, topic="t", partition=1) if r.offset >= min_offset]
    assert fast == slow


def _keyed(n, rng, value_lens, null_keys=False):
    keys = None if null_keys else [bytes([65 + i % 26]) * rng.randrange(0, 64) for i in range(n)]
    values = [bytes([i % 256]) * rng.choice(value_lens) for i in range(n)]
    return keys, values


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 1 << 30), codec=st.sampled_from(ALL_CODECS),
       value_lens=st.sampled_from([[100], [0, 5, 63], [64, 300, 1023], [250, 450], [10, 1024], [5000]]),
       null_keys=st.booleans(), ts_step=st.sampled_from([0, 1, 40, 100]), min_offset=st.integers(0, 400))
def test_property_scan_path_equals_general_parser(n, seed, codec, value_lens, null_keys, ts_step, min_offset):
    """Records of varying key and value length (the scan path, or its fallback) decode as the reference does."""
    import random

    keys, values = _keyed(n, random.Random(seed), value_lens, null_keys)
    raw = build_batch(values, keys, timestamps=[10_000 + i * ts_step for i in range(n)], codec=codec)
    fast = decode_records(raw, "t", 1, min_offset=min_offset)
    slow = [r for r in read_batch_records(raw, topic="t", partition=1) if r.offset >= min_offset]
    assert fast == slow


@pytest.mark.parametrize("value_lens", [[100], [250, 450], [0, 1023], [3]])
@pytest.mark.parametrize("n", [8, 64, 65, 1000, 8192])
def test_keyed_batches_take_the_scan_path(n, value_lens):
    """Keyed records of varying length are found by the one-scan path (a perf guard, not a timing)."""
    import random

    from minilog.protocol._records_scan import scan_records

    keys, values = _keyed(n, random.Random(n), value_lens)
    stamps = [100 + i * 37 % 8000 - 4000 for i in range(n)]  # 1- and 2-byte timestamp deltas
    raw = build_batch(values, keys, timestamps=stamps)
    scanned = scan_records(raw[61:], n)
    assert scanned is not None
    assert [stamps[0] + d for d in scanned[0]] == stamps and scanned[1] == keys and scanned[2] == values


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 1 << 30), at=st.integers(0, 1 << 20), byte=st.integers(0, 255),
       kind=st.sampled_from(["set", "delete", "insert"]))
def test_property_mutated_keyed_batches_decode_as_the_reference(seed, at, byte, kind):
    """A keyed batch with one byte changed, removed or added (CRC fixed) decodes to exactly what the
    reference parser reads, or both refuse it: the scan path never accepts what the reference refuses."""
    import random

    keys, values = _keyed(40, random.Random(seed), [10, 70, 200])
    section = bytearray(build_batch(values, keys, timestamps=[5 + i % 3 for i in range(40)])[61:])
    at %= len(section)
    if kind == "set":
        section[at] = byte
    elif kind == "delete":
        del section[at]
    else:
        section[at:at] = bytes((byte,))
    raw = _craft(bytes(section), count=40)
    try:
        want = list(read_batch_records(raw, topic="t", partition=0))
    except CorruptBatchError:
        want = None
    try:
        got = decode_records(raw, "t", 0)
    except CorruptBatchError:
        got = None
    assert got == want


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_keyed_batches_with_some_null_keys_or_values_decode_as_the_reference(codec):
    """Some null keys, some null values (tombstones) among keyed records: same records as the reference."""
    keys = [None if i % 5 == 0 else b"k" * (i % 40) for i in range(50)]
    values = [None if i % 7 == 3 else b"v" * (i * 13 % 300) for i in range(50)]
    raw = build_batch(values, keys, timestamps=[7 + i % 4 for i in range(50)], codec=codec)
    assert _fields(decode_records(raw, "t", 0)) == _fields(read_batch_records(raw))
    assert [(r.key, r.value) for r in decode_records(raw, "t", 0)] == list(zip(keys, values))
