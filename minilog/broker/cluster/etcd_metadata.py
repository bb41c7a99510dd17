"""`MetadataStore` on etcd: a cluster's topics, shared by every broker.

Reads come from the picture (memory, synchronous); writes are etcd
transactions (minilog.metastore), each followed by a wait until this
broker's picture reflects it, so a broker that created a topic answers
METADATA for it at once. Any broker may write: racing creators are safe
(a creation is guarded by "topic key missing", a change by the key's
mod_revision), and partition states are only ever created here, never
changed (that is the controller's and the leaders' business).

Replica placement (`new_topic`, `with_partitions`): `assign_replicas` over
the live brokers, rotated by the topic name's CRC, so replicas and
preferred leaders spread evenly.

Producer ids come from etcd in blocks of `PRODUCER_ID_BLOCK`
(`allocate_producer_ids`), so no two brokers ever hand out the same id.

Error handling: etcd errors propagate as `MetaStoreError`s (`Unavailable`
when etcd is down); the topic admin turns them into error codes.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable
from dataclasses import replace

import trio

from minilog.metastore import (
    KVStore,
    TopicRecord,
    Unavailable,
    allocate_producer_ids,
    assign_replicas,
    delete_topic,
    put_new_topic,
    update_topic,
)

from ..metadata import MetadataStore, ReplicaPlacementError, TopicMeta, validate_topic_name
from .follower import MetadataFollower
from .picture import ClusterPicture

__all__ = ["EtcdMetadata", "PRODUCER_ID_BLOCK"]

PRODUCER_ID_BLOCK = 1000
CATCH_UP_TIMEOUT_S = 10.0   # from a write to this broker's picture showing it


def _record(meta: TopicMeta) -> TopicRecord:
    return TopicRecord(meta.name, meta.assignment, dict(meta.configs), meta.topic_id, meta.internal)


class EtcdMetadata(MetadataStore):
    """The metadata of a cluster (see the module docstring). `attach` before use."""

    def __init__(self, picture: ClusterPicture) -> None:
        self.picture = picture
        self.cluster_id = ""
        self._kv: KVStore | None = None
        self._follower: MetadataFollower | None = None
        self._pids = range(0)
        self._pid_next = 0
        self._pid_lock = trio.Lock()

    def attach(self, kv: KVStore, follower: MetadataFollower) -> None:
        self._kv = kv
        self._follower = follower

    @property
    def kv(self) -> KVStore:
        assert self._kv is not None, "attach() first"
        return self._kv

    async def _caught_up(self, condition: Callable[[], bool]) -> None:
        """Wait until this broker's picture shows a write made here (bounded: etcd may go
        down right after the write; then `Unavailable`, the write's effect unknown)."""
        assert self._follower is not None
        with trio.move_on_after(CATCH_UP_TIMEOUT_S):
            await self._follower.wait_until(condition)
            return
        raise Unavailable("the write was made but the metadata watch did not show it in time")

    async def wait_for_topic(self, name: str) -> None:
        """Wait (bounded) until the picture shows topic `name` (created by someone else)."""
        await self._caught_up(lambda: name in self.picture.topics)

    # -- reads --------------------------------------------------------------------------------

    async def load(self, broker_id: int) -> None:
        self.cluster_id = self.picture.cluster_id

    def topic(self, name: str) -> TopicMeta | None:
        return self.picture.topic_meta(name)

    def topic_names(self) -> list[str]:
        return sorted(self.picture.topics)

    def topics_snapshot(self) -> dict[str, TopicMeta]:
        return self.picture.topic_metas()

    def check_replication_factor(self, replication_factor: int) -> str | None:
        live = len(self.picture.brokers)
        if replication_factor < 1:
            return "replication factor must be at least 1"
        if replication_factor > live:
            return (f"replication factor {replication_factor} is larger than the {live} live "
                    f"broker{'s' if live != 1 else ''}")
        return None

    def _place(self, name: str, partitions: int, replication_factor: int) -> list[tuple[int, ...]]:
        brokers = self.picture.live_broker_ids()
        problem = self.check_replication_factor(replication_factor)
        if problem:
            raise ReplicaPlacementError(problem)
        start = zlib.crc32(name.encode()) % len(brokers)
        try:
            return assign_replicas(partitions, replication_factor, brokers, start_index=start)
        except ValueError as exc:
            raise ReplicaPlacementError(str(exc)) from exc

    def new_topic(self, name: str, partitions: int, replication_factor: int,
                  configs: dict[str, str], *, internal: bool = False) -> TopicMeta:
        assert validate_topic_name(name) is None
        assignment = tuple(self._place(name, partitions, replication_factor))
        return TopicMeta(name, uuid.uuid4().hex, partitions, replication_factor=replication_factor,
                         configs=dict(configs), internal=internal, assignment=assignment)

    def with_partitions(self, name: str, count: int) -> TopicMeta:
        meta = self.picture.topic_meta(name)
        assert meta is not None and count > meta.partitions
        # Place the new partitions as a topic of their own would be, continuing the rotation.
        extra = self._place(f"{name}-{meta.partitions}", count - meta.partitions, meta.replication_factor)
        return replace(meta, partitions=count, assignment=meta.assignment + tuple(extra))

    # -- writes -------------------------------------------------------------------------------

    async def put(self, meta: TopicMeta) -> None:
        """Create the topic, or store its new partitions / configs (compare-and-swap)."""
        current = self.picture.topics.get(meta.name)
        if current is None or current.topic_id != meta.topic_id:
            await put_new_topic(self.kv, _record(meta), keys=self.picture.keys)
        else:
            def change(record: TopicRecord) -> TopicRecord:
                assignment = record.assignment + meta.assignment[len(record.assignment):]
                return replace(record, assignment=assignment, configs=dict(meta.configs))

            await update_topic(self.kv, meta.name, change, keys=self.picture.keys)
        await self._caught_up(lambda: self._reflects(meta))

    def _reflects(self, meta: TopicMeta) -> bool:
        got = self.picture.topics.get(meta.name)
        if got is None or got.partitions < meta.partitions:
            return False
        return all((meta.name, p) in self.picture.states for p in range(meta.partitions))

    async def delete(self, name: str) -> None:
        record = await delete_topic(self.kv, name, keys=self.picture.keys)
        await self._caught_up(lambda: self.picture.topics.get(name, None) is None
                              or self.picture.topics[name].topic_id != record.topic_id)

    async def set_configs(self, name: str, configs: dict[str, str]) -> TopicMeta:
        record = await update_topic(self.kv, name, lambda r: replace(r, configs=dict(configs)),
                                    keys=self.picture.keys)
        await self._caught_up(lambda: (t := self.picture.topics.get(name)) is None
                              or dict(t.configs) == dict(record.configs))
        meta = self.picture.topic_meta(name)
        assert meta is not None
        return meta

    # -- producer ids -------------------------------------------------------------------------

    async def allocate_producer_id(self) -> int:
        async with self._pid_lock:
            if self._pid_next >= self._pids.stop:
                self._pids = await allocate_producer_ids(self.kv, PRODUCER_ID_BLOCK, keys=self.picture.keys)
                self._pid_next = self._pids.start
            pid = self._pid_next
            self._pid_next += 1
            return pid

    def producer_id_issued(self, producer_id: int) -> bool:
        return 0 <= producer_id < max(self.picture.producer_id_next, self._pid_next)
