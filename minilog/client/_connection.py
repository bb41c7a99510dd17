"""One TCP connection to one broker: pipelined requests matched by correlation id.

Theory of operation. `BrokerConnection.open()` connects, starts a reader
task in the caller's nursery and runs the ApiVersions handshake. Then any
number of tasks may call `request()` concurrently: each is given the next
correlation id, its frame is written under a send lock (whole frames never
interleave), and it waits on a slot in `_pending`. The reader decodes
responses with the sans-IO `FrameDecoder("client")`; since a broker answers
one connection's requests in order (Kafka's rule), a response must carry the
correlation id of the oldest pending request, and anything else is a protocol
error that breaks the connection. Produce with acks=0 gets no response, so
such requests never enter `_pending`.

Errors are sticky, as in h11: once the connection breaks (EOF, socket error,
malformed frame, a request timing out: after a timeout later responses can
no longer be trusted to match), every pending and later request fails with
the same typed error and the owner opens a new connection.

Error handling: `request()` raises only `BrokerUnavailableError` (connect
failure, connection lost), `RequestTimeoutError` (no response within
`request_timeout_ms`), `UnsupportedVersionError` (handshake) or
`ClosedError`. Error codes inside a response are the caller's business.

Connecting: `connect(host, port)` returns a `trio.abc.Stream`. The default,
`open_tcp`, opens a TCP socket within `connect_timeout_s` (the client option
`socket_connection_setup_timeout_ms`, as Kafka's
`socket.connection.setup.timeout.ms`) and says "connection refused" when
nothing listens. Tests inject a function that returns one end of
`trio.testing.memory_stream_pair()`: the same code then runs on trio's
virtual clock with no socket at all.

Resource handling: the reader task lives in the nursery given to `open()`
and ends when the connection closes; `aclose()` is idempotent.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import trio

from minilog._version import __version__
from minilog.errors import (
    BrokerUnavailableError,
    ClosedError,
    MinilogError,
    RequestTimeoutError,
    UnsupportedVersionError,
)
from minilog.protocol import (
    NEED_DATA,
    ApiKey,
    FrameDecoder,
    FrameError,
    encode_request,
)

__all__ = ["BrokerConnection", "REQUIRED_APIS", "Connect", "open_tcp", "CONNECT_TIMEOUT_MS"]

log = logging.getLogger("minilog.client")

# The version of each API this client sends. The handshake checks the broker
# supports it; APIs missing here are only checked when first used.
CLIENT_VERSIONS: dict[int, int] = {int(k): 0 for k in ApiKey}
REQUIRED_APIS = (ApiKey.API_VERSIONS, ApiKey.METADATA)
_RECV_BYTES = 1 << 20
_WRITE_NOWAIT_BYTES_MAX = 256 * 1024
CONNECT_TIMEOUT_MS = 5000   # default socket_connection_setup_timeout_ms

Connect = Callable[[str, int, float], Awaitable[trio.abc.Stream]]
"""`connect(host, port, timeout_s)`: a connected stream, or BrokerUnavailableError."""


async def open_tcp(host: str, port: int, timeout_s: float) -> trio.abc.Stream:
    """The default `Connect`: a TCP stream with TCP_NODELAY, within `timeout_s`.

    Raises:
        BrokerUnavailableError: refused ("connection refused"), unreachable,
            unresolvable, or no answer within `timeout_s`.
    """
    where = f"{host}:{port}"
    try:
        with trio.fail_after(timeout_s):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise BrokerUnavailableError(
            f"could not connect to broker {where}: no answer within {timeout_s * 1000:g} ms "
            f"(socket_connection_setup_timeout_ms)") from None
    except OSError as exc:
        if _refused(exc):
            raise BrokerUnavailableError(
                f"could not connect to broker {where}: connection refused") from None
        raise BrokerUnavailableError(f"could not connect to broker {where}: {exc}") from None
    try:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # pragma: no cover - not a TCP socket
        pass
    return stream


def _refused(exc: BaseException | None) -> bool:
    """Whether every attempt behind `exc` (trio groups them in __cause__) was refused."""
    if exc is None:
        return False
    if isinstance(exc, BaseExceptionGroup):
        return all(_refused(e) for e in exc.exceptions)
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return True
    return _refused(exc.__cause__)


def _close_now(stream: trio.abc.Stream) -> None:
    """Close `stream` without a checkpoint (from sync code), waking a blocked reader."""
    sock = getattr(stream, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:  # pragma: no cover
            pass
        return
    for half in (getattr(stream, "send_stream", None), getattr(stream, "receive_stream", None)):
        close = getattr(half, "close", None)   # trio.testing's memory streams
        if close is not None:
            close()


class _Slot:
    """One request waiting for its response."""

    __slots__ = ("event", "response", "error", "corr", "api_key", "deadline", "timeout_s")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.response = None
        self.error: BaseException | None = None
        self.corr = -1
        self.api_key = -1
        self.deadline = 0.0
        self.timeout_s = 0.0


class BrokerConnection:
    """A pipelined connection to one broker. Task-safe within one trio run."""

    def __init__(self, host: str, port: int, *, client_id: str = "minilog",
                 request_timeout_ms: int = 30000, node_id: int = -1,
                 connect: Connect = open_tcp,
                 connect_timeout_ms: int = CONNECT_TIMEOUT_MS) -> None:
        self.host = host
        self.port = port
        self.node_id = node_id
        self.client_id = client_id
        self.request_timeout_s = request_timeout_ms / 1000
        self.connect_timeout_s = connect_timeout_ms / 1000
        self._connect = connect
        self.api_versions: dict[int, tuple[int, int]] = {}
        self.broker_id: int = -1
        self._stream: trio.abc.Stream | None = None
        self._decoder = FrameDecoder("client")
        self._send_lock = trio.Lock()
        self._pending: collections.OrderedDict[int, _Slot] = collections.OrderedDict()
        self._next_id = 0
        self._error: MinilogError | None = None
        self._closed = False
        self._fd = -1
        self._partial: memoryview | None = None   # rest of a partly written frame

    def __repr__(self) -> str:
        return f"<BrokerConnection node={self.node_id} {self.host}:{self.port}>"

    @property
    def usable(self) -> bool:
        return self._error is None and not self._closed and self._stream is not None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def open(self, nursery: trio.Nursery) -> None:
        """Connect, start the reader in `nursery`, and check API versions.

        Raises:
            BrokerUnavailableError: cannot connect (refused, or no answer within
                the connect timeout).
            RequestTimeoutError: no ApiVersions answer within request_timeout_ms.
            UnsupportedVersionError: the broker lacks an API this client needs.
        """
        self._stream = await self._connect(self.host, self.port, self.connect_timeout_s)
        sock = getattr(self._stream, "socket", None)
        self._fd = sock.fileno() if sock is not None else -1   # -1: no direct-write path
        nursery.start_soon(self._reader)
        try:
            await self._handshake()
        except BaseException:
            await self.aclose()
            raise

    async def _handshake(self) -> None:
        resp = await self.request(ApiKey.API_VERSIONS, {
            "client_software_name": "minilog-python",
            "client_software_version": __version__,
        })
        payload = resp.payload
        if payload.get("error_code", 0):
            raise UnsupportedVersionError(
                f"broker {self.host}:{self.port} rejected ApiVersions "
                f"(error {payload['error_code']}: {payload.get('error_message')})")
        self.api_versions = {int(k): (lo, hi) for k, lo, hi in payload.get("api_versions", [])}
        self.broker_id = payload.get("broker_id", -1)
        for api in REQUIRED_APIS:
            self.check_version(api)

    def check_version(self, api: int) -> int:
        """Return the version to use for `api`, or raise UnsupportedVersionError."""
        want = CLIENT_VERSIONS[int(api)]
        have = self.api_versions.get(int(api))
        if have is None or not have[0] <= want <= have[1]:
            name = ApiKey(api).name
            supported = "not at all" if have is None else f"versions {have[0]}..{have[1]}"
            raise UnsupportedVersionError(
                f"broker {self.host}:{self.port} does not support {name} v{want} "
                f"(it supports {supported}); upgrade the broker or use an older client")
        return want

    async def request(self, api_key: int, payload: dict, attachments=(), *,
                      expect_response: bool = True, timeout_s: float | None = None):
        """Send one request and (unless `expect_response` is False) await its Response.

        Task-safe: many tasks may have requests in flight at once.
        """
        slot = await self.send_request(api_key, payload, attachments,
                                       expect_response=expect_response, timeout_s=timeout_s)
        if slot is None:
            return None
        return await self.wait_response(slot)

    async def send_request(self, api_key: int, payload: dict, attachments=(), *,
                           expect_response: bool = True, timeout_s: float | None = None):
        """Write one request; return a handle for `wait_response` (None without response).

        Requests are written in the order `send_request` calls begin (the
        send lock is FIFO), so a caller that awaits each send before starting
        the next controls the order the broker sees.
        """
        if self._closed:
            raise ClosedError(f"connection to {self.host}:{self.port} is closed")
        if self._error is not None:
            raise self._error
        if api_key != ApiKey.API_VERSIONS and self.api_versions:
            version = self.check_version(api_key)
        else:
            version = 0
        corr = self._next_id
        self._next_id = (corr + 1) & 0x7FFFFFFF
        try:
            pieces = encode_request(api_key, version, corr, self.client_id, payload, attachments)
        except FrameError as exc:
            raise MinilogError(f"cannot encode {ApiKey(api_key).name} request: {exc}") from None
        slot = None
        if expect_response:
            slot = _Slot()
            self._pending[corr] = slot
        timeout_s = self.request_timeout_s if timeout_s is None else timeout_s
        deadline = trio.current_time() + timeout_s
        sent = False
        try:
            if not self._send_lock.locked() and self._write_nowait(pieces):
                sent = True      # the whole frame went out without yielding
            else:
                with trio.move_on_at(deadline):
                    async with self._send_lock:
                        if self._error is not None:
                            raise self._error
                        await self._send(pieces)
                        sent = True
            if not sent:
                raise self._fail(RequestTimeoutError(
                    f"could not send {ApiKey(api_key).name} to {self.host}:{self.port} "
                    f"within {timeout_s * 1000:g} ms"))
        except BaseException:
            if slot is not None:
                self._pending.pop(corr, None)
            raise
        if slot is not None:
            slot.corr, slot.api_key, slot.deadline, slot.timeout_s = corr, api_key, deadline, timeout_s
        return slot

    async def wait_response(self, slot: _Slot):
        """Await the response to a request written by `send_request`.

        Raises RequestTimeoutError at the request's deadline (and poisons
        the connection), or the connection's error if it broke.
        """
        try:
            with trio.move_on_at(slot.deadline):
                await slot.event.wait()
            if not slot.event.is_set():
                self._fail(RequestTimeoutError(
                    f"{ApiKey(slot.api_key).name} request to broker {self.host}:{self.port} "
                    f"got no response within {slot.timeout_s * 1000:g} ms"))
        finally:
            self._pending.pop(slot.corr, None)
        if slot.error is not None:
            raise slot.error
        return slot.response

    def _write_nowait(self, pieces) -> bool:
        """Write a whole small frame at once, without a trio checkpoint.

        Returns False (nothing written) when the frame is large or the socket
        buffer is full; the caller then takes the send lock and awaits.
        Saves the scheduler rounds of trio's send path on the latency-critical
        case: a small request on an idle connection.
        """
        if self._error is not None or self._fd < 0:
            return False
        size = sum(map(len, pieces))
        if size > _WRITE_NOWAIT_BYTES_MAX:
            return False
        data = b"".join(pieces)
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise self._fail(self._send_error(exc)) from None
        if n == size:
            return True
        # Partial write: the rest must follow before anything else. Holding
        # the send lock now (acquired without yielding) keeps others out.
        self._partial = memoryview(data)[n:]
        return False

    async def _send(self, pieces) -> None:
        stream = self._stream
        assert stream is not None
        try:
            if self._partial is not None:
                rest, self._partial = self._partial, None
                await stream.send_all(rest)
                return
            if len(pieces) > 2 and sum(map(len, pieces)) <= 65536:
                await stream.send_all(b"".join(pieces))
            else:
                for piece in pieces:
                    await stream.send_all(piece)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self._fail(self._send_error(exc)) from None

    def _send_error(self, exc: BaseException) -> BrokerUnavailableError:
        """The error for a failed send. A peer that closed (EPIPE, ECONNRESET, trio's
        BrokenResourceError) is reported as the reader reports its EOF, "closed the
        connection": which of the two sees the close first is a race, not a difference."""
        where = f"{self.host}:{self.port}"
        cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
        if isinstance(exc, trio.BrokenResourceError) or isinstance(
                cause, (BrokenPipeError, ConnectionResetError)):
            detail = f": {exc}" if str(exc) else ""
            return BrokerUnavailableError(
                f"broker {where} closed the connection while a request was being sent{detail}")
        return BrokerUnavailableError(f"connection to broker {where} lost while sending: {exc}")

    async def _reader(self) -> None:
        decoder = self._decoder
        where = f"{self.host}:{self.port}"
        stream = self._stream
        assert stream is not None
        try:
            while self._error is None:
                try:
                    data = await stream.receive_some(_RECV_BYTES)
                except (trio.BrokenResourceError, OSError) as exc:
                    self._fail(BrokerUnavailableError(f"connection to broker {where} lost: {exc}"))
                    return
                except trio.ClosedResourceError:
                    self._fail(ClosedError(f"connection to {where} closed"))
                    return
                if not data:
                    self._fail(BrokerUnavailableError(
                        f"broker {where} closed the connection"
                        + (f" with {len(self._pending)} request(s) in flight"
                           if self._pending else "")))
                    return
                decoder.feed(data)
                while True:
                    try:
                        frame = decoder.next_frame()
                    except FrameError as exc:
                        self._fail(BrokerUnavailableError(f"malformed response from {where}: {exc}"))
                        return
                    if frame is NEED_DATA:
                        break
                    self._deliver(frame)
        finally:
            if self._error is None:
                self._fail(ClosedError(f"connection to {where} closed"))

    def _deliver(self, frame) -> None:
        slot = self._pending.get(frame.correlation_id)
        if slot is None:
            # The request timed out (and we failed the connection) or the id
            # is bogus: either way nothing more on this stream can be trusted.
            self._fail(BrokerUnavailableError(
                f"unexpected correlation id {frame.correlation_id} from {self.host}:{self.port}"))
            return
        first = next(iter(self._pending))
        if first != frame.correlation_id:
            self._fail(BrokerUnavailableError(
                f"response {frame.correlation_id} out of order (expected {first}) "
                f"from {self.host}:{self.port}"))
            return
        del self._pending[frame.correlation_id]
        slot.response = frame
        slot.event.set()

    def _fail(self, error: MinilogError) -> MinilogError:
        """Poison the connection: fail everything pending, close the socket; return the sticky error."""
        if self._error is None:
            self._error = error
            log.debug("%r failed: %s", self, error)
        sticky = self._error
        for slot in self._pending.values():
            if not slot.event.is_set():
                slot.error = self._error
                slot.event.set()
        self._pending.clear()
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self._fd = -1
            _close_now(stream)
        return sticky

    async def aclose(self) -> None:
        """Close the connection; pending requests fail with ClosedError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._fail(ClosedError(f"connection to {self.host}:{self.port} closed"))
        await trio.lowlevel.checkpoint()

