"""A fault-injecting TCP proxy for the fault tests: cut one source address off from a broker.

Theory of operation. A `FaultProxy` listens on a loopback address and
forwards every connection to one upstream (a broker's real listener). The
broker advertises the proxy's address (`advertised.listeners`), so clients
and the other brokers' replica fetchers reach it through the proxy. Each
broker's fetcher binds its source address to its broker's own host
(127.0.0.<10+id> in tests/_cluster_fixtures.py), so the proxy tells
followers apart by the peer address of the connections it accepts.

Faults, per source address, applied at once to open connections and to new
ones until `heal`:

* "drop": the connection is reset (RST: SO_LINGER 0, then close) and new
  ones are accepted and reset at once, as a host answering with RST would.
* "blackhole": nothing is forwarded in either direction; the proxy keeps
  reading and discarding what the source sends, and answers nothing, as a
  network dropping packets silently would (the peer only notices through
  its own timeouts). Connections blackholed stay dead after `heal`; new
  connections after it are forwarded again.

Runs in the test's trio loop (`async with open_fault_proxy(...)`); every
task lives in the proxy's nursery and ends when the context exits.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

__all__ = ["FaultProxy", "ProxyStatistics", "open_fault_proxy"]

COPY_BYTES_MAX = 1 << 16     # one read of a pump
CONNECT_TIMEOUT_S = 5.0      # connecting upstream


@dataclass
class ProxyStatistics:
    accepted: dict[str, int] = field(default_factory=dict)    # source address -> connections
    refused: dict[str, int] = field(default_factory=dict)     # reset by "drop"
    discarded_bytes: dict[str, int] = field(default_factory=dict)   # swallowed by "blackhole"


class _Link:
    """One client connection and its forwarding; `scope` cancels the forwarding."""

    def __init__(self, source: str, client: trio.SocketStream) -> None:
        self.source = source
        self.client = client
        self.scope = trio.CancelScope()
        self.fault: str | None = None


def _reset(stream: trio.SocketStream) -> None:
    """Make the coming close send RST, not FIN."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class FaultProxy:
    """Forward `listen_host:port` to `upstream`; `cut(source, mode)` and `heal(source)` inject faults.

    Task-safety: the trio thread of the loop it runs in only.
    """

    def __init__(self, upstream: tuple[str, int], listen_host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.listen_host = listen_host
        self.port = 0
        self.faults: dict[str, str] = {}
        self.stats = ProxyStatistics()
        self._links: set[_Link] = set()
        self._nursery: trio.Nursery | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.listen_host, self.port

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  port: int = 0) -> None:
        listeners = await trio.open_tcp_listeners(port, host=self.listen_host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    def cut(self, source: str, mode: str = "drop") -> None:
        """From now on, connections from `source` get `mode` ("drop" or "blackhole")."""
        assert mode in ("drop", "blackhole"), mode
        self.faults[source] = mode
        for link in [lk for lk in self._links if lk.source == source]:
            link.fault = mode
            link.scope.cancel()

    def heal(self, source: str | None = None) -> None:
        """New connections from `source` (None: every source) are forwarded again."""
        if source is None:
            self.faults.clear()
        else:
            self.faults.pop(source, None)

    def connections_from(self, source: str) -> int:
        """Open, forwarding connections from `source`."""
        return sum(1 for lk in self._links if lk.source == source and lk.fault is None)

    async def _handle(self, client: trio.SocketStream) -> None:
        source = client.socket.getpeername()[0]
        stats = self.stats
        stats.accepted[source] = stats.accepted.get(source, 0) + 1
        link = _Link(source, client)
        link.fault = self.faults.get(source)
        self._links.add(link)
        try:
            if link.fault is None:
                await self._forward(link)
            if link.fault == "blackhole":
                await self._swallow(link)
            elif link.fault == "drop":
                stats.refused[source] = stats.refused.get(source, 0) + 1
                _reset(client)
        finally:
            self._links.discard(link)
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def _forward(self, link: _Link) -> None:
        with link.scope:
            try:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    upstream = await trio.open_tcp_stream(*self.upstream)
            except (OSError, trio.TooSlowError):
                _reset(link.client)
                return
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, link.client, upstream, nursery.cancel_scope)
                    nursery.start_soon(self._pump, upstream, link.client, nursery.cancel_scope)
            finally:
                if link.fault is not None:
                    _reset(upstream)
                with trio.CancelScope(shield=True):
                    await upstream.aclose()

    @staticmethod
    async def _pump(src: trio.SocketStream, dst: trio.SocketStream, both: trio.CancelScope) -> None:
        try:
            while True:
                data = await src.receive_some(COPY_BYTES_MAX)
                if not data:
                    break
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        both.cancel()     # one side ended: end the other (a half-open link helps no test)

    async def _swallow(self, link: _Link) -> None:
        stats = self.stats
        try:
            while True:
                data = await link.client.receive_some(COPY_BYTES_MAX)
                if not data:
                    return
                stats.discarded_bytes[link.source] = stats.discarded_bytes.get(link.source, 0) + len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return


@contextlib.asynccontextmanager
async def open_fault_proxy(upstream: tuple[str, int], listen_host: str = "127.0.0.1",
                           port: int = 0) -> AsyncIterator[FaultProxy]:
    """A running FaultProxy in front of `upstream`; stopped (every connection closed) on exit."""
    proxy = FaultProxy(upstream, listen_host)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: proxy.run(task_status=task_status, port=port))
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
