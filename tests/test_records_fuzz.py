"""Fuzz: random bytes and mutated valid batches make the decoders raise only CorruptBatchError.

The invariant (the module contract of protocol/_records.py): for any input,
`iter_batches`, `read_batch_records` and `decode_records` return or raise
`CorruptBatchError`; IndexError, struct.error, UnicodeDecodeError, zlib.error
or a codec library's exception escaping is a bug. `verify_crc=False` lets
mutations reach the decompressors and the record parsers instead of stopping
at the CRC. Besides hypothesis, one seeded loop per codec mutates batches
deterministically; the seed is in the failure message.
"""

from __future__ import annotations

import random

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minilog.protocol import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    CorruptBatchError,
    build_batch,
    decode_records,
    iter_batches,
    read_batch_records,
)
from minilog.protocol._compression import codec_available

CODECS = [c for c in (CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD)
          if codec_available(c)]


def _seed_batches(codec):
    """Valid batches covering both decode paths: uniform layout and general records."""
    return [
        build_batch([b"u" * 30] * 80, timestamps=1, codec=codec, base_offset=5),
        build_batch([b"a", None, b"ccc" * 9], [b"k", None, b""], timestamps=[3, 1, 900],
                    headers=[[("h", b"v"), ("\u00e9", None)], None, []], codec=codec),
        # two-byte varints: lengths of 64..8191, far-apart timestamps
        build_batch([b"v" * 100, b"w" * 300, None], [None, b"k" * 70, None],
                    timestamps=[0, 100_000, -5], codec=codec),
    ]


SEEDS = {codec: _seed_batches(codec) for codec in CODECS}


def _recrc(buf: bytearray) -> bytearray:
    """Fix up the CRC of a (possibly mutated) single batch, so the mutation goes deeper."""
    if len(buf) >= 21:
        buf[17:21] = crc32c(bytes(buf[21:])).to_bytes(4, "big")
    return buf


def _decode_all_ways(data: bytes) -> None:
    for verify in (True, False):
        try:
            decode_records(data, "t", 0, verify_crc=verify, records_max=10_000,
                           decompressed_bytes_max=1 << 20)
        except CorruptBatchError:
            pass
        try:
            list(read_batch_records(data, verify_crc=verify, records_max=10_000,
                                    decompressed_bytes_max=1 << 20))
        except CorruptBatchError:
            pass
    try:
        for _header, batch in iter_batches(data):
            bytes(batch)
    except CorruptBatchError:
        pass


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_corrupt_batch_error(data):
    """Arbitrary bytes never crash the decoders."""
    _decode_all_ways(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(codec=st.sampled_from(CODECS), which=st.integers(0, 2), fix_crc=st.booleans(),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.none() | st.integers(0, 10_000))
def test_mutated_batches_raise_only_corrupt_batch_error(codec, which, fix_crc, edits, cut):
    """Valid batches with overwritten bytes, truncation and fixed-up CRCs never crash the decoders."""
    buf = bytearray(SEEDS[codec][which])
    for pos, byte in edits:
        buf[pos % len(buf)] = byte
    if cut is not None:
        del buf[cut % (len(buf) + 1):]
    if fix_crc:
        _recrc(buf)
    _decode_all_ways(bytes(buf))


@pytest.mark.parametrize("codec", CODECS)
def test_seeded_record_section_mutations(codec):
    """Mutations inside the records section (header intact, CRC fixed) never crash the decoders."""
    seed = 20261127 + codec
    rng = random.Random(seed)
    for batch in SEEDS[codec]:
        for i in range(400):
            buf = bytearray(batch)
            for _ in range(rng.randint(1, 3)):
                pos = rng.randrange(61, len(buf))
                buf[pos] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
            if rng.random() < 0.2:  # insert or delete a byte, fixing the length field
                pos = rng.randrange(61, len(buf))
                if rng.random() < 0.5:
                    del buf[pos]
                else:
                    buf.insert(pos, rng.randrange(256))
                buf[8:12] = (len(buf) - 12).to_bytes(4, "big")
            _recrc(buf)
            try:
                _decode_all_ways(bytes(buf))
            except Exception as exc:  # pragma: no cover - the failure report
                raise AssertionError(f"seed={seed} iteration={i}: {exc!r}") from exc
