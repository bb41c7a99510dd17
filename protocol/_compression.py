"""Compression codecs of Kafka RecordBatch v2, by Kafka's codec ids.

Theory of operation: a compressed batch keeps its 61-byte header in the
clear and compresses only the records section, as one blob. The codecs and
their framings are Kafka's, so our batches read in Kafka and kafka-python:

    1 gzip    RFC 1952 gzip (zlib with wbits=31); concatenated members accepted
    2 snappy  xerial "SNAPPY" block framing (what Kafka's Java client writes
              and kafka-python reads); raw snappy accepted on read. Optional:
              needs `cramjam`; without it snappy raises `CorruptBatchError`.
    3 lz4     LZ4 *frame* format, independent blocks (kafka-python does the
              same; Kafka rejects linked blocks)
    4 zstd    zstd frames; concatenated frames accepted

Decompression is always bounded: every decoder stops after `limit + 1`
output bytes, so a tiny batch that would inflate to gigabytes (a
decompression bomb) costs at most `limit` bytes of memory before it is
rejected. Nothing here calls a one-shot `decompress()` without a bound.

Error handling: `decompress` raises only `CorruptBatchError` (or its
subclass `LimitExceededError` when the output would exceed `limit`), never
zlib.error, RuntimeError, or the codec libraries' own exceptions.
`compress` raises `CorruptBatchError` for an unknown or unavailable codec.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import lz4.frame
import zstandard

from ._batch_header import CODEC_GZIP, CODEC_LZ4, CODEC_NONE, CODEC_SNAPPY, CODEC_ZSTD
from ._errors import CorruptBatchError, LimitExceededError

from ._batch_header import BytesLike

_cramjam: Any
try:  # snappy is optional, as in kafka-python
    import cramjam as _cramjam
except ImportError:  # pragma: no cover - depends on the environment
    _cramjam = None

__all__ = ["compress", "decompress", "codec_available", "CODEC_NAMES"]

CODEC_NAMES = {
    CODEC_NONE: "none",
    CODEC_GZIP: "gzip",
    CODEC_SNAPPY: "snappy",
    CODEC_LZ4: "lz4",
    CODEC_ZSTD: "zstd",
}

# xerial snappy framing: 8-byte magic, int32 version, int32 compat, then
# blocks of (int32 compressed length, raw snappy block). 32 KiB blocks, as
# the xerial library and kafka-python write them.
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK_BYTES = 32 * 1024
_INT32 = struct.Struct(">i")

_GZIP_LEVEL = 6          # zlib's default; 9 costs ~3x the time for ~1% size
_ZSTD_LEVEL = 3          # zstd's default, as Kafka's
_zstd_compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
_zstd_decompressor = zstandard.ZstdDecompressor()


def codec_available(codec: int) -> bool:
    """True when `codec` can be encoded and decoded in this interpreter."""
    if codec == CODEC_SNAPPY:
        return _cramjam is not None
    return codec in CODEC_NAMES


def compress(codec: int, data: BytesLike) -> bytes:
    """Compress a records section with Kafka codec id `codec`."""
    if codec == CODEC_LZ4:
        out: bytes = lz4.frame.compress(data, block_linked=False, store_size=False)
        return out
    if codec == CODEC_ZSTD:
        return _zstd_compressor.compress(data)
    if codec == CODEC_GZIP:
        return zlib.compress(data, _GZIP_LEVEL, wbits=31)
    if codec == CODEC_SNAPPY:
        return _snappy_compress(data)
    raise CorruptBatchError(f"unknown compression codec {codec}")


def decompress(codec: int, data: BytesLike, limit: int) -> bytes:
    """Decompress `data`, refusing to produce more than `limit` bytes.

    Raises:
        LimitExceededError: the output would exceed `limit` (a bomb, or a
            batch larger than the caller accepts).
        CorruptBatchError: the data is not valid for the codec, is truncated,
            or the codec is unknown or unavailable.
    """
    try:
        if codec == CODEC_LZ4:
            out = _lz4_decompress(data, limit)
        elif codec == CODEC_ZSTD:
            out = _zstd_decompress(data, limit)
        elif codec == CODEC_GZIP:
            out = _gzip_decompress(data, limit)
        elif codec == CODEC_SNAPPY:
            out = _snappy_decompress(data, limit)
        else:
            raise CorruptBatchError(f"unknown compression codec {codec}")
    except CorruptBatchError:
        raise
    except Exception as exc:  # the codec libraries raise many types; see contract
        name = CODEC_NAMES.get(codec, codec)
        raise CorruptBatchError(f"{name} decompression failed: {exc!r}") from exc
    if len(out) > limit:
        raise _too_big(limit)
    return out


def _too_big(limit: int) -> LimitExceededError:
    return LimitExceededError(f"records section decompresses to more than {limit} bytes")


# lz4.frame and zstandard allocate their whole `max_length` up front, so
# output is read in steps that start near the likely size and double,
# instead of one read of `limit + 1` bytes (64 MiB for a 1 KiB batch).
_STEP_BYTES_MIN = 64 * 1024


def _first_step(data: BytesLike, limit: int) -> int:
    return min(max(_STEP_BYTES_MIN, 4 * len(data)), limit + 1)


def _lz4_decompress(view: BytesLike, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    data = bytes(view)
    step = _first_step(data, limit)
    while data:  # one frame per pass; Kafka writes one, more are legal
        d = lz4.frame.LZ4FrameDecompressor()
        chunk = d.decompress(data, max_length=min(step, limit + 1 - total))
        while True:
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise _too_big(limit)
            if d.eof:
                break
            if d.needs_input:
                raise CorruptBatchError("lz4: truncated frame")
            step *= 2
            chunk = d.decompress(b"", max_length=min(step, limit + 1 - total))
        data = d.unused_data
    return b"".join(parts)


def _zstd_decompress(data: BytesLike, limit: int) -> bytes:
    # stream_reader never allocates from the frame's declared content size,
    # unlike one-shot decompress(); reads stop at limit + 1 bytes.
    # A frame that declares more than `limit` is refused before any output
    # (-1: size not declared; later frames are bounded by the reads).
    if zstandard.frame_content_size(data) > limit:
        raise _too_big(limit)
    reader = _zstd_decompressor.stream_reader(bytes(data), read_across_frames=True)
    parts: list[bytes] = []
    total = 0
    step = _first_step(data, limit)
    while total <= limit:
        chunk = reader.read(min(step, limit + 1 - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
        step *= 2
    return b"".join(parts)


def _gzip_decompress(view: BytesLike, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    data = bytes(view)
    while True:
        d = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, auto
        chunk = d.decompress(data, limit + 1 - total)
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _too_big(limit)
        if not d.eof:
            raise CorruptBatchError("gzip: truncated stream")
        data = d.unused_data
        if not data:
            return b"".join(parts)


def _snappy_compress(data: BytesLike) -> bytes:
    if _cramjam is None:
        raise CorruptBatchError("snappy codec unavailable: install cramjam")
    pieces = [_XERIAL_HEADER]
    view = memoryview(data)
    for start in range(0, len(data), _XERIAL_BLOCK_BYTES):
        block = bytes(_cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK_BYTES]))
        pieces.append(_INT32.pack(len(block)))
        pieces.append(block)
    return b"".join(pieces)


def _snappy_decompress(view: BytesLike, limit: int) -> bytes:
    if _cramjam is None:
        raise CorruptBatchError("snappy codec unavailable: install cramjam")
    data = bytes(view)
    if not data.startswith(_XERIAL_MAGIC) or len(data) < len(_XERIAL_HEADER):
        return _snappy_block(data, limit)
    parts: list[bytes] = []
    total = 0
    pos = len(_XERIAL_HEADER)
    while pos < len(data):
        if len(data) - pos < 4:
            raise CorruptBatchError("snappy: truncated xerial block length")
        (size,) = _INT32.unpack_from(data, pos)
        pos += 4
        if size < 0 or size > len(data) - pos:
            raise CorruptBatchError("snappy: xerial block overruns the data")
        chunk = _snappy_block(data[pos : pos + size], limit - total)
        parts.append(chunk)
        total += len(chunk)
        pos += size
    return b"".join(parts)


def _snappy_block(block: bytes, limit: int) -> bytes:
    # A raw snappy block declares its output length up front: check it
    # before allocating anything.
    if _cramjam.snappy.decompress_raw_len(block) > limit:
        raise _too_big(limit)
    return bytes(_cramjam.snappy.decompress_raw(block))
