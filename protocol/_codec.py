"""What a server-side codec is: bytes in, request objects out, and back.

Rules:
- A codec is sans-IO, like h11: the broker's connection task feeds it the
  bytes it receives (`feed`), takes requests out (`next_request`) and asks
  it for the bytes of each response (`encode_response`). It never touches
  a socket, a clock or trio.
- `next_request` returns `NEED_DATA`, or `(RequestHeader, body)` where body
  is a request object of the request model (`_messages.py`) or a
  `BadRequest` (well framed, but not a valid request: the broker answers
  with an error and the connection stays usable).
- It raises only `FrameError` (bytes that cannot be framed: the connection
  is closed); errors are sticky. Anything else escaping is a bug.
- `encode_response` returns the pieces to send in order; large record
  bytes are passed through as they are (no joining copy).

Two codecs implement this: `native.NativeServerCodec` (minilog's msgpack
frames) and, in `kafka/`, Kafka's binary protocol.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._messages import RequestHeader

__all__ = ["NEED_DATA", "ServerCodec", "DecodedRequest"]


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Any = _NeedData()

DecodedRequest = tuple[RequestHeader, Any]     # (header, request object | BadRequest)


class ServerCodec(Protocol):
    """The server side of one wire protocol, for one connection. Not thread-safe."""

    name: str                                  # "native", "kafka": for logs and listener names

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet returned as requests."""
        ...

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes (b"" is allowed and does nothing)."""
        ...

    def next_request(self) -> DecodedRequest | Any:
        """The next request, or NEED_DATA. Raises FrameError (sticky)."""
        ...

    def encode_response(self, header: RequestHeader, response: Any) -> list[Any]:
        """The pieces of the response to `header`'s request, in order."""
        ...

    def api_versions(self) -> list[list[int]]:
        """[api_key, min_version, max_version] for every API this codec speaks."""
        ...
