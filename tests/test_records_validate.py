"""The produce-path batch validator (protocol/_validate.py): it accepts every batch the
encoder makes, refuses the invalid batches of issue 8 item 8, and agrees with the
reference decoder on every mutated batch.

The oracle (`_reference_accepts`): a batch is valid iff the reference decoder
reads it with the default limits and its records are what its header says
(1..RECORDS_MAX records, offsets base..base+n-1, last_offset_delta n-1, not a
control batch, max_timestamp the records' largest and no timestamp below -1).
Mutations are made on the *uncompressed* records section and the batch rebuilt
with a correct CRC (and recompressed), so they reach the record walk.
"""

from __future__ import annotations

import random
import struct
import tracemalloc

import pytest
import zstandard
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minilog.protocol import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    CONTROL_MASK,
    TIMESTAMP_TYPE_MASK,
    CorruptBatchError,
    InvalidRecordError,
    build_batch,
    check_batch_fields,
    parse_header,
    read_batch_records,
    validate_batch,
)
from minilog.protocol._compression import codec_available, compress, decompress
from minilog.protocol._records_fast import uniform_layout

CODECS = [c for c in (CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD) if codec_available(c)]
MMB = 4 * 1024 * 1024    # max.message.bytes in these tests: bound 64 MiB, the decoder's default
_HEADER = struct.Struct(">qiibIhiqqqhii")
MiB = 1024 * 1024


def _section(raw: bytes) -> bytes:
    header = parse_header(raw)
    body = raw[61:header.size]
    return body if header.codec == CODEC_NONE else decompress(header.codec, body, 1 << 30)


def _rebuild(raw: bytes, section: bytes | None = None, **fields: int) -> bytes:
    """`raw` with its records section and header fields replaced, recompressed, CRC fixed."""
    names = ("base_offset", "batch_length", "partition_leader_epoch", "magic", "crc", "attributes",
             "last_offset_delta", "base_timestamp", "max_timestamp", "producer_id", "producer_epoch",
             "base_sequence", "records_count")
    values = dict(zip(names, _HEADER.unpack_from(raw)))
    values.update(fields)
    section = _section(raw) if section is None else section
    codec = values["attributes"] & 7
    body = section if codec == CODEC_NONE else compress(codec, section)
    values["batch_length"] = 49 + len(body)
    head = _HEADER.pack(*(values[name] for name in names))
    crc = crc32c(head[21:] + body)
    return head[:17] + struct.pack(">I", crc) + head[21:] + body


def _reference_accepts(raw: bytes) -> bool:
    """The oracle: the reference decoder reads the batch and it says what it holds."""
    header = parse_header(raw)
    try:
        records = list(read_batch_records(raw))
    except CorruptBatchError:
        return False
    n = header.records_count
    if not 1 <= n or header.is_control or header.last_offset_delta != n - 1 or header.size != len(raw):
        return False
    if [r.offset for r in records] != list(range(header.base_offset, header.base_offset + n)):
        return False
    if header.attributes & TIMESTAMP_TYPE_MASK:
        return header.max_timestamp >= -1
    stamps = [r.timestamp for r in records]
    return max(stamps) == header.max_timestamp and min(stamps) >= -1


def _verdict(raw: bytes) -> bool:
    """The validator's answer; the produce path's call (the header fields already checked by
    `check_batch_fields`, not parsed again) must give the same one."""
    verdicts = []
    try:
        variants: list[dict] = [{}, {"fields": check_batch_fields(raw)}]
    except CorruptBatchError:       # refused before the walk on the produce path: CORRUPT_MESSAGE
        variants = [{}]
    for extra in variants:
        try:
            validate_batch(raw, max_message_bytes=MMB, **extra)
        except InvalidRecordError:
            verdicts.append(False)
        else:
            verdicts.append(True)
    assert len(set(verdicts)) == 1, verdicts
    return verdicts[0]


# ---------------------------------------------------------------------------
# Issue 8 item 8: each invalid batch found by hand is refused, with the right type

def _three(codec: int = CODEC_NONE) -> bytes:
    return build_batch([b"one", b"two", b"three"], [b"a", None, b"c"], timestamps=[10, 12, 11], codec=codec)


