"""The interface every metadata store implements, and helpers written once on top of it.

`KVStore` is etcd v3's KV, Lease and Watch services as a `typing.Protocol`.
Two classes implement it: `EtcdStore` (a real etcd through its JSON gateway)
and `MemoryStore` (one process, etcd's semantics, trio's clock), and one
contract suite (tests/test_metastore_contract.py) holds both to the same
behaviour. Code above this layer (the cluster records, the controller, the
seeded simulation) is written against `KVStore` only.

Theory of operation: every change is a revision. Readers get a revision with
each answer; writers that must not lose a race guard their write with a
`Compare` on the revision they read (compare-and-swap). Watchers resume from
the revision after the last event they handled, so a watcher that re-reads
and then watches from `read.revision + 1` misses nothing and sees nothing
twice. Liveness is a lease: keys attached to it vanish when its holder stops
calling `keep_alive`.

Task-safety: every method may be called from any number of tasks at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import trio

from ._types import (
    Compare,
    DeleteResult,
    Event,
    Lease,
    LeaseInfo,
    Op,
    PutResult,
    RangeResult,
    StoreStatistics,
    TxnResult,
    Unavailable,
)

__all__ = ["KVStore", "LeaseKeeper", "LeaseKeeperStatistics"]


class KVStore(Protocol):
    """etcd v3's data model: a revisioned key space with transactions, leases and watches.

    Every method raises only `MetaStoreError` subclasses for operating
    errors: `Unavailable` (store unreachable; a write's outcome unknown),
    `LeaseNotFound`, `InvalidRequest`, `Compacted`, `FutureRevision`.
    """

    def statistics(self) -> StoreStatistics:
        """Counters: requests made, requests that found the store unavailable, watches open."""
        ...

    async def get(self, key: bytes, *, prefix: bool = False, limit: int = 0) -> RangeResult:
        """The key (or every key under the prefix, sorted by key), with the store's revision."""
        ...

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> PutResult:
        """Write `key`; attach it to `lease` (raises `LeaseNotFound` if that lease is gone)."""
        ...

    async def delete(self, key: bytes, *, prefix: bool = False) -> DeleteResult:
        """Delete the key or every key under the prefix; the old values come back in `prev_kvs`."""
        ...

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        """If every compare holds, run `success`, else `failure`, atomically, as one revision.

        Reads in the transaction see its earlier writes. A key may be
        written at most once per transaction (`InvalidRequest`).
        """
        ...

    async def grant_lease(self, ttl_s: int) -> Lease:
        """A new lease that expires `ttl_s` seconds from now unless kept alive."""
        ...

    async def keep_alive(self, lease_id: int) -> int:
        """Restart the lease's TTL; returns the TTL. Raises `LeaseNotFound` once it expired."""
        ...

    async def revoke_lease(self, lease_id: int) -> None:
        """End the lease now, deleting its keys in one revision."""
        ...

    async def lease_info(self, lease_id: int) -> LeaseInfo:
        """Remaining TTL and attached keys. Raises `LeaseNotFound`."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget history before `revision` (watches can no longer start earlier)."""
        ...

    def watch(
        self, key: bytes, *, prefix: bool = False, start_revision: int = 0
    ) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Changes to the key (or prefix) from `start_revision` on (0: from now), in revision order.

        The watch is established when the context is entered: a change made
        after `__aenter__` returns is always seen. Iterating raises
        `Compacted` when `start_revision` (or a watcher that fell behind) is
        older than the oldest history kept, and `Unavailable` when the store
        is lost; resume with a fresh read and a watch from its revision + 1.
        """
        ...


@dataclass(frozen=True, slots=True)
class LeaseKeeperStatistics:
    keep_alives: int  # successful keep-alive round trips
    last_ttl_s: int  # TTL the store reported last


class LeaseKeeper:
    """Keeps one lease alive every `ttl_s / 3` seconds until cancelled or the lease is lost.

    Usage: `nursery.start_soon(LeaseKeeper(kv, lease).run)`. `run` returns
    nothing while it succeeds; it raises `LeaseNotFound` when the store says
    the lease is gone (the holder has lost everything attached to it and
    must stop acting on it) and `Unavailable` once the store stayed
    unreachable for a whole TTL (the lease has lapsed in the store's view).

    Error handling: a single `Unavailable` is retried at the next tick;
    etcd's clients do the same (clientv3 `sendKeepAliveLoop`). `give_up_s`
    (default: the TTL) is how long the store may stay unreachable before
    `run` raises `Unavailable`; a broker passes `math.inf`, so that it keeps
    serving while etcd is down and learns its fate (`LeaseNotFound` or a
    renewed lease) when etcd is back.
    """

    def __init__(self, kv: KVStore, lease: Lease, *, interval_s: float | None = None,
                 give_up_s: float | None = None) -> None:
        self._kv = kv
        self.lease = lease
        self.interval_s = interval_s if interval_s is not None else max(lease.ttl_s / 3.0, 0.05)
        self.give_up_s = float(lease.ttl_s) if give_up_s is None else give_up_s
        self._keep_alives = 0
        self._last_ttl_s = lease.ttl_s
        self._changed = trio.Event()

    def statistics(self) -> LeaseKeeperStatistics:
        return LeaseKeeperStatistics(keep_alives=self._keep_alives, last_ttl_s=self._last_ttl_s)

    async def wait_keep_alives(self, count: int) -> None:
        """Return once at least `count` keep-alives have succeeded."""
        while self._keep_alives < count:
            await self._changed.wait()

    async def run(self) -> None:
        last_ok = trio.current_time()
        while True:
            await trio.sleep(self.interval_s)
            try:
                self._last_ttl_s = await self._kv.keep_alive(self.lease.id)
            except Unavailable:
                if trio.current_time() - last_ok >= self.give_up_s:
                    raise
                continue
            last_ok = trio.current_time()
            self._keep_alives += 1
            self._changed.set()
            self._changed = trio.Event()
