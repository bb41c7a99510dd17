"""The TCP listener and the per-connection task.

Rules (each a bound, from Kafka's settings):
- `max.connections`: a connection beyond it is closed as soon as it is accepted.
- `connections.max.idle.ms`: a connection that sends nothing this long is closed.
- `queued.max.requests` / `queued.max.request.bytes`: requests (and their
  bytes) read ahead per connection; when either is reached the reader stops
  reading (TCP back-pressure does the rest). One request always fits.
- `socket.request.max.bytes`: the frame limit of the decoder; a larger
  length prefix closes the connection before anything is allocated.
- `request.timeout.ms`: bounds handling one request and sending one batch
  of responses. A client that stops reading its responses is dropped when a
  send does not finish in time; it never blocks anyone else (every
  connection has its own task).

Theory of operation: one task pair per connection, in the connection's own
nursery. The *reader* pumps bytes through `FrameDecoder("server")` and puts
each request into a bounded memory channel. The *processor* takes requests
in order, dispatches them (`dispatch`), and queues the encoded responses;
it sends when no further request is already waiting (so pipelined small
responses are joined into one send) or when the output grows large. Answers
therefore go out in request order. A `FrameError` from the decoder closes
only this connection.

Error handling: any exception from a handler becomes UNKNOWN_SERVER_ERROR
for that request (logged with its traceback); network errors close the
connection quietly (DEBUG).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from minilog.protocol import FrameDecoder, FrameError, FrameLimits, encode_response

from .handlers import dispatch

if TYPE_CHECKING:
    from .app import Broker

__all__ = ["serve_connection", "ConnectionInfo"]

log = logging.getLogger("minilog.broker.server")

_RECEIVE_BYTES = 256 * 1024
_JOIN_BYTES_MAX = 64 * 1024            # pieces smaller than this are joined into one send
_OUTPUT_FLUSH_BYTES = 1024 * 1024      # send at least this often while pipelining
_REQUESTS_PER_YIELD = 16               # pipelined requests handled before letting others run


@dataclass
class ConnectionInfo:
    """What a handler may know about the connection a request came from."""

    connection_id: int
    client_host: str
    client_port: int
    local_host: str = ""          # the address the client connected to (advertised in METADATA)
    requests: int = 0
    reader_scope: trio.CancelScope | None = None   # cancelled on shutdown: stop reading, finish queue


class _QueueBytes:
    """Bytes of requests read but not yet handled on one connection."""

    __slots__ = ("bytes", "space")

    def __init__(self) -> None:
        self.bytes = 0
        self.space = trio.Event()


def _request_bytes(request) -> int:
    """What a queued request holds in memory: its attachments plus a body allowance."""
    return sum(len(a) for a in request.attachments) + 1024


def _pieces_for_send(pieces: list) -> list:
    """Join runs of small pieces; keep large attachments as separate sends (no copy)."""
    out: list = []
    run: list = []
    run_bytes = 0
    for piece in pieces:
        if len(piece) >= _JOIN_BYTES_MAX:
            if run:
                out.append(b"".join(run))
                run, run_bytes = [], 0
            out.append(piece)
        else:
            run.append(piece)
            run_bytes += len(piece)
            if run_bytes >= _JOIN_BYTES_MAX:
                out.append(b"".join(run))
                run, run_bytes = [], 0
    if run:
        out.append(b"".join(run))
    return out


async def serve_connection(broker: Broker, stream: trio.SocketStream, info: ConnectionInfo) -> None:
    """Serve one client until it disconnects, misbehaves or the broker stops."""
    config = broker.config
    limits = FrameLimits(frame_bytes_max=config.socket_request_max_bytes)
    decoder = FrameDecoder("server", limits)
    if info.reader_scope is None:
        info.reader_scope = trio.CancelScope()
    send_channel, receive_channel = trio.open_memory_channel(config.queued_max_requests)
    queued_bytes_max = config.queued_max_request_bytes
    queue = _QueueBytes()
    idle_s = config.connections_max_idle_ms / 1000
    timeout_s = config.request_timeout_ms / 1000

    async def reader() -> None:
        async with send_channel:
            with info.reader_scope:
                await read_loop()

    async def read_loop() -> None:
        # One cancel scope whose deadline moves on every receive (cheaper than a
        # new scope per receive_some).
        with trio.CancelScope(deadline=trio.current_time() + idle_s) as idle:
            await read_frames(idle)
        if idle.cancelled_caught:
            log.debug("connection %d idle for %.0f s: closing", info.connection_id, idle_s)

    async def read_frames(idle: trio.CancelScope) -> None:
        while True:
            data = await stream.receive_some(_RECEIVE_BYTES)
            if not data:
                return
            idle.deadline = trio.current_time() + idle_s
            decoder.feed(data)
            while True:
                try:
                    frame = decoder.next_frame()
                except FrameError as exc:
                    log.info("connection %d from %s: malformed frame, closing: %s",
                             info.connection_id, info.client_host, exc)
                    return
                if not isinstance(frame, tuple):
                    break
                try:
                    send_channel.send_nowait(frame)      # no scheduling hop per frame
                except trio.WouldBlock:
                    await send_channel.send(frame)       # queued.max.requests reached
                queue.bytes += _request_bytes(frame)
                while queue.bytes >= queued_bytes_max:   # queued.max.request.bytes reached
                    queue.space = trio.Event()
                    await queue.space.wait()

    # request_timeout_ms bounds each response's send. One cancel scope around
    # the processor whose deadline is moved in for a send and back out after:
    # cheaper than a `trio.fail_after` (a new scope in a context manager) per
    # response. The deadline passing mid-send cancels the processor, which
    # ends the connection as TooSlowError did.
    send_guard = trio.CancelScope()

    async def processor() -> None:
        with send_guard:
            await process_requests()
        if send_guard.cancelled_caught:
            raise trio.TooSlowError(f"response not sent within {timeout_s} s")

    async def process_requests() -> None:
        output: list = []
        output_bytes = 0
        handled_without_yield = 0
        async with receive_channel:
            while True:
                try:
                    request = receive_channel.receive_nowait()
                except trio.WouldBlock:
                    if output:                           # answer before waiting for more
                        await send(output)
                        output, output_bytes = [], 0
                    handled_without_yield = 0
                    try:
                        request = await receive_channel.receive()
                    except trio.EndOfChannel:
                        break
                except trio.EndOfChannel:
                    break
                queue.bytes -= _request_bytes(request)
                if queue.bytes < queued_bytes_max:
                    queue.space.set()
                info.requests += 1
                started = time.perf_counter()
                reply = await dispatch(broker, request, info, timeout_s)
                if reply is not None:
                    payload, attachments = reply
                    pieces = encode_response(request.correlation_id, payload, attachments)
                    output.extend(pieces)
                    output_bytes += sum(len(p) for p in pieces)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("connection %d: api %d v%d corr %d in %.3f ms", info.connection_id,
                              request.api_key, request.api_version, request.correlation_id,
                              (time.perf_counter() - started) * 1000)
                if output_bytes >= _OUTPUT_FLUSH_BYTES:
                    await send(output)
                    output, output_bytes = [], 0
                    handled_without_yield = 0
                handled_without_yield += 1
                if handled_without_yield >= _REQUESTS_PER_YIELD:
                    await trio.sleep(0)                  # fairness to other connections
                    handled_without_yield = 0
            if output:
                await send(output)

    async def send(pieces: list) -> None:
        send_guard.deadline = trio.current_time() + timeout_s
        for piece in _pieces_for_send(pieces):
            await stream.send_all(piece)
        send_guard.deadline = math.inf

    try:
        async with trio.open_nursery() as nursery:
            async def run_processor() -> None:
                await processor()
                nursery.cancel_scope.cancel()

            # The reader closes the channel when it stops (EOF, idle, bad frame,
            # shutdown); the processor then answers what was read and ends.
            nursery.start_soon(reader)
            nursery.start_soon(run_processor)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError) as exc:
        log.debug("connection %d closed: %r", info.connection_id, exc)
    except BaseExceptionGroup as group:
        rest = group.subgroup(lambda e: not isinstance(
            e, (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError)))
        if rest is not None:
            raise rest
        log.debug("connection %d closed: %r", info.connection_id, group)
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)
