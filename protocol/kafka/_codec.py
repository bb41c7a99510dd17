"""Kafka frames and headers, sans-IO: bytes in, `KafkaRequest`s out; responses to bytes.

Byte layout of one frame (Kafka's "size-delimited" framing)::

    int32  size              bytes after this field
    ...    request header    v0: int16 api_key, int16 api_version, int32 correlation_id
                             v1: v0 + nullable string client_id
                             v2: v1 + tagged fields (flexible request versions)
    ...    request body      per API and version (`_messages.py`)

    int32  size
    ...    response header   v0: int32 correlation_id;  v1: v0 + tagged fields
    ...    response body

A request uses header v2 when its API version is flexible, else v1. A
response uses header v1 when flexible, else v0, except ApiVersions, whose
response header is always v0 (a client cannot know the broker's flexible
versions before it has the answer; Kafka's KIP-511).

Theory of operation: `KafkaFrameDecoder.feed(data)` buffers received bytes;
`next_frame()` returns one frame's bytes (header and body) or NEED_DATA. The
size prefix is checked against `frame_bytes_max` *before* any byte of the
frame is buffered for it; a negative or too-small size is an error.
`decode_request(frame)` parses the header and body. `encode_response`
returns the pieces of a response frame (record bytes by reference).
`encode_request` and `decode_response` are the client side, used by tests
and tools.

Error handling: `next_frame` and `decode_request` raise only
`KafkaProtocolError`; `decode_request` raises its subclass
`UnsupportedVersionError` when the header is readable but the API or version
is not supported (the caller answers ApiVersions with
`encode_api_versions_unsupported` and closes the connection for anything
else, as Kafka does). The decoder's errors are sticky.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

from .._codec import NEED_DATA     # the one sentinel every codec of the package returns
from ._messages import API_BY_KEY, APIS, Api, ApiKey
from ._schema import Plan, compile_plan, decode, encode
from ._types import Buffer, KafkaProtocolError, Reader, UnsupportedVersionError, Writer

__all__ = [
    "NEED_DATA",
    "KafkaRequest",
    "KafkaResponse",
    "KafkaFrameDecoder",
    "FRAME_BYTES_MAX_DEFAULT",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "encode_api_versions_unsupported",
    "supported_api_versions",
    "request_header_version",
    "response_header_version",
]

FRAME_BYTES_MAX_DEFAULT = 100 * 1024 * 1024   # Kafka's socket.request.max.bytes
_REQUEST_HEADER_BYTES_MIN = 8                 # api key, version, correlation id
_SIZE = struct.Struct(">i")
_UNSUPPORTED_VERSION = 35




class KafkaRequest(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: dict[str, Any]


class KafkaResponse(NamedTuple):
    correlation_id: int
    body: dict[str, Any]


def _compile(side: str) -> dict[tuple[int, int], Plan]:
    plans = {}
    for api in APIS:
        for version in range(api.version_min, api.version_max + 1):
            fields = api.request if side == "request" else api.response
            plans[api.key, version] = compile_plan(fields, version, api.is_flexible(version))
    return plans


_REQUEST_PLANS = _compile("request")
_RESPONSE_PLANS = _compile("response")


def supported_api_versions() -> list[dict[str, int]]:
    """The ApiVersions table: every implemented API with its version range."""
    return [
        {"api_key": api.key, "min_version": api.version_min, "max_version": api.version_max}
        for api in sorted(APIS, key=lambda a: a.key)
    ]


def request_header_version(api_key: int, api_version: int) -> int:
    api = API_BY_KEY.get(api_key)
    if api_key == ApiKey.API_VERSIONS:
        return 2 if api_version >= 3 else 1   # also for versions above ours (KIP-511)
    if api is not None and api.is_flexible(api_version):
        return 2
    return 1


def response_header_version(api_key: int, api_version: int) -> int:
    if api_key == ApiKey.API_VERSIONS:
        return 0
    api = API_BY_KEY.get(api_key)
    return 1 if api is not None and api.is_flexible(api_version) else 0


class KafkaFrameDecoder:
    """Sans-IO splitter of size-delimited frames from one peer.

    Args:
        frame_bytes_max: the largest frame accepted; checked before buffering it.
        frame_bytes_min: the smallest (8, a request header; 4 for a client reading responses).

    Not thread-safe; one per connection.
    """

    def __init__(
        self, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT, frame_bytes_min: int = _REQUEST_HEADER_BYTES_MIN
    ) -> None:
        self._frame_bytes_max = frame_bytes_max
        self._frame_bytes_min = frame_bytes_min
        self._buf = bytearray()
        self._error: KafkaProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: Buffer) -> None:
        """Add received bytes (copied)."""
        self._buf += data

    def next_frame(self) -> bytearray | Any:
        """The next complete frame's bytes (after the size), or NEED_DATA.

        Raises:
            KafkaProtocolError: the size is negative, too small or above the limit; sticky.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        if len(buf) < 4:
            return NEED_DATA
        size: int = _SIZE.unpack_from(buf, 0)[0]
        if size < self._frame_bytes_min or size > self._frame_bytes_max:
            self._error = KafkaProtocolError(
                f"frame size {size} is outside {self._frame_bytes_min}..{self._frame_bytes_max} bytes"
            )
            raise self._error
        if len(buf) < 4 + size:
            return NEED_DATA
        if len(buf) == 4 + size:
            self._buf = bytearray()
            del buf[:4]         # front deletion of a bytearray does not copy the rest
            return buf
        frame = buf[4 : 4 + size]
        del buf[: 4 + size]
        return frame


