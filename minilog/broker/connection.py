"""One client connection: bytes through the listener's codec to the handlers and back.

Rules (each a bound, from Kafka's settings, per listener in `ConnectionLimits`):
- `connections.max.idle.ms`: a connection that sends nothing this long is closed.
- `request.arrival.timeout.ms`: once a request's first byte came, the whole
  request must arrive within this (a client dripping a byte a second is never
  idle: slowloris). Time the reader spends waiting on the broker's own queue
  does not count against the client; waiting for room in the memory budget
  does (partial frames must not hold the budget for ever).
- `queued.max.requests`: requests read ahead per connection; when reached
  the reader stops reading (TCP back-pressure does the rest).
- `queued.max.request.bytes` (per broker, as Kafka's) and
  `queued.max.request.bytes.per.connection`: the memory of requests read and
  responses not yet sent, charged to the broker's `MemoryBudget`
  (memory.py): a connection whose queued requests and unsent responses
  reach its share, or any connection but a small one while the broker's
  budget is spent, is not read from; a fetch's answer is clamped to the
  room the budget gives. Everything a connection holds is released when it
  ends, however it ends (issue 8, item 5).
- `socket.request.max.bytes`: the codec's frame limit; a larger length
  prefix closes the connection before anything is allocated.
- `request.timeout.ms`: bounds handling one request and sending one batch
  of responses. A client that stops reading its responses is dropped when a
  send does not finish in time; it never blocks anyone else.

Theory of operation: two tasks per connection, in the connection's own
nursery. The *reader* (`_read`) feeds received bytes to the codec and puts
each decoded request into a bounded memory channel. The *processor*
(`_process`) takes requests in order, dispatches them, and queues the
encoded responses; it sends when no further request is already waiting
(so pipelined small responses are joined into one send) or when the
output grows large. Answers therefore go out in request order. A
`FrameError` from the codec closes only this connection. The reader runs
inside `reader_scope`, which the broker cancels on shutdown: reading stops,
queued requests are still answered.

Error handling: network errors and a stalled send close the connection
quietly (DEBUG); a handler's exception is the dispatcher's business
(UNKNOWN_SERVER_ERROR for that request).

Resource handling: when the connection ends, its queued requests, unsent
responses and codec buffer are dropped and their bytes released before
`serve` returns; the exception that ended it is not kept in a local (an
exception's traceback holds the frames that hold it: a reference cycle
that kept responses alive until a full garbage collection).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import trio

from minilog._logsafe import logsafe
from minilog.protocol import NEED_DATA, FetchRequest, FrameError, RequestHeader, ServerCodec

from ._services import BrokerServices, RequestContext
from .config import BrokerConfig
from .handlers import dispatch
from .memory import MemoryBudget

__all__ = ["Connection", "ConnectionLimits"]

log = logging.getLogger("minilog.broker.server")

_RECEIVE_BYTES = 256 * 1024
_JOIN_BYTES_MAX = 64 * 1024            # pieces smaller than this are joined into one send
_OUTPUT_FLUSH_BYTES = 1024 * 1024      # send at least this often while pipelining
_REQUESTS_PER_YIELD = 16               # pipelined requests handled before letting others run
_CLOSED_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError)


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds of one connection (Kafka's keys in the module docstring)."""

    frame_bytes_max: int = 100 * 1024 * 1024        # socket.request.max.bytes
    idle_s: float = 600.0                           # connections.max.idle.ms
    request_timeout_s: float = 30.0                 # request.timeout.ms
    queued_requests_max: int = 100                  # queued.max.requests
    connection_bytes_max: int = 64 * 1024 * 1024    # queued.max.request.bytes.per.connection
    request_arrival_s: float = 60.0                 # request.arrival.timeout.ms
    broker_bytes_max: int = 256 * 1024 * 1024       # queued.max.request.bytes (whole broker)

    @classmethod
    def from_config(cls, config: BrokerConfig) -> ConnectionLimits:
        return cls(config.socket_request_max_bytes, config.connections_max_idle_ms / 1000,
                   config.request_timeout_ms / 1000, config.queued_max_requests,
                   config.queued_max_request_bytes_per_connection,
                   config.request_arrival_timeout_ms / 1000, config.queued_max_request_bytes)

    def memory_budget(self) -> MemoryBudget:
        return MemoryBudget(self.broker_bytes_max, self.connection_bytes_max)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions inside a (nested) exception group."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _pieces_for_send(pieces: list[Any]) -> list[Any]:
    """Join runs of small pieces; keep large attachments as separate sends (no copy)."""
    out: list[Any] = []
    run: list[Any] = []
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


