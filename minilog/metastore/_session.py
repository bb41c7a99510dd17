"""A broker's membership in the cluster: lease, registration, controller election.

Theory of operation. A broker grants itself a lease and registers
`/minilog/brokers/<id>` under it; `LeaseKeeper` renews the lease every TTL/3.
While the lease lives the broker is live; when the process dies or pauses
past the TTL, etcd deletes the registration and everyone watching the
brokers prefix sees a DELETE.

The controller is whoever created `/minilog/controller` under its lease, by
a transaction guarded with `create_revision == 0` (etcd's own election
recipe, concurrency.Election, reduced to one candidate slot: the others
watch the key and try again when it is deleted). The key's create_revision
is the controller epoch. The controller stays controller exactly as long as
its lease: when the lease lapses the key is deleted, a waiting broker's
transaction succeeds, and the old controller's writes fail from then on
because every controller write carries `fence()`, a compare on that
create_revision. Nothing here trusts a local clock to decide who leads.

Error handling: `BrokerSession.open` raises `LeaseNotFound` (in trio's
exception group, from the keeper task) when the lease is lost while open:
the broker must stop acting on anything it held. Leaving the context
revokes the lease, so a clean shutdown removes the registration (and the
controller key) at once instead of after a TTL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from ._api import KVStore, LeaseKeeper
from ._cluster import BrokerIdInUse, BrokerRegistration, ClusterKeys, ControllerRecord
from ._types import Compare, Delete, EventType, Get, Lease, MetaStoreError, Put, RangeResult

__all__ = ["BrokerSession", "register_broker", "campaign", "fence_for", "resign", "watch_controller", "BROKER_LEASE_TTL_S"]

BROKER_LEASE_TTL_S = 6  # liveness: a silent broker is gone after this (Kafka's broker.session.timeout.ms is 9 s)


async def _wait_deleted(kv: KVStore, key: bytes, after_revision: int) -> None:
    """Return once `key` is deleted at a revision after `after_revision` (or already gone by then)."""
    async with kv.watch(key, start_revision=after_revision + 1) as events:
        async for event in events:
            if event.type == EventType.DELETE:
                return


async def register_broker(
    kv: KVStore,
    broker_id: int,
    addresses: Sequence[str],
    lease: Lease,
    *,
    wait: bool = False,
    keys: ClusterKeys = ClusterKeys(),
    listeners: Sequence[str] = (),
) -> BrokerRegistration:
    """Register `broker_id` under `lease`; returns the registration with its epoch.

    A restarted broker can find its old registration still alive for up to a
    TTL; with `wait` it waits for it to lapse, otherwise it raises
    `BrokerIdInUse` (Kafka refuses a duplicate broker id the same way).
    """
    key = keys.broker(broker_id)
    record = BrokerRegistration(broker_id, tuple(addresses), 0, tuple(listeners))
    while True:
        result = await kv.txn([Compare.missing(key)], [Put(key, record.to_bytes(), lease=lease.id)], [Get(key)])
        if result.succeeded:
            return BrokerRegistration(broker_id, tuple(addresses), result.revision, tuple(listeners))
        read = result.responses[0]
        assert isinstance(read, RangeResult)
        if read.kvs and read.kvs[0].lease == lease.id:
            return BrokerRegistration.from_kv(read.kvs[0])
        if not wait:
            raise BrokerIdInUse(f"broker {broker_id} is registered by another live broker")
        await _wait_deleted(kv, key, read.revision)


async def campaign(kv: KVStore, broker_id: int, lease: Lease, *, keys: ClusterKeys = ClusterKeys()) -> ControllerRecord:
    """Become the controller: returns once elected, with the controller epoch.

    Blocks while another broker is controller; wins (or loses to another
    waiter and keeps waiting) when that controller's key is deleted.
    Returning means this broker's lease holds the controller key.
    """
    key = keys.controller()
    record = ControllerRecord(broker_id)
    while True:
        result = await kv.txn([Compare.missing(key)], [Put(key, record.to_bytes(), lease=lease.id)], [Get(key)])
        if result.succeeded:
            return ControllerRecord(broker_id, result.revision)
        read = result.responses[0]
        assert isinstance(read, RangeResult)
        if read.kvs and read.kvs[0].lease == lease.id:
            return ControllerRecord.from_kv(read.kvs[0])  # already ours
        await _wait_deleted(kv, key, read.revision)


def fence_for(term: ControllerRecord, keys: ClusterKeys = ClusterKeys()) -> list[Compare]:
    """The compare every write of the controller in `term` carries: its key, its epoch."""
    return [Compare.create_revision(keys.controller(), "==", term.epoch)]


async def resign(kv: KVStore, term: ControllerRecord, *, keys: ClusterKeys = ClusterKeys()) -> bool:
    """Give up the controller role of `term` (if still held); True when it was held."""
    result = await kv.txn(fence_for(term, keys), [Delete(keys.controller())])
    return result.succeeded


async def watch_controller(kv: KVStore, *, keys: ClusterKeys = ClusterKeys()) -> AsyncIterator[ControllerRecord | None]:
    """The current controller (None while there is none), then each change, as they happen."""
    got = await kv.get(keys.controller())
    current = ControllerRecord.from_kv(got.kvs[0]) if got.kvs else None
    yield current
    async with kv.watch(keys.controller(), start_revision=got.revision + 1) as events:
        async for event in events:
            current = ControllerRecord.from_kv(event.kv) if event.type == EventType.PUT else None
            yield current


class BrokerSession:
    """One broker's lease, registration and (after `campaign`) controller term.

    Usage:
        async with BrokerSession.open(kv, broker_id, ["127.0.0.1:9092"]) as session:
            term = await session.campaign()          # blocks until elected
            await update_partition_state(kv, t, p, fn, fence=session.fence())

    Task-safety: one task campaigns; `fence`, `registration`, `term` may be
    read from any task.
    """

    def __init__(self, kv: KVStore, keys: ClusterKeys, lease: Lease, registration: BrokerRegistration,
                 *, give_up_s: float | None = None) -> None:
        self._kv = kv
        self._keys = keys
        self.lease = lease
        self.registration = registration
        self.keeper = LeaseKeeper(kv, lease, give_up_s=give_up_s)
        self.term: ControllerRecord | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        kv: KVStore,
        broker_id: int,
        addresses: Sequence[str],
        *,
        ttl_s: int = BROKER_LEASE_TTL_S,
        wait_for_id: bool = True,
        keys: ClusterKeys = ClusterKeys(),
        listeners: Sequence[str] = (),
        give_up_s: float | None = None,
    ) -> AsyncIterator[BrokerSession]:
        """Grant a lease, register under it (`listeners` names each address), keep it alive.

        `give_up_s`: how long the keeper tolerates an unreachable store (see `LeaseKeeper`).
        """
        lease = await kv.grant_lease(ttl_s)
        try:
            registration = await register_broker(
                kv, broker_id, addresses, lease, wait=wait_for_id, keys=keys, listeners=listeners
            )
            session = cls(kv, keys, lease, registration, give_up_s=give_up_s)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.keeper.run)
                yield session
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                try:
                    await kv.revoke_lease(lease.id)
                except MetaStoreError:
                    pass  # already gone, or the store is down: the lease lapses on its own

    async def campaign(self) -> ControllerRecord:
        """Block until this broker is the controller; returns (and keeps) the term."""
        self.term = await campaign(self._kv, self.registration.broker_id, self.lease, keys=self._keys)
        return self.term

    def fence(self) -> list[Compare]:
        """Compares that make a write fail once this broker is no longer the controller of its term."""
        assert self.term is not None, "fence() before campaign()"
        return fence_for(self.term, self._keys)

    async def resign(self) -> None:
        if self.term is not None:
            await resign(self._kv, self.term, keys=self._keys)
            self.term = None