def decode_request(frame: Buffer) -> KafkaRequest:
    """Parse one request frame (header and body, without the size prefix).

    Raises:
        UnsupportedVersionError: the header is valid but the API or version is not supported.
        KafkaProtocolError: malformed header or body, or bytes left over after the body.
    """
    r = Reader(frame)
    api_key, api_version, correlation_id = r.int16(), r.int16(), r.int32()
    header_version = request_header_version(api_key, api_version)
    client_id = r.string(nullable=True)
    if header_version >= 2:
        r.skip_tagged_fields()
    plan = _REQUEST_PLANS.get((api_key, api_version))
    if plan is None:
        raise UnsupportedVersionError(api_key, api_version, correlation_id, client_id)
    body = decode(plan, r)
    if r.remaining():
        raise KafkaProtocolError(
            f"{r.remaining()} bytes left after {API_BY_KEY[api_key].name} v{api_version} request"
        )
    return KafkaRequest(api_key, api_version, correlation_id, client_id, body)


def encode_request(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None, body: Mapping[str, Any]
) -> bytes:
    """One request frame, size prefix included (for clients and tests)."""
    plan = _REQUEST_PLANS.get((api_key, api_version))
    if plan is None:
        raise UnsupportedVersionError(api_key, api_version, correlation_id, client_id)
    w = Writer()
    w.int32(0)   # size, patched below
    w.int16(api_key)
    w.int16(api_version)
    w.int32(correlation_id)
    w.string(client_id, nullable=True)
    if request_header_version(api_key, api_version) >= 2:
        w.empty_tagged_fields()
    encode(plan, body, w)
    data = bytearray(w.getvalue())
    _SIZE.pack_into(data, 0, len(data) - 4)
    return bytes(data)


def encode_response(
    api_key: int, api_version: int, correlation_id: int, body: Mapping[str, Any]
) -> list[Buffer]:
    """One response frame as pieces to send in order; record bytes are passed by reference.

    Raises:
        KafkaEncodeError: a value in `body` does not fit its field.
    """
    plan = _RESPONSE_PLANS[api_key, api_version]
    w = Writer()
    w.int32(correlation_id)
    if response_header_version(api_key, api_version) >= 1:
        w.empty_tagged_fields()
    encode(plan, body, w)
    return [_SIZE.pack(len(w)), *w.parts()]


def decode_response(api_key: int, api_version: int, frame: Buffer) -> KafkaResponse:
    """Parse one response frame (without the size prefix), for clients and tests."""
    plan = _RESPONSE_PLANS.get((api_key, api_version))
    if plan is None:
        raise UnsupportedVersionError(api_key, api_version, -1, None)
    r = Reader(frame)
    correlation_id = r.int32()
    if response_header_version(api_key, api_version) >= 1:
        r.skip_tagged_fields()
    body = decode(plan, r)
    if r.remaining():
        raise KafkaProtocolError(f"{r.remaining()} bytes left after the response body")
    return KafkaResponse(correlation_id, body)


def encode_api_versions_unsupported(correlation_id: int) -> list[Buffer]:
    """The answer to an ApiVersions request above our versions: v0 format, UNSUPPORTED_VERSION,
    with the full table so the client can pick a version it shares with us (Kafka does the same)."""
    return encode_response(
        ApiKey.API_VERSIONS, 0, correlation_id,
        {"error_code": _UNSUPPORTED_VERSION, "api_keys": supported_api_versions()},
    )


def api(api_key: int) -> Api | None:
    return API_BY_KEY.get(api_key)