@pytest.mark.parametrize("codec", CODECS)
def test_issue_8_records_count_2_with_3_records(codec):
    """records_count 2 over three records (CRC fixed) is INVALID_RECORD, for every codec."""
    raw = _rebuild(_three(codec), records_count=2, last_offset_delta=1)
    assert not _reference_accepts(raw)
    with pytest.raises(InvalidRecordError, match="left after 2 records"):
        validate_batch(raw, max_message_bytes=MMB)


def test_issue_8_last_offset_delta_1000_for_3_records():
    """last_offset_delta 1000 for 3 records would leave 997 offsets naming nothing."""
    raw = _rebuild(_three(), last_offset_delta=1000)
    with pytest.raises(InvalidRecordError, match="last offset delta 1000"):
        validate_batch(raw, max_message_bytes=MMB)


def test_issue_8_random_record_bytes_with_a_fixed_crc():
    """Random records sections with a correct CRC are refused unless they happen to be valid (seeded)."""
    for seed in range(300):
        rng = random.Random(seed)
        section = rng.randbytes(rng.randrange(7, 400))
        raw = _rebuild(_three(), section, records_count=rng.randrange(1, 5))
        raw = _rebuild(raw, last_offset_delta=parse_header(raw).records_count - 1)
        assert _verdict(raw) == _reference_accepts(raw), f"seed {seed}"
        assert not _verdict(raw), f"seed {seed}: random bytes were a valid batch?"


@pytest.mark.parametrize("codec, declared", [(CODEC_ZSTD, True), (CODEC_ZSTD, False),
                                             (CODEC_LZ4, False), (CODEC_GZIP, False)])
