"""Keeps a `ClusterPicture` current: one prefix read of the cluster's root, then a watch.

Theory of operation (docs/cluster.md, "The picture"): read every key under
the root (revision R), then watch the root from R + 1. etcd delivers each
change once, in revision order, so the picture never misses or repeats a
change. When the watch ends (`Compacted`: we fell behind the history etcd
keeps; `Unavailable`: etcd is down or restarted) the loop reads again and
watches again from the new read's revision + 1, after a backoff; the
reset picture is compared by whoever cares (the applier and the controller
are level-triggered: they act on the picture as it is, not on the events).

Whole revisions: etcd sends all the events of one transaction in one watch
message, and the store yields the events of a message with no scheduling
point in between; waiters woken by `_notify` run only when this task next
blocks (on the network), so no reader ever sees half a transaction.

`changed` is a `trio.Event` swapped after every applied batch: waiters
(`wait_changed`, `wait_revision`, `wait_until`) re-check their condition
each time it fires, so a late waiter misses nothing.

Error handling: store errors never escape `run`; they are logged once per
outage and retried with a capped exponential backoff. While etcd is down
the picture keeps its last state (the data plane serves on it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import trio

from minilog.metastore import Compacted, Event, KVStore, MetaStoreError, Unavailable

from .picture import ClusterPicture

__all__ = ["MetadataFollower", "Backoff"]

log = logging.getLogger("minilog.broker.cluster")


class Backoff:
    """Capped exponential backoff: `await backoff.sleep()` after each failure, `reset()` after a success."""

    def __init__(self, first_s: float = 0.05, max_s: float = 2.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._next_s = first_s

    def reset(self) -> None:
        self._next_s = self.first_s

    async def sleep(self) -> None:
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        await trio.sleep(delay)


class MetadataFollower:
    """Reads and watches the cluster's root into `picture`.

    Args:
        kv: the store.
        picture: the picture to keep current (its `keys` name the root).
        on_change: called (synchronously) after each applied batch of changes.

    Task-safety: one task runs `run`; the waiters may be called from any task.
    """

    def __init__(self, kv: KVStore, picture: ClusterPicture,
                 on_change: Callable[[], None] | None = None) -> None:
        self.kv = kv
        self.picture = picture
        self._on_change = on_change
        self._changed = trio.Event()
        self.resets = 0              # full reads done (1 after a clean start)
        self.connected = False       # a watch is open

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
        if self._on_change is not None:
            self._on_change()

    def change_event(self) -> trio.Event:
        """The event the next change sets (take it, do work, then wait on it: no change is missed)."""
        return self._changed

    async def wait_changed(self) -> None:
        """Return after the next applied change (or reset)."""
        await self._changed.wait()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds on the picture (checked after each change)."""
        while not condition():
            await self._changed.wait()

    async def wait_revision(self, revision: int) -> None:
        """Return once the picture reflects `revision` (a write this broker made)."""
        await self.wait_until(lambda: self.picture.revision >= revision)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read, then watch, forever; `started` after the first successful read."""
        backoff = Backoff()
        started = False
        prefix = self.picture.keys.prefix()
        while True:
            try:
                got = await self.kv.get(prefix, prefix=True)
                self.picture.reset(got.kvs, got.revision)
                self.resets += 1
                self._notify()
                if not started:
                    task_status.started()
                    started = True
                async with self.kv.watch(prefix, prefix=True, start_revision=got.revision + 1) as events:
                    self.connected = True
                    backoff.reset()
                    await self._follow(events)
            except Compacted:
                log.info("metadata watch fell behind etcd's history; reading everything again")
            except Unavailable as exc:
                if self.connected or self.resets == 0:
                    log.warning("etcd unavailable (%s); the picture keeps its last state", exc)
            except MetaStoreError as exc:
                log.warning("metadata watch failed: %s; reading everything again", exc)
            self.connected = False
            await backoff.sleep()

    async def _follow(self, events: AsyncIterator[Event]) -> None:
        """Apply events until the watch ends (it raises; it never ends quietly)."""
        async for event in events:
            if self.picture.apply(event):
                self._notify()       # waiters run once this task blocks: after the whole message
        raise Unavailable("etcd watch ended")