class Connection:
    """Serve one client until it disconnects, misbehaves or the broker stops.

    Args:
        stream: the accepted stream.
        codec: this connection's codec (a fresh one per connection).
        services: what handlers may use.
        ctx: the connection's context (its listener, addresses, counters).
        limits: the listener's bounds.
        memory: the broker's budget for requests and responses (a private one when None).
    """

    def __init__(self, stream: trio.abc.Stream, codec: ServerCodec, services: BrokerServices,
                 ctx: RequestContext, limits: ConnectionLimits,
                 memory: MemoryBudget | None = None) -> None:
        self.stream = stream
        self.codec = codec
        self.services = services
        self.ctx = ctx
        self.limits = limits
        self.memory = memory or limits.memory_budget()
        self.reader_scope = trio.CancelScope()      # cancelled on shutdown: stop reading
        self._send_channel, self._receive_channel = trio.open_memory_channel[
            tuple[RequestHeader, Any]](limits.queued_requests_max)
        # Bytes charged to the memory budget: `_held` in all, of which `_buffer_charge`
        # for the codec's buffer (a frame still arriving) and `_queued` for requests read
        # and responses not yet sent. Every charge goes through _charge/_release.
        self._held = 0
        self._queued = 0
        self._buffer_charge = 0
        # request.timeout.ms bounds each response's send: one cancel scope around the
        # processor whose deadline is moved in for a send and back out after (cheaper than
        # a trio.fail_after per response). The deadline passing mid-send ends the connection.
        self._send_guard = trio.CancelScope()
        self._connection_scope = trio.CancelScope()     # evict(): end the whole connection
        self._arrival_deadline: float | None = None      # request.arrival.timeout.ms, if armed
        self._last_receive = trio.current_time()
        self._busy = False                               # a request is being handled or sent

    async def serve(self) -> None:
        """Run the reader and the processor; close the stream at the end. Raises nothing
        for network trouble (logged at DEBUG)."""
        try:
            with self._connection_scope:
                async with trio.open_nursery() as nursery:
                    # The reader closes the channel when it stops (EOF, idle, bad frame,
                    # shutdown); the processor then answers what was read and ends.
                    nursery.start_soon(self._read)
                    nursery.start_soon(self._run_processor, nursery.cancel_scope)
        except _CLOSED_ERRORS as exc:
            log.debug("connection %d closed: %r", self.ctx.connection_id, exc)
        except BaseExceptionGroup as group:
            # split() by type tests the leaves (a predicate given to subgroup() is called
            # on the group itself first, and a group is never one of _CLOSED_ERRORS: that
            # re-raised every ordinary disconnect as an ERROR traceback, issue 8 item 7).
            closed, rest = group.split(_CLOSED_ERRORS)
            try:
                if rest is not None:
                    raise rest from None
                assert closed is not None
                log.debug("connection %d closed: %s", self.ctx.connection_id,
                          "; ".join(repr(e) for e in _leaves(closed)))
            finally:
                # The subgroups' tracebacks hold this frame, which holds them: a cycle
                # only a full collection frees, and with it every response the frames
                # below still referenced (issue 8, item 5).
                del closed, rest
        finally:
            self._free()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    def _free(self) -> None:
        """Drop what the connection holds and release its bytes (it has ended)."""
        self._send_channel.close()
        self._receive_channel.close()               # queued requests go with the channel
        self.memory.release(self._held)
        self._held = self._queued = self._buffer_charge = 0

    def _charge(self, n: int, *, queued: bool = True) -> None:
        self._held += n
        if queued:
            self._queued += n
        self.memory.charge(n)

    def _release(self, n: int, *, queued: bool = True) -> None:
        self._held -= n
        if queued:
            self._queued -= n
        self.memory.release(n)

    # -- reading ------------------------------------------------------------------------------

    @property
    def idle_since(self) -> float | None:
        """When this connection last received bytes, if it is idle now (nothing buffered,
        queued or being answered); None when busy. Lets the listeners give an idle
        connection's slot to a new client at `max.connections`."""
        if self._busy or self._held:
            return None
        return self._last_receive

    @property
    def evicted(self) -> bool:
        return self._connection_scope.cancel_called

    def evict(self) -> None:
        """Close this (idle) connection to make room for a new one."""
        log.debug("connection %d idle: closed to make room for a new connection",
                  self.ctx.connection_id)
        self._connection_scope.cancel()

    async def _read(self) -> None:
        idle_s = self.limits.idle_s
        async with self._send_channel:
            with self.reader_scope:
                # One cancel scope whose deadline moves on every receive (cheaper than a
                # new scope per receive_some): connections.max.idle.ms, or, while part of
                # a request is buffered, what is left of request.arrival.timeout.ms.
                with trio.CancelScope(deadline=trio.current_time() + idle_s) as idle:
                    await self._read_requests(idle)
                if idle.cancelled_caught:
                    if self._arrival_deadline is not None:
                        log.info("connection %d from %s: a request did not arrive within %.0f s "
                                 "of its first byte: closing", self.ctx.connection_id,
                                 self.ctx.client_host, self.limits.request_arrival_s)
                    else:
                        log.debug("connection %d idle for %.0f s: closing",
                                  self.ctx.connection_id, idle_s)

    async def _read_requests(self, idle: trio.CancelScope) -> None:
        stream, codec, channel = self.stream, self.codec, self._send_channel
        idle_s, memory = self.limits.idle_s, self.memory
        arrival_s = self.limits.request_arrival_s
        while True:
            if not memory.may_read(self._held, self._queued):
                await self._wait_for_room(idle)
            data = await stream.receive_some(_RECEIVE_BYTES)
            if not data:
                log.debug("connection %d closed: end of stream", self.ctx.connection_id)
                return
            now = self._last_receive = trio.current_time()
            idle.deadline = now + idle_s
            codec.feed(data)
            while True:
                try:
                    request = codec.next_request()
                except FrameError as exc:
                    log.info("connection %d from %s: malformed frame, closing: %s",
                             self.ctx.connection_id, self.ctx.client_host, logsafe(exc))
                    return
                if request is NEED_DATA:
                    break
                self._arrival_deadline = None
                self._charge(request[0].size_bytes)     # released once it is handled
                try:
                    channel.send_nowait(request)         # no scheduling hop per request
                except trio.WouldBlock:
                    idle.deadline = math.inf             # waiting on us: no client timer runs
                    await channel.send(request)          # queued.max.requests reached
                    idle.deadline = min(idle.deadline, trio.current_time() + idle_s)
            buffered = codec.buffered_bytes              # a frame still arriving: read-ahead
            if buffered != self._buffer_charge:
                if buffered > self._buffer_charge:
                    self._charge(buffered - self._buffer_charge, queued=False)
                else:
                    self._release(self._buffer_charge - buffered, queued=False)
                self._buffer_charge = buffered
            if buffered:                     # part of a request: it must come whole
                if self._arrival_deadline is None:
                    self._arrival_deadline = now + arrival_s
                idle.deadline = min(idle.deadline, self._arrival_deadline)
            else:
                self._arrival_deadline = None

    async def _wait_for_room(self, idle: trio.CancelScope) -> None:
        """Stop reading until the memory budget lets this connection read again. The
        idle timer stops meanwhile (the client waits on us); a request's arrival deadline
        keeps running, so connections holding partial frames cannot hold the budget
        for ever between them."""
        memory = self.memory
        idle.deadline = math.inf if self._arrival_deadline is None else self._arrival_deadline
        while not memory.may_read(self._held, self._queued):
            await memory.wait_changed()
        idle.deadline = trio.current_time() + self.limits.idle_s
        if self._arrival_deadline is not None:
            idle.deadline = min(idle.deadline, self._arrival_deadline)

    # -- processing ---------------------------------------------------------------------------

    async def _run_processor(self, connection_scope: trio.CancelScope) -> None:
        with self._send_guard:
            await self._process()
        if self._send_guard.cancelled_caught:
            raise trio.TooSlowError(f"response not sent within {self.limits.request_timeout_s} s")
        connection_scope.cancel()

    async def _process(self) -> None:
        receive = self._receive_channel
        output: list[Any] = []
        output_bytes = 0                                 # charged until sent
        handled_without_yield = 0
        try:
            async with receive:
                while True:
                    try:
                        request = receive.receive_nowait()
                    except trio.WouldBlock:
                        if output:                       # answer before waiting for more
                            await self._send(output, output_bytes)
                            output, output_bytes = [], 0
                        handled_without_yield = 0
                        self._busy = False
                        try:
                            request = await receive.receive()
                        except trio.EndOfChannel:
                            break
                    except trio.EndOfChannel:
                        break
                    self._busy = True
                    pieces = await self._handle(*request)
                    del request                          # freed now, not at the next one
                    if pieces:
                        output.extend(pieces)
                        size = 0
                        for piece in pieces:
                            size += len(piece)
                        self._charge(size)
                        output_bytes += size
                    if output_bytes >= _OUTPUT_FLUSH_BYTES:
                        await self._send(output, output_bytes)
                        output, output_bytes = [], 0
                        handled_without_yield = 0
                    handled_without_yield += 1
                    if handled_without_yield >= _REQUESTS_PER_YIELD:
                        await trio.sleep(0)              # fairness to other connections
                        handled_without_yield = 0
                if output:
                    await self._send(output, output_bytes)
        finally:
            output.clear()         # a send that failed: the responses go now (module doc)

    async def _handle(self, header: RequestHeader, request: Any) -> list[Any] | None:
        """Dispatch one request; return the encoded response's pieces (None: no answer).

        The request's bytes are released once it is handled; a fetch reserves the room
        the memory budget gives it (its answer is clamped to that) while it runs.
        """
        ctx = self.ctx
        ctx.requests += 1
        ctx.client_id = header.client_id
        room = 0
        memory = self.memory
        if type(request) is FetchRequest:
            room = min(memory.response_room(self._held), max(request.max_bytes, 0),
                       self.services.config.fetch_max_bytes)
            request.max_bytes = max(room, 1)             # 0: one batch (it always fits)
            memory.reserve(room)
        started = time.perf_counter()
        try:
            response = await dispatch(self.services, request, ctx, self.limits.request_timeout_s)
        finally:
            memory.unreserve(room)
            self._release(header.size_bytes)
        pieces = None if response is None else self.codec.encode_response(header, response)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("connection %d: api %d v%d corr %d in %.3f ms", ctx.connection_id,
                      header.api_key, header.api_version, header.correlation_id,
                      (time.perf_counter() - started) * 1000)
        return pieces

    async def _send(self, pieces: list[Any], charged: int) -> None:
        """Send `pieces` in order, then release their `charged` bytes."""
        guard = self._send_guard
        guard.deadline = trio.current_time() + self.limits.request_timeout_s
        for piece in _pieces_for_send(pieces):
            await self.stream.send_all(piece)
        guard.deadline = math.inf
        self._release(charged)