def test_issue_8_compressed_bomb_is_refused_without_inflating_it(codec, declared):
    """A few-KB batch inflating to 100 MiB is refused after at most ~2x the bound of output."""
    if codec == CODEC_ZSTD:
        # zstd frames may declare their size (refused before any output) or not (bounded reads)
        cobj = zstandard.ZstdCompressor().compressobj(size=100 * MiB if declared else -1)
        blob = b"".join([cobj.compress(bytes(MiB)) for _ in range(100)] + [cobj.flush()])
    else:
        blob = compress(codec, bytes(100 * MiB))
    assert len(blob) < 500_000
    template = build_batch([b"x"] * 3, timestamps=0, codec=codec)
    names_crc = _HEADER.unpack_from(template)
    head = _HEADER.pack(0, 49 + len(blob), -1, 2, 0, names_crc[5], 2, 0, 0, -1, -1, -1, 3)
    crc = crc32c(head[21:] + blob)
    raw = head[:17] + struct.pack(">I", crc) + head[21:] + blob
    max_message_bytes = 64 * 1024   # bound: 16 x 64 KiB = 1 MiB
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRecordError, match="more than 1048576 bytes"):
            validate_batch(raw, max_message_bytes=max_message_bytes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, f"peak {peak} bytes while refusing a 100 MiB bomb"


def test_crc_and_framing_errors_are_corrupt_message_not_invalid_record():
    """Damage the CRC covers is CorruptBatchError (CORRUPT_MESSAGE), never InvalidRecordError."""
    raw = bytearray(_three())
    raw[61] += 2   # the first record's length varint
    with pytest.raises(CorruptBatchError, match="CRC mismatch") as info:
        validate_batch(bytes(raw), max_message_bytes=MMB)
    assert not isinstance(info.value, InvalidRecordError)
    for bad in (_three() + b"\x00", _three()[:-1], _three()[:40]):
        with pytest.raises(CorruptBatchError) as info:
            validate_batch(bad, max_message_bytes=MMB)
        assert not isinstance(info.value, InvalidRecordError)
    # the caller may vouch for the CRC: then the same damage reaches the record walk
    with pytest.raises(InvalidRecordError):
        validate_batch(bytes(raw), max_message_bytes=MMB, verify_crc=False)


@pytest.mark.parametrize("mutation, match", [
    (dict(records_count=0, last_offset_delta=0), "no records"),
    (dict(attributes=CONTROL_MASK), "control"),
    (dict(max_timestamp=13), "max timestamp 13"),
    (dict(base_timestamp=-20, max_timestamp=-18), "negative"),
    (dict(attributes=7), "unknown compression codec"),
])
def test_header_contradictions_are_refused(mutation, match):
    """Each header rule of the validator refuses a batch that breaks only that rule."""
    if mutation.get("attributes") == 7:  # no codec 7 to compress with: patch the bytes
        raw = _three()[:21] + b"\x00\x07" + _three()[23:]
        raw = raw[:17] + struct.pack(">I", crc32c(raw[21:])) + raw[21:]
    elif "records_count" in mutation:
        raw = _rebuild(build_batch([], timestamps=0), **mutation)
    else:
        raw = _rebuild(_three(), **mutation)
    with pytest.raises(InvalidRecordError, match=match):
        validate_batch(raw, max_message_bytes=MMB)


def test_offset_delta_out_of_order_in_a_uniform_batch_is_refused():
    """Swapping two records of a uniform batch (offset deltas 5, 4) is refused by the fast path's fallback."""
    raw = build_batch([b"v" * 100] * 50, timestamps=7)
    section = _section(raw)
    stride = len(section) // 50
    records = [section[i * stride:(i + 1) * stride] for i in range(50)]
    records[4], records[5] = records[5], records[4]
    bad = _rebuild(raw, b"".join(records))
    assert uniform_layout(_section(bad), parse_header(bad)) is None
    with pytest.raises(InvalidRecordError, match="record 4 has offset delta 5"):
        validate_batch(bad, max_message_bytes=MMB)


# Records by hand: length, attributes, tsDelta, offsetDelta, key, value, headers (zigzag varints).
@pytest.mark.parametrize("record, match", [
    (b"\x0c\x00\x00\x00\x03\x01\x00", "field length -2"),         # key length -2
    (b"\x0c\x00\x00\x00\x01\x03\x00", "field length -2"),         # value length -2
    (b"\x0c\x00\x00\x00\x01\x01\x01", "bad header count -1"),     # headers count -1
    (b"\x18\x00\x00\x00\x01\x01\x02\x01\x00\x00\x00\x00\x00", "header key length -1"),
    (b"\x12\x00\x00\x00\x01\x01\x02\x02\xff\x00", "not UTF-8"),  # header key b"\xff"
    (b"\x0a\x00\x00\x00\x01\x01\x00", "out of bounds"),            # length 5
    (b"\x0e\x00\x00\x00\x01\x01\x00\x00", "its fields use 6"),    # length 7, fields use 6
])
def test_malformed_records_are_refused(record, match):
    """Each record-level rule refuses a one-record batch that breaks it, as the reference decoder does."""
    raw = _rebuild(build_batch([b"x"], timestamps=0), record, records_count=1, last_offset_delta=0)
    assert not _reference_accepts(raw)
    with pytest.raises(InvalidRecordError, match=match):
        validate_batch(raw, max_message_bytes=MMB)


# ---------------------------------------------------------------------------
# Properties

_record = st.tuples(
    st.none() | st.binary(max_size=40),
    st.none() | st.binary(max_size=300),
    st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=3),
    st.integers(min_value=-(1 << 40), max_value=1 << 40),
)


@st.composite
def _batches(draw):
    """Valid batches of three kinds: uniform (the fast path), keyed (the scan path), general (any records)."""
    codec = draw(st.sampled_from(CODECS))
    kind = draw(st.sampled_from(["uniform", "keyed", "general"]))
    if kind == "keyed":  # keys and values of varying length: the scan path
        n = draw(st.integers(1, 120))
        rng = random.Random(draw(st.integers(0, 1 << 30)))
        value_lens = draw(st.sampled_from([[100], [250, 450], [0, 70, 1023], [2000]]))
        return build_batch([b"v" * rng.choice(value_lens) for _ in range(n)],
                           [b"k" * rng.randrange(64) for _ in range(n)],
                           timestamps=[1_700_000_000_000 + i * 37 % 6000 for i in range(n)], codec=codec)
    if kind == "uniform":
        n = draw(st.integers(1, 200))
        value_len = draw(st.integers(0, 150))
        key_len = draw(st.none() | st.integers(0, 20))
        step = draw(st.sampled_from([0, 1, 3]))
        return build_batch([bytes([i % 251]) * value_len for i in range(n)],
                           None if key_len is None else [b"k" * key_len] * n,
                           timestamps=[1_700_000_000_000 + i * step for i in range(n)], codec=codec,
                           base_offset=draw(st.integers(0, 1 << 40)))
    records = draw(st.lists(_record, min_size=1, max_size=30))
    return build_batch([r[1] for r in records], [r[0] for r in records],
                       timestamps=[1_600_000_000_000 + r[3] for r in records],
                       headers=[r[2] for r in records], codec=codec)


