"""The broker's memory budget for requests read and responses not yet sent (issue 8, item 5).

One client must not be able to exhaust the broker's memory, and many clients
together must not either: a client that sends fetches and never reads the
answers used to pin about `fetch.max.bytes` per connection (20 connections:
1.2 GB). Kafka bounds the bytes of queued requests per broker
(`queued.max.request.bytes`, a `MemoryPool`) and sends fetched records with
`sendfile`, so unsent responses cost it no heap; minilog reads records into
memory, so its budget covers responses too.

Rules:
- `queued.max.request.bytes` (`capacity_bytes`) bounds, over all connections
  together, the bytes connections hold (`held_bytes`): request bytes read (a
  frame still arriving in a codec's buffer, whole requests queued or being
  handled) and encoded responses not yet sent. Each connection charges what
  it holds and releases it when the request is done, the response sent, or
  the connection ends (whatever way).
- A fetch reserves the most its answer may hold (`reserved_bytes`) while it
  runs, parked in a long poll included. Reservations count when a fetch's
  room is computed (held + reserved stays within the budget), not when a
  connection asks to read: consumers parked in long polls never slow
  producers down. So the bytes held and reserved together stay under twice
  the budget (plus the allowances below).
- `queued.max.request.bytes.per.connection` (`connection_share_bytes`): a
  connection whose queued requests and unsent responses reach its share is
  not read from any more (TCP back-pressure does the rest) until its client
  reads; a fetch's response is clamped to the connection's room.
- A connection holding less than `guaranteed_bytes` may always read and gets
  a small answer, whatever the others hold: a well-behaved client is served,
  more slowly, while hostile ones fill the budget (until `request.timeout.ms`
  drops them). The broker may so exceed `capacity_bytes` by at most
  `guaranteed_bytes` plus one record batch per connection (for reading and
  for answering each).
- A fetch's room is at most half of what is free: parked long polls cannot
  take the whole budget between them.

Theory of operation: connections call `charge(n)` / `release(n)` and
`reserve(n)` / `unreserve(n)` (the counters are exact: every charge is
released with the same number), ask `may_read(held, queued)` before each
receive and `response_room(held)` before a fetch, and park in
`wait_changed()` while they may not read; every release wakes the parked
ones to look again.

Task-safety: the trio thread only.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

__all__ = ["MemoryBudget", "MemoryBudgetStatistics", "GUARANTEED_BYTES"]

GUARANTEED_BYTES = 2 * 1024 * 1024      # what any connection may hold, whatever the others hold


@dataclass(frozen=True)
class MemoryBudgetStatistics:
    capacity_bytes: int            # queued.max.request.bytes
    connection_share_bytes: int    # queued.max.request.bytes.per.connection
    held_bytes: int                # held by all connections now
    reserved_bytes: int            # reserved by fetches being answered now
    held_bytes_peak: int           # the most held at once since start
    waiting: int                   # connections not read from, waiting for room


class MemoryBudget:
    """The bytes all connections hold, against `capacity_bytes` (see the module docstring).

    Args:
        capacity_bytes: queued.max.request.bytes.
        connection_share_bytes: queued.max.request.bytes.per.connection.
        guaranteed_bytes: what any connection may hold whatever the others hold.
    """

    def __init__(self, capacity_bytes: int, connection_share_bytes: int,
                 guaranteed_bytes: int = GUARANTEED_BYTES) -> None:
        assert capacity_bytes > 0 and connection_share_bytes > 0
        self.capacity_bytes = capacity_bytes
        self.connection_share_bytes = connection_share_bytes
        self.guaranteed_bytes = min(guaranteed_bytes, connection_share_bytes)
        self.held_bytes = 0
        self.reserved_bytes = 0
        self._peak = 0
        self._waiting = 0
        self._changed = trio.Event()

    def charge(self, n: int) -> None:
        """Count `n` more bytes as held (never blocks: callers ask `may_read` first)."""
        held = self.held_bytes = self.held_bytes + n
        if held > self._peak:
            self._peak = held

    def release(self, n: int) -> None:
        """Count `n` bytes as freed, and wake the connections waiting for room."""
        self.held_bytes -= n
        assert self.held_bytes >= 0, f"released more than was charged ({self.held_bytes})"
        if self._waiting:
            self._changed.set()
            self._changed = trio.Event()

    def reserve(self, n: int) -> None:
        """Reserve `n` bytes for a fetch's answer (see `response_room`)."""
        self.reserved_bytes += n

    def unreserve(self, n: int) -> None:
        self.reserved_bytes -= n
        assert self.reserved_bytes >= 0, f"unreserved more than was reserved ({self.reserved_bytes})"

    def may_read(self, held: int, queued: int) -> bool:
        """Whether a connection holding `held` bytes, `queued` of them requests and
        responses (not a frame still arriving), may read more from its client."""
        if queued >= self.connection_share_bytes:
            return False
        return self.held_bytes < self.capacity_bytes or held < self.guaranteed_bytes

    def response_room(self, held: int) -> int:
        """The most a fetch answered on a connection holding `held` bytes may return
        (0: one record batch only, as Kafka always returns the first batch)."""
        own = self.connection_share_bytes - held
        free = self.capacity_bytes - self.held_bytes - self.reserved_bytes
        pool = max(free // 2, self.guaranteed_bytes - held)
        return max(min(own, pool), 0)

    async def wait_changed(self) -> None:
        """Sleep until some connection releases bytes."""
        self._waiting += 1
        try:
            await self._changed.wait()
        finally:
            self._waiting -= 1

    def statistics(self) -> MemoryBudgetStatistics:
        return MemoryBudgetStatistics(self.capacity_bytes, self.connection_share_bytes,
                                      self.held_bytes, self.reserved_bytes, self._peak,
                                      self._waiting)
