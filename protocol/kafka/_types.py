"""Kafka's primitive wire types: a bounds-checked reader and an appending writer.

Byte layouts (all integers big-endian, two's complement)::

    int8 / int16 / int32 / int64   1 / 2 / 4 / 8 bytes
    bool                           int8, 0 or 1 (any non-zero reads as true, as Kafka does)
    uvarint                        7 bits per byte, low group first, high bit = more
    varint / varlong               zigzag-mapped, then as uvarint
    string                         int16 length N, N bytes of UTF-8; nullable: N = -1 is null
    bytes                          int32 length N, N bytes; nullable: N = -1 is null
    array                          int32 count N, N items; nullable: N = -1 is null
    compact string/bytes/array     uvarint N+1 then as above; 0 is null (flexible versions)
    tagged fields                  uvarint count, then (uvarint tag, uvarint size, size bytes) each

Rules: every length and count is checked against the bytes that remain
*before* anything is allocated for it. An array's count is checked against
`remaining // item_bytes_min`, so a 5-byte request cannot declare two
billion items (Kafka's own CVE-2022-34917 and CVE-2026 advisories were
unchecked sizes and counts).

Error handling: every read raises only `KafkaProtocolError` (a `FrameError`)
when the bytes are short or malformed; anything else escaping is a bug.
Writers raise `KafkaEncodeError` for a value that does not fit its type.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .._errors import FrameError

__all__ = [
    "KafkaProtocolError",
    "KafkaEncodeError",
    "UnsupportedVersionError",
    "Reader",
    "Writer",
    "Buffer",
]

Buffer = bytes | bytearray | memoryview

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_UVARINT_BYTES_MAX = 5       # Kafka's unsigned varints carry at most 32 bits
_VARLONG_BYTES_MAX = 10


class KafkaProtocolError(FrameError):
    """Bytes from the peer are not a valid Kafka frame, header or body."""


class KafkaEncodeError(KafkaProtocolError):
    """A value we were asked to encode does not fit its wire type (our bug or bad input)."""


class UnsupportedVersionError(KafkaProtocolError):
    """The request's API key or version is not one this codec implements.

    The header was readable, so the caller can still answer (ApiVersions is
    answered in v0 format with UNSUPPORTED_VERSION, as Kafka does) or log
    what the client asked for before closing.
    """

    def __init__(self, api_key: int, api_version: int, correlation_id: int, client_id: str | None) -> None:
        super().__init__(f"unsupported API key {api_key} version {api_version}")
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id
        self.client_id = client_id


class Reader:
    """Reads primitives from a buffer, checking every size against what remains.

    Not thread-safe; one per message being decoded.
    """

    __slots__ = ("_view", "_pos", "_end")

    def __init__(self, data: Buffer) -> None:
        self._view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
        self._pos = 0
        self._end = len(self._view)

    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return self._end - self._pos

    def _need(self, size: int, what: str) -> int:
        pos = self._pos
        if size < 0 or size > self._end - pos:
            raise KafkaProtocolError(
                f"{what}: needs {size} bytes at position {pos}, {self._end - pos} remain"
            )
        self._pos = pos + size
        return pos

    def int8(self) -> int:
        value: int = _I8.unpack_from(self._view, self._need(1, "int8"))[0]
        return value

    def int16(self) -> int:
        value: int = _I16.unpack_from(self._view, self._need(2, "int16"))[0]
        return value

    def int32(self) -> int:
        value: int = _I32.unpack_from(self._view, self._need(4, "int32"))[0]
        return value

    def int64(self) -> int:
        value: int = _I64.unpack_from(self._view, self._need(8, "int64"))[0]
        return value

    def boolean(self) -> bool:
        return self.int8() != 0

    def uvarint(self, bytes_max: int = _UVARINT_BYTES_MAX) -> int:
        value = 0
        for i in range(bytes_max):
            b = self._view[self._need(1, "varint")]
            value |= (b & 0x7F) << (7 * i)
            if b < 0x80:
                return value
        raise KafkaProtocolError(f"varint longer than {bytes_max} bytes at position {self._pos}")

    def varint(self) -> int:
        z = self.uvarint()
        return (z >> 1) ^ -(z & 1)

    def varlong(self) -> int:
        z = self.uvarint(_VARLONG_BYTES_MAX)
        return (z >> 1) ^ -(z & 1)

    def raw(self, size: int) -> memoryview:
        """`size` bytes as a view of the input (no copy)."""
        pos = self._need(size, "bytes")
        return self._view[pos : pos + size]

    def _length(self, compact: bool, wide: bool) -> int:
        """A length or count prefix: -1 means null."""
        if compact:
            return self.uvarint() - 1
        return self.int32() if wide else self.int16()

    def string(self, nullable: bool = False, compact: bool = False) -> str | None:
        size = self._length(compact, wide=False)
        if size < 0:
            if size == -1 and nullable:
                return None
            raise KafkaProtocolError(f"string length {size} at position {self._pos} (null not allowed here)")
        try:
            return str(self.raw(size), "utf-8")
        except UnicodeDecodeError as exc:
            raise KafkaProtocolError(f"string is not UTF-8: {exc}") from None

    def bytes_(self, nullable: bool = False, compact: bool = False) -> memoryview | None:
        size = self._length(compact, wide=True)
        if size < 0:
            if size == -1 and nullable:
                return None
            raise KafkaProtocolError(f"bytes length {size} at position {self._pos} (null not allowed here)")
        return self.raw(size)

    def array_count(self, item_bytes_min: int, nullable: bool = False, compact: bool = False) -> int | None:
        """An array's item count, checked against the bytes that remain.

        Args:
            item_bytes_min: the fewest bytes one item can take (at least 1).
        Returns:
            The count, or None for a null array.
        """
        count = self._length(compact, wide=True)
        if count < 0:
            if count == -1 and nullable:
                return None
            raise KafkaProtocolError(f"array count {count} at position {self._pos} (null not allowed here)")
        if count * max(1, item_bytes_min) > self.remaining():
            raise KafkaProtocolError(
                f"array declares {count} items of at least {item_bytes_min} bytes "
                f"but only {self.remaining()} bytes remain"
            )
        return count

    def skip_tagged_fields(self) -> None:
        """Read a tagged-field section and ignore its fields (all ours are optional)."""
        count = self.uvarint()
        if count > self.remaining():   # each field takes at least two bytes
            raise KafkaProtocolError(f"{count} tagged fields declared but {self.remaining()} bytes remain")
        for _ in range(count):
            self.uvarint()                # tag
            self.raw(self.uvarint())      # size-checked skip


class Writer:
    """Appends primitives; large opaque buffers are kept as separate parts (no copy).

    `parts()` returns the pieces in order, for a vectored or joined send.
    """

    __slots__ = ("_buf", "_parts", "_size")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._parts: list[Buffer] = []
        self._size = 0           # bytes in _parts (not counting _buf)

    def __len__(self) -> int:
        return self._size + len(self._buf)

    def _pack(self, fmt: struct.Struct, value: int, what: str) -> None:
        try:
            self._buf += fmt.pack(value)
        except struct.error:
            raise KafkaEncodeError(f"{value!r} does not fit {what}") from None

    def int8(self, value: int) -> None:
        self._pack(_I8, value, "int8")

    def int16(self, value: int) -> None:
        self._pack(_I16, value, "int16")

    def int32(self, value: int) -> None:
        self._pack(_I32, value, "int32")

    def int64(self, value: int) -> None:
        self._pack(_I64, value, "int64")

    def boolean(self, value: bool) -> None:
        self._buf.append(1 if value else 0)

    def uvarint(self, value: int) -> None:
        if not 0 <= value < (1 << 64):
            raise KafkaEncodeError(f"{value!r} does not fit an unsigned varint")
        buf = self._buf
        while value >= 0x80:
            buf.append((value & 0x7F) | 0x80)
            value >>= 7
        buf.append(value)

    def varint(self, value: int) -> None:
        if not -(1 << 31) <= value < (1 << 31):
            raise KafkaEncodeError(f"{value!r} does not fit a varint")
        self.uvarint(((value << 1) ^ (value >> 31)) & 0xFFFFFFFF)

    def varlong(self, value: int) -> None:
        if not -(1 << 63) <= value < (1 << 63):
            raise KafkaEncodeError(f"{value!r} does not fit a varlong")
        self.uvarint(((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF)

    def _length(self, size: int, compact: bool, wide: bool) -> None:
        if compact:
            self.uvarint(size + 1)
        elif wide:
            self.int32(size)
        else:
            self.int16(size)

    def string(self, value: str | None, nullable: bool = False, compact: bool = False) -> None:
        if value is None:
            if not nullable:
                raise KafkaEncodeError("null string where the field is not nullable")
            self._length(-1, compact, wide=False)
            return
        data = value.encode("utf-8")
        if len(data) > 0x7FFF:
            raise KafkaEncodeError(f"string of {len(data)} bytes is longer than 32767")
        self._length(len(data), compact, wide=False)
        self._buf += data

    def bytes_(self, value: Buffer | None, nullable: bool = False, compact: bool = False) -> None:
        if value is None:
            if not nullable:
                raise KafkaEncodeError("null bytes where the field is not nullable")
            self._length(-1, compact, wide=True)
            return
        self._length(len(value), compact, wide=True)
        self._buf += value

    def records(self, value: Buffer | Sequence[Buffer] | None, compact: bool = False) -> None:
        """Nullable bytes whose content may be large: appended as parts, never copied here."""
        if value is None:
            self._length(-1, compact, wide=True)
            return
        pieces: Sequence[Buffer] = [value] if isinstance(value, (bytes, bytearray, memoryview)) else value
        total = sum(len(p) for p in pieces)
        self._length(total, compact, wide=True)
        for piece in pieces:
            if len(piece) < 4096:
                self._buf += piece
            else:
                self.raw_part(piece)

    def array_count(self, count: int | None, nullable: bool = False, compact: bool = False) -> None:
        if count is None:
            if not nullable:
                raise KafkaEncodeError("null array where the field is not nullable")
            count = -1
        self._length(count, compact, wide=True)

    def empty_tagged_fields(self) -> None:
        self._buf.append(0)

    def raw(self, data: Buffer) -> None:
        self._buf += data

    def raw_part(self, data: Buffer) -> None:
        """Append `data` as its own part, by reference."""
        if self._buf:
            self._parts.append(bytes(self._buf))
            self._size += len(self._buf)
            self._buf = bytearray()
        self._parts.append(data)
        self._size += len(data)

    def parts(self) -> list[Buffer]:
        if self._buf:
            return [*self._parts, bytes(self._buf)]
        return list(self._parts)

    def getvalue(self) -> bytes:
        return b"".join(self.parts())
