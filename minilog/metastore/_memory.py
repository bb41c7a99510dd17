"""An in-process metadata store with etcd v3's semantics, driven by trio's clock.

It exists for tests and for the seeded whole-cluster simulation: no process,
no network, and time is trio's clock, so `trio.testing.MockClock` decides
when leases expire. The contract suite runs every test against this store
and a real etcd, which keeps the two honest.

Rules (each one is etcd's):
- One global revision, 1 in an empty store. A transaction that writes
  anything raises it by exactly one; every key it writes gets that revision.
- Per key: `create_revision`, `mod_revision`, `version` (1 on creation,
  +1 per put); a delete removes the key, and a later put starts at version 1.
- A transaction evaluates its compares and runs its ops with no scheduling
  point in between: atomic by construction (one trio thread, no `await`).
- Leases expire `ttl_s` after their grant or last keep-alive, measured on
  `trio.current_time()`. Expiry revokes the lease: its keys are deleted in
  one revision. A lease past its deadline is gone even if the expiry task
  has not run yet (keep-alive and put raise `LeaseNotFound`).
- History is a list of events in revision order. A watch is a cursor into
  it, so a watcher never misses or repeats an event, however slow. History
  before the compaction revision is dropped; a watcher behind it gets
  `Compacted`. `history_revisions_max` bounds memory the way etcd's
  revision-mode auto-compaction does.

Theory of operation: every mutation goes through `_commit`, which appends
to the history, bumps the revision and wakes watchers (one `trio.Event`
swapped per commit). A single background task, owned by the `open()`
context's nursery, sleeps until the earliest lease deadline (or a change to
the leases) and revokes what has expired.

Fault injection for the simulation: `available = False` makes every call
raise `Unavailable` (as an etcd that is down), and open watches end with it;
`call_delay_s` delays each request by a (seeded) amount of virtual time.

Task-safety: all methods may be called from any task of the trio run that
opened the store; none from another thread.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import trio

from ._types import (
    compare_holds,
    Compacted,
    Compare,
    Delete,
    DeleteResult,
    Event,
    EventType,
    FutureRevision,
    Get,
    InvalidRequest,
    KeyValue,
    Lease,
    LeaseInfo,
    LeaseNotFound,
    Op,
    OpResult,
    Put,
    PutResult,
    RangeResult,
    StoreStatistics,
    TxnResult,
    Unavailable,
)

__all__ = ["MemoryStore"]

HISTORY_REVISIONS_MAX = 100_000  # revisions kept before automatic compaction
TXN_OPS_MAX = 128  # compares, and ops per branch, in one txn (etcd's --max-txn-ops default)
LEASE_ID_FIRST = 0x694D0001  # arbitrary non-zero start; ids then count up (deterministic)


@dataclass(slots=True)
class _LeaseState:
    ttl_s: int
    deadline: float
    keys: set[bytes] = field(default_factory=set)


def _matches(key: bytes, want: bytes, prefix: bool) -> bool:
    return key.startswith(want) if prefix else key == want


class MemoryStore:
    """etcd's KV, Lease and Watch in one process. Open with `async with MemoryStore.open() as kv`."""

    def __init__(
        self,
        *,
        history_revisions_max: int = HISTORY_REVISIONS_MAX,
        call_delay_s: Callable[[], float] | None = None,
    ) -> None:
        self._available = True
        self._call_delay_s = call_delay_s
        self._requests = 0
        self._unavailable = 0
        self._watches_open = 0
        self._history_revisions_max = history_revisions_max
        self._revision = 1
        self._keys: dict[bytes, KeyValue] = {}
        self._history: list[Event] = []  # events with revision >= _compact_revision, in order
        self._history_base = 0  # absolute index of _history[0]
        self._compact_revision = 0
        self._changed = trio.Event()
        self._leases: dict[int, _LeaseState] = {}
        self._leases_changed = trio.Event()
        self._next_lease_id = LEASE_ID_FIRST

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        *,
        history_revisions_max: int = HISTORY_REVISIONS_MAX,
        call_delay_s: Callable[[], float] | None = None,
    ) -> AsyncIterator[MemoryStore]:
        """The store with its lease-expiry task running; both end with the context.

        Args:
            history_revisions_max: revisions of history kept for watches.
            call_delay_s: called once per request for the seconds it waits
                before being applied (the simulation passes a seeded random
                delay, so requests from different tasks interleave and reorder
                as they would over a network); None: no delay.
        """
        store = cls(history_revisions_max=history_revisions_max, call_delay_s=call_delay_s)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store._expire_leases)
            try:
                yield store
            finally:
                nursery.cancel_scope.cancel()

    @property
    def available(self) -> bool:
        """False makes every call raise `Unavailable`, and open watches end with it (an etcd that is down)."""
        return self._available

    @available.setter
    def available(self, value: bool) -> None:
        self._available = value
        self._changed.set()  # wake watchers so that they notice
        self._changed = trio.Event()

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(self._requests, self._unavailable, self._watches_open)

    @property
    def revision(self) -> int:
        """The current revision (for the simulation's trace; clients read it from results)."""
        return self._revision

    # -- the KVStore interface -------------------------------------------------

    async def get(self, key: bytes, *, prefix: bool = False, limit: int = 0) -> RangeResult:
        await self._enter()
        return self._apply_txn([], [Get(key, prefix, limit)], []).responses[0]  # type: ignore[return-value]

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> PutResult:
        await self._enter()
        return self._apply_txn([], [Put(key, value, lease)], []).responses[0]  # type: ignore[return-value]

    async def delete(self, key: bytes, *, prefix: bool = False) -> DeleteResult:
        await self._enter()
        return self._apply_txn([], [Delete(key, prefix)], []).responses[0]  # type: ignore[return-value]

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        await self._enter()
        return self._apply_txn(compare, success, failure)

    async def grant_lease(self, ttl_s: int) -> Lease:
        await self._enter()
        if ttl_s <= 0:
            raise InvalidRequest(f"lease TTL must be positive, not {ttl_s}")
        lease_id = self._next_lease_id
        self._next_lease_id += 1
        self._leases[lease_id] = _LeaseState(ttl_s, trio.current_time() + ttl_s)
        self._wake_lease_task()
        return Lease(lease_id, ttl_s)

    async def keep_alive(self, lease_id: int) -> int:
        await self._enter()
        state = self._live_lease(lease_id)
        state.deadline = trio.current_time() + state.ttl_s
        self._wake_lease_task()
        return state.ttl_s

    async def revoke_lease(self, lease_id: int) -> None:
        await self._enter()
        self._live_lease(lease_id)
        self._revoke(lease_id)

    async def lease_info(self, lease_id: int) -> LeaseInfo:
        await self._enter()
        state = self._live_lease(lease_id)
        left_s = max(0, math.floor(state.deadline - trio.current_time()))
        return LeaseInfo(lease_id, left_s, state.ttl_s, sorted(state.keys))

    async def compact(self, revision: int) -> None:
        await self._enter()
        if revision > self._revision:
            raise FutureRevision(f"revision {revision} is after the current {self._revision}")
        if revision <= self._compact_revision:
            raise Compacted(self._compact_revision)
        self._compact_to(revision)

    @asynccontextmanager
    async def watch(
        self, key: bytes, *, prefix: bool = False, start_revision: int = 0
    ) -> AsyncIterator[AsyncIterator[Event]]:
        await self._enter()
        start = start_revision if start_revision > 0 else self._revision + 1
        events = self._events(key, prefix, start)
        self._watches_open += 1
        try:
            yield events
        finally:
            self._watches_open -= 1
            await events.aclose()

    # -- internals ---------------------------------------------------------------

    async def _enter(self) -> None:
        self._requests += 1
        if self._call_delay_s is not None:
            await trio.sleep(self._call_delay_s())
        else:
            await trio.lowlevel.checkpoint()  # a scheduling point, as a network round trip would be
        if not self.available:
            self._unavailable += 1
            raise Unavailable("memory store marked unavailable")

    async def _events(self, key: bytes, prefix: bool, start: int) -> AsyncGenerator[Event, None]:
        if start < self._compact_revision:
            raise Compacted(self._compact_revision)
        pos = self._history_base + bisect.bisect_left(self._history, start, key=lambda e: e.revision)
        while True:
            changed = self._changed
            if not self.available:
                self._unavailable += 1
                raise Unavailable("memory store marked unavailable")
            if pos < self._history_base:
                raise Compacted(self._compact_revision)  # fell behind a compaction
            while pos - self._history_base < len(self._history):
                event = self._history[pos - self._history_base]
                pos += 1
                if _matches(event.kv.key, key, prefix):
                    yield event
                    if pos < self._history_base:
                        raise Compacted(self._compact_revision)
            await changed.wait()

    def _live_lease(self, lease_id: int) -> _LeaseState:
        state = self._leases.get(lease_id)
        if state is None:
            raise LeaseNotFound(lease_id)
        if state.deadline <= trio.current_time():
            self._revoke(lease_id)  # expired; the expiry task just has not run yet
            raise LeaseNotFound(lease_id)
        return state

    def _wake_lease_task(self) -> None:
        self._leases_changed.set()
        self._leases_changed = trio.Event()

    async def _expire_leases(self) -> None:
        while True:
            now = trio.current_time()
            for lease_id in [i for i, s in self._leases.items() if s.deadline <= now]:
                self._revoke(lease_id)
            deadline = min((s.deadline for s in self._leases.values()), default=math.inf)
            with trio.move_on_at(deadline):
                await self._leases_changed.wait()

    def _revoke(self, lease_id: int) -> None:
        state = self._leases.pop(lease_id)
        self._wake_lease_task()
        if state.keys:
            self._apply_txn([], [Delete(k) for k in sorted(state.keys)], [])

    def _apply_txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> TxnResult:
        """The one place the key space changes. No await: atomic."""
        if max(len(compare), len(success), len(failure)) > TXN_OPS_MAX:
            raise InvalidRequest("too many operations in txn request")
        succeeded = all(compare_holds(c, self._keys.get(c.key)) for c in compare)
        ops = success if succeeded else failure
        self._validate(ops)
        new_revision = self._revision + 1
        events: list[Event] = []
        responses: list[OpResult] = []
        for op in ops:
            if isinstance(op, Get):
                kvs = sorted((kv for k, kv in self._keys.items() if _matches(k, op.key, op.prefix)), key=lambda kv: kv.key)
                count = len(kvs)
                if op.limit:
                    kvs = kvs[: op.limit]
                responses.append(RangeResult(kvs, count, 0))
            elif isinstance(op, Put):
                prev = self._keys.get(op.key)
                if prev is None:
                    kv = KeyValue(op.key, op.value, new_revision, new_revision, 1, op.lease)
                else:
                    kv = replace(prev, value=op.value, mod_revision=new_revision, version=prev.version + 1, lease=op.lease)
                    if prev.lease and prev.lease != op.lease and prev.lease in self._leases:
                        self._leases[prev.lease].keys.discard(op.key)
                if op.lease:
                    self._leases[op.lease].keys.add(op.key)
                self._keys[op.key] = kv
                events.append(Event(EventType.PUT, kv))
                responses.append(PutResult(0, prev))
            else:
                gone = sorted((kv for k, kv in self._keys.items() if _matches(k, op.key, op.prefix)), key=lambda kv: kv.key)
                for kv in gone:
                    del self._keys[kv.key]
                    if kv.lease in self._leases:
                        self._leases[kv.lease].keys.discard(kv.key)
                    events.append(Event(EventType.DELETE, KeyValue(kv.key, b"", 0, new_revision, 0, 0)))
                responses.append(DeleteResult(0, len(gone), gone))
        if events:
            self._commit(new_revision, events)
        # Every response of a transaction carries the revision after it (etcd's txn header).
        return TxnResult(succeeded, self._revision, [_with_revision(r, self._revision) for r in responses])

    def _validate(self, ops: Sequence[Op]) -> None:
        """Reject what etcd rejects (`checkIntervals`), before anything changes.

        A key may be put at most once, and not inside a range the same
        transaction deletes; overlapping deletes are allowed.
        """
        puts: set[bytes] = set()
        deletes: list[Delete] = []
        for op in ops:
            if not op.key and not (isinstance(op, Get | Delete) and op.prefix):
                raise InvalidRequest("key is not provided")
            if isinstance(op, Put):
                if op.key in puts or any(_matches(op.key, d.key, d.prefix) for d in deletes):
                    raise InvalidRequest("duplicate key given in txn request")
                if op.lease:
                    self._live_lease(op.lease)
                puts.add(op.key)
            elif isinstance(op, Delete):
                if any(_matches(k, op.key, op.prefix) for k in puts):
                    raise InvalidRequest("duplicate key given in txn request")
                deletes.append(op)

    def _commit(self, revision: int, events: list[Event]) -> None:
        assert revision == self._revision + 1
        assert all(e.revision == revision for e in events)
        self._revision = revision
        self._history.extend(events)
        if revision - self._compact_revision > self._history_revisions_max:
            self._compact_to(revision - self._history_revisions_max)
        self._changed.set()
        self._changed = trio.Event()

    def _compact_to(self, revision: int) -> None:
        drop = bisect.bisect_left(self._history, revision, key=lambda e: e.revision)
        del self._history[:drop]
        self._history_base += drop
        self._compact_revision = revision
        self._changed.set()  # watchers behind the compaction must find out
        self._changed = trio.Event()


def _with_revision(result: OpResult, revision: int) -> OpResult:
    return replace(result, revision=revision)