@settings(max_examples=200, deadline=None)
@given(raw=_batches())
def test_property_every_encoded_batch_validates(raw):
    """Whatever the encoder makes, uniform or not, compressed or not, validates."""
    assert validate_batch(raw, max_message_bytes=MMB) == parse_header(raw)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(8, 300), value_len=st.integers(0, 200), key_len=st.none() | st.integers(0, 20),
       codec=st.sampled_from(CODECS))
def test_uniform_batches_take_the_fast_path(n, value_len, key_len, codec):
    """Producer-shaped batches are checked by the bulk layout check (a perf guard, not a timing)."""
    raw = build_batch([b"v" * value_len] * n, None if key_len is None else [b"k" * key_len] * n,
                      timestamps=[50 + i % 60 for i in range(n)], codec=codec)
    assert uniform_layout(_section(raw), parse_header(raw)) is not None
    validate_batch(raw, max_message_bytes=MMB)


_mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 4)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("records_count"), st.integers(-1, 1), st.booleans()),
    st.tuples(st.just("max_timestamp"), st.integers(-2, 2), st.just(0)),
)


def _mutate(raw: bytes, mutation) -> bytes:
    kind, a, b = mutation
    section = bytearray(_section(raw))
    header = parse_header(raw)
    if kind in ("set", "delete", "insert"):
        at = a % (len(section) + 1)
        if kind == "set" and section:
            section[min(at, len(section) - 1)] = b
        elif kind == "delete":
            del section[at:at + b]
        elif kind == "insert":
            section[at:at] = b
        return _rebuild(raw, bytes(section))
    if kind == "records_count":
        n = max(header.records_count + a, 0)
        return _rebuild(raw, records_count=n, last_offset_delta=max(n - 1, 0) if b else header.last_offset_delta)
    return _rebuild(raw, max_timestamp=header.max_timestamp + a)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_batches(), mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_property_validator_agrees_with_the_reference_decoder(raw, mutations):
    """On mutated batches (CRC fixed), the validator accepts exactly what the reference reads consistently."""
    for mutation in mutations:
        raw = _mutate(raw, mutation)
    assert _verdict(raw) == _reference_accepts(raw)


@settings(max_examples=200, deadline=None)
@given(section=st.binary(max_size=300), n=st.integers(1, 6), codec=st.sampled_from(CODECS))
def test_property_random_sections_agree_with_the_reference_decoder(section, n, codec):
    """Random records sections with a correct CRC: the validator agrees with the reference decoder."""
    raw = _rebuild(build_batch([b"x"], timestamps=0, codec=codec), section, records_count=n,
                   last_offset_delta=n - 1)
    assert _verdict(raw) == _reference_accepts(raw)


def test_keyed_batches_are_checked_by_the_scan_path():
    """Keyed records of varying length are validated by the one-scan path (a perf guard, not a timing)."""
    from minilog.protocol._records_scan import scan_records

    rng = random.Random(7)
    raw = build_batch([b"v" * rng.randrange(250, 450) for _ in range(500)],
                      [b"order-%d" % rng.randrange(10 ** rng.randrange(1, 12)) for _ in range(500)],
                      timestamps=[1_700_000_000_000 + i // 10 for i in range(500)], codec=CODEC_LZ4)
    assert scan_records(_section(raw), 500) is not None
    validate_batch(raw, max_message_bytes=MMB)
