"""The broker's listeners: one per (address, codec), and the connections they accept.

Rules:
- Each `ListenerConfig` pairs an address with a codec factory (minilog's
  native msgpack frames by default; Kafka's binary protocol is another)
  and the connection limits of that listener. Handlers learn the listener
  a request came through from `RequestContext.listener`, so METADATA and
  FIND_COORDINATOR advertise that listener's own address and port.
- `max.connections` bounds the connections of all listeners together: at
  the limit a new connection takes the slot of the connection idle the
  longest (none busy is ever evicted), or is closed when none is idle.
- `max.connections.per.ip` bounds the connections from one client address:
  one host's flood of sockets leaves slots for everyone else.
- Accepting is trio's `serve_listeners` (it also rides out EMFILE & co.).

Theory of operation: `open()` binds every listener (port 0 picks a free
port; `bound` tells which); `serve()` accepts until `stop()`, then lets
the open connections answer what they already read, for at most
`shutdown_timeout_s`, and cancels the rest. Every connection runs in its
own task in the connections nursery (`Connection.serve`); a bug while
serving one is logged and closes only that one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from minilog.protocol import FrameLimits, NativeServerCodec, ServerCodec

from ._services import BrokerServices, ListenerInfo, RequestContext
from .connection import Connection, ConnectionLimits

__all__ = ["ListenerConfig", "Listeners", "native_codec"]

log = logging.getLogger("minilog.broker")


def native_codec(limits: ConnectionLimits) -> ServerCodec:
    """A codec of minilog's msgpack frames, bounded by the listener's limits."""
    return NativeServerCodec(FrameLimits(frame_bytes_max=limits.frame_bytes_max))


@dataclass(frozen=True)
class ListenerConfig:
    """One listener: where it binds, which codec it speaks, its limits."""

    name: str = "native"
    host: str = "127.0.0.1"
    port: int = 9092                                # 0: a free port
    codec: Callable[[ConnectionLimits], ServerCodec] = native_codec
    advertised_host: str | None = None              # None: the address a client connected to
    limits: ConnectionLimits | None = None          # None: from the broker's config


@dataclass
class _Bound:
    config: ListenerConfig
    limits: ConnectionLimits
    info: ListenerInfo
    sockets: list[trio.SocketListener] = field(default_factory=list)


class Listeners:
    """The broker's listeners and every connection they accepted.

    Args:
        configs: the listeners, first one first (its port is the broker's `port`).
        services: what handlers may use.
        limits: the connection limits of listeners that set none.
        max_connections: max.connections, over all listeners.
        max_connections_per_ip: max.connections.per.ip, over all listeners.
    """

    def __init__(self, configs: list[ListenerConfig], services: BrokerServices,
                 limits: ConnectionLimits, max_connections: int,
                 max_connections_per_ip: int = 2_000) -> None:
        assert configs, "a broker needs at least one listener"
        self._configs = configs
        self._services = services
        self._default_limits = limits
        self.memory = limits.memory_budget()     # queued.max.request.bytes, all listeners
        self._max_connections = max_connections
        self._max_connections_per_ip = max_connections_per_ip
        self._per_host: dict[str, int] = {}
        self._evicting = 0                   # evicted connections still winding down
        self.bound: list[_Bound] = []
        self._connections: dict[int, Connection] = {}
        self._next_connection_id = 0
        self._requests_closed = 0
        self._accept_scope = trio.CancelScope()
        self.stopping = False

    async def open(self) -> None:
        """Bind every listener (raises OSError, e.g. a port in use)."""
        for config in self._configs:
            limits = config.limits or self._default_limits
            sockets = await trio.open_tcp_listeners(config.port, host=config.host)
            port = sockets[0].socket.getsockname()[1]
            versions = tuple((k, lo, hi) for k, lo, hi in config.codec(limits).api_versions())
            info = ListenerInfo(config.name, port, config.advertised_host, versions)
            self.bound.append(_Bound(config, limits, info, sockets))

    def stop(self) -> None:
        """Stop accepting and reading (idempotent); queued requests still get answers."""
        self.stopping = True
        self._accept_scope.cancel()
        for conn in self._connections.values():
            conn.reader_scope.cancel()

    async def serve(self, shutdown_timeout_s: float) -> None:
        """Accept until `stop()`; then drain the connections for up to `shutdown_timeout_s`."""
        with trio.CancelScope() as connections_scope:
            async with trio.open_nursery() as connections:
                with self._accept_scope:
                    async with trio.open_nursery() as accepters:
                        for bound in self.bound:
                            accepters.start_soon(self._accept, bound, connections)
                for bound in self.bound:          # serve_listeners closed them; be sure
                    for sock in bound.sockets:
                        await sock.aclose()
                for conn in self._connections.values():
                    conn.reader_scope.cancel()
                connections_scope.deadline = trio.current_time() + shutdown_timeout_s

    async def _accept(self, bound: _Bound, connections: trio.Nursery) -> None:
        async def handler(stream: trio.SocketStream) -> None:
            await self._serve_connection(bound, stream)

        await trio.serve_listeners(handler, bound.sockets, handler_nursery=connections)

    def _make_room(self) -> bool:
        """At max.connections: evict the longest-idle connection (True), or find none (False).

        Kafka's KIP-402 precedent: at the broker's limit a new connection may take the
        slot of an idle one, so a flood of idle sockets cannot lock new clients out for
        connections.max.idle.ms. A connection with a request in flight is never evicted.
        """
        oldest: Connection | None = None
        oldest_since = math.inf
        for conn in self._connections.values():
            since = conn.idle_since
            if since is not None and since < oldest_since and not conn.evicted:
                oldest, oldest_since = conn, since
        if oldest is None:
            return False
        oldest.evict()
        self._evicting += 1
        return True

    async def _serve_connection(self, bound: _Bound, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            local = stream.socket.getsockname()
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        host = str(peer[0])
        if self._per_host.get(host, 0) >= self._max_connections_per_ip:
            log.debug("max.connections.per.ip %d reached for %s: closing a new connection",
                      self._max_connections_per_ip, host)
            await trio.aclose_forcefully(stream)
            return
        if len(self._connections) - self._evicting >= self._max_connections and not self._make_room():
            log.debug("max.connections %d reached: closing a new connection", self._max_connections)
            await trio.aclose_forcefully(stream)
            return
        self._next_connection_id += 1
        ctx = RequestContext(self._next_connection_id, host, int(peer[1]), str(local[0]),
                             bound.info)
        conn = Connection(stream, bound.config.codec(bound.limits), self._services, ctx, bound.limits,
                          self.memory)
        if self.stopping:
            conn.reader_scope.cancel()
        self._connections[ctx.connection_id] = conn
        self._per_host[host] = self._per_host.get(host, 0) + 1
        try:
            await conn.serve()
        except Exception:
            # A bug while serving one connection must not take the broker down:
            # log it loudly, drop that connection, keep serving the others.
            log.exception("connection %d from %s:%d failed; closing it", ctx.connection_id,
                          ctx.client_host, ctx.client_port)
        finally:
            del self._connections[ctx.connection_id]
            self._per_host[host] -= 1
            if not self._per_host[host]:
                del self._per_host[host]
            if conn.evicted:
                self._evicting -= 1
            self._requests_closed += ctx.requests

    # -- statistics ---------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def connections_total(self) -> int:
        return self._next_connection_id

    @property
    def requests_total(self) -> int:
        return self._requests_closed + sum(c.ctx.requests for c in self._connections.values())
