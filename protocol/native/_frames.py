"""Wire frames: length-prefixed msgpack messages with raw byte attachments.

Byte layout of one frame::

    u32  frame_length      bytes after this field
    u32  body_length       bytes of the msgpack body
    ...  body              msgpack array (see below)
    ...  attachments       raw byte strings back to back; sizes listed in the body

Request body:  [api_key, api_version, correlation_id, client_id, payload, attachment_sizes]
Response body: [correlation_id, payload, attachment_sizes]

`payload` is a msgpack map whose shape per API lives in `_schemas.py`. Record
batches travel as attachments, never inside msgpack: a payload field that
holds records holds the attachment's index (an int, -1 for none). That keeps
the batch bytes opaque, lets the receiver slice them out of the frame as
memoryviews with no copy, and lets the sender write file bytes after the
body without re-packing them.

Theory of operation: `FrameDecoder` is sans-IO, like h11: `feed(data)` adds
received bytes, `next_frame()` returns one `Request`/`Response` or
`NEED_DATA`. Every size is checked before anything is allocated for it:
frame length against `frame_bytes_max`, body length against the frame, the
attachment count and sizes against the frame, and msgpack's own limits for
strings, arrays and maps. Copies: a frame is sliced out of the receive
buffer once (a bytearray, so attachments are writable views); a frame of
256 KiB or more still arriving is kept as a list of received chunks and
joined once when complete, and a buffer holding exactly one frame is taken
over instead of sliced.

Error handling: `next_frame` raises only `FrameError` (or its subclass
`LimitExceededError`); after that the decoder is poisoned (errors are sticky)
and the connection must be closed. Anything else escaping is a bug.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple
from collections.abc import Sequence

import msgpack

from .._codec import NEED_DATA
from .._errors import FrameError, LimitExceededError

__all__ = [
    "NEED_DATA",
    "Request",
    "Response",
    "FrameDecoder",
    "FrameLimits",
    "encode_request",
    "encode_response",
    "FRAME_PREFIX_SIZE",
]

FRAME_PREFIX_SIZE = 8
_PREFIX = struct.Struct(">II")
_CHUNKED_FRAME_BYTES = 256 * 1024   # frames this large are gathered as chunks (see feed)


class Request(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str
    payload: dict[str, Any]
    attachments: list[memoryview]


class Response(NamedTuple):
    correlation_id: int
    payload: dict[str, Any]
    attachments: list[memoryview]


class FrameLimits(NamedTuple):
    """Hard limits checked before allocation. Units are bytes or counts."""

    frame_bytes_max: int = 100 * 1024 * 1024   # whole frame (Kafka's socket.request.max.bytes)
    body_bytes_max: int = 16 * 1024 * 1024     # msgpack part of a frame
    attachments_max: int = 10_000              # attachments per frame
    string_bytes_max: int = 64 * 1024          # any msgpack string
    array_items_max: int = 100_000             # any msgpack array
    map_items_max: int = 10_000                # any msgpack map


def _pack(obj: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(obj, use_bin_type=True)
        return packed
    except (TypeError, ValueError, OverflowError) as exc:
        raise FrameError(f"cannot encode message: {exc}") from exc


def _frame(body: bytes, attachments: Sequence[Any]) -> list[Any]:
    sizes_total = sum(len(a) for a in attachments)
    prefix = _PREFIX.pack(4 + len(body) + sizes_total, len(body))
    return [prefix, body, *attachments]


def encode_request(
    api_key: int,
    api_version: int,
    correlation_id: int,
    client_id: str,
    payload: dict[str, Any],
    attachments: Sequence[Any] = (),
) -> list[Any]:
    """Encode a request; returns the pieces to send in order (no joining copy)."""
    sizes = [len(a) for a in attachments]
    body = _pack([api_key, api_version, correlation_id, client_id, payload, sizes])
    return _frame(body, attachments)


def encode_response(correlation_id: int, payload: dict[str, Any],
                    attachments: Sequence[Any] = ()) -> list[Any]:
    """Encode a response; returns the pieces to send in order (no joining copy)."""
    sizes = [len(a) for a in attachments]
    body = _pack([correlation_id, payload, sizes])
    return _frame(body, attachments)


class FrameDecoder:
    """Sans-IO decoder of frames from one peer.

    Args:
        role: "server" decodes requests, "client" decodes responses.
        limits: the hard limits; defaults are generous but finite.

    Not thread-safe; one per connection.
    """

    def __init__(self, role: str, limits: FrameLimits = FrameLimits()) -> None:
        if role not in ("server", "client"):
            raise ValueError("role must be 'server' or 'client'")
        self._role = role
        self._limits = limits
        self._buf = bytearray()
        self._pos = 0
        self._error: FrameError | None = None
        # A large frame still arriving is kept as a list of chunks and joined
        # once when complete (one copy), instead of growing `_buf` chunk by
        # chunk (a realloc copy per chunk) and slicing the frame out (another).
        self._chunks: list[Any] | None = None
        self._chunks_bytes = 0     # bytes in _chunks
        self._chunks_need = 0      # bytes of the frame (prefix included) still missing from _buf
        self._rest: bytearray | None = None   # bytes after a joined frame, until it is taken

    @property
    def buffered_bytes(self) -> int:
        rest = self._rest
        return (len(self._buf) - self._pos + self._chunks_bytes
                + (len(rest) if rest is not None else 0))

    def feed(self, data: Any) -> None:
        """Add received bytes. An empty `data` is allowed and does nothing.

        `bytes` are kept by reference while a large frame gathers (no copy);
        any other buffer type is copied, so the caller may reuse it.
        """
        if self._chunks is not None:
            if type(data) is not bytes:
                data = bytes(data)
            self._chunks.append(data)
            self._chunks_bytes += len(data)
            if self._chunks_bytes >= self._chunks_need:
                self._join_chunks()
            return
        if self._rest is not None:  # a joined frame not yet taken: keep _buf exactly that frame
            self._rest += data
            return
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def _join_chunks(self) -> None:
        """The large frame is complete: make `_buf` exactly that frame, keep the rest aside."""
        chunks, extra = self._chunks, self._chunks_bytes - self._chunks_need
        assert chunks is not None
        rest = bytearray()
        if extra:
            last = chunks[-1]
            rest = bytearray(memoryview(last)[len(last) - extra:])
            chunks[-1] = memoryview(last)[: len(last) - extra]
        self._buf = bytearray().join([memoryview(self._buf)[self._pos:], *chunks])
        self._pos = 0
        self._rest = rest
        self._chunks, self._chunks_bytes, self._chunks_need = None, 0, 0

    def next_frame(self) -> Any:
        """Return the next complete `Request`/`Response`, or NEED_DATA.

        Raises:
            FrameError: the bytes are not a valid frame; sticky.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_frame()
        except FrameError as exc:
            self._error = exc
            raise

    def _next_frame(self) -> Any:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < FRAME_PREFIX_SIZE:
            return NEED_DATA
        frame_length, body_length = _PREFIX.unpack_from(buf, pos)
        if frame_length > self._limits.frame_bytes_max:
            raise LimitExceededError(
                f"frame of {frame_length} bytes exceeds the limit of {self._limits.frame_bytes_max}"
            )
        if body_length + 4 > frame_length:
            raise FrameError(f"body length {body_length} exceeds frame length {frame_length}")
        if body_length > self._limits.body_bytes_max:
            raise LimitExceededError(f"message body of {body_length} bytes exceeds the limit")
        end = pos + 4 + frame_length
        if len(buf) < end:
            if self._chunks is None and frame_length >= _CHUNKED_FRAME_BYTES:
                self._chunks, self._chunks_bytes = [], 0
                self._chunks_need = end - len(buf)
            return NEED_DATA
        if pos == 0 and end == len(buf):
            # The buffer is exactly this frame (always so after _join_chunks):
            # take it over instead of copying it; the next bytes go to a new one.
            frame, start = buf, FRAME_PREFIX_SIZE
            rest = self._rest
            self._buf = rest if rest is not None else bytearray()
            self._rest = None
        else:
            # A bytearray slice: one copy, and the attachments are writable
            # views, so the broker can stamp offsets into a batch in place.
            frame, start = buf[pos + FRAME_PREFIX_SIZE : end], 0
            self._pos = end
            if self._pos == len(buf):
                buf.clear()
                self._pos = 0
        body = self._unpack(memoryview(frame)[start : start + body_length])
        attachments = self._split(frame, start + body_length, body)
        if self._role == "server":
            return self._request(body, attachments)
        return self._response(body, attachments)

    def _unpack(self, body: memoryview) -> Any:
        lim = self._limits
        try:
            return msgpack.unpackb(
                body,
                raw=False,
                strict_map_key=True,
                max_str_len=lim.string_bytes_max,
                max_bin_len=lim.string_bytes_max,
                max_array_len=lim.array_items_max,
                max_map_len=lim.map_items_max,
                max_ext_len=0,
            )
        except Exception as exc:  # msgpack raises many types (ExtraData, ValueError, ...)
            raise FrameError(f"malformed message body: {exc.__class__.__name__}: {exc}") from None

    def _split(self, frame: bytearray, body_length: int, body: Any) -> list[memoryview]:
        if not isinstance(body, list) or not body:
            raise FrameError("message body is not a non-empty array")
        sizes = body[-1]
        if not isinstance(sizes, list) or len(sizes) > self._limits.attachments_max:
            raise FrameError("attachment sizes missing or too many")
        view = memoryview(frame)
        position = body_length
        attachments = []
        for size in sizes:
            if type(size) is not int or size < 0 or position + size > len(frame):
                raise FrameError("attachment size is invalid or overruns the frame")
            attachments.append(view[position : position + size])
            position += size
        if position != len(frame):
            raise FrameError(f"{len(frame) - position} unexplained bytes after the attachments")
        return attachments

    @staticmethod
    def _request(body: list[Any], attachments: list[memoryview]) -> Request:
        if len(body) != 6:
            raise FrameError("request body must have 6 fields")
        api_key, api_version, correlation_id, client_id, payload, _ = body
        if not (type(api_key) is int and type(api_version) is int and type(correlation_id) is int):
            raise FrameError("api key, version and correlation id must be integers")
        if not isinstance(client_id, str) or not isinstance(payload, dict):
            raise FrameError("client id must be a string and payload a map")
        return Request(api_key, api_version, correlation_id, client_id, payload, attachments)

    @staticmethod
    def _response(body: list[Any], attachments: list[memoryview]) -> Response:
        if len(body) != 3:
            raise FrameError("response body must have 3 fields")
        correlation_id, payload, _ = body
        if type(correlation_id) is not int or not isinstance(payload, dict):
            raise FrameError("correlation id must be an integer and payload a map")
        return Response(correlation_id, payload, attachments)
