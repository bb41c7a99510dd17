"""Cluster metadata on a `KVStore`: key layout, records, and the compare-and-swap operations.

This is what replication (issue 9) builds on. Everything here is a pure
function of its inputs or one short store conversation; the only long-lived
object (lease, registration, election) is `BrokerSession` in `_session.py`.

Key layout (root defaults to `/minilog`; every value is UTF-8 JSON):

    /minilog/brokers/<id>                 BrokerRegistration, attached to the broker's lease
    /minilog/controller                   ControllerRecord, attached to the controller's lease
    /minilog/topics/<name>                TopicRecord (partition count, replica assignment, configs)
    /minilog/partitions/<name>/<p>        PartitionState (replicas, leader, leader_epoch, isr, version)
    /minilog/producer_ids                 next unallocated producer id
    /minilog/cluster_id                   the cluster's id (created once, by the first broker)
    /minilog/shutdown/<id>                a controlled-shutdown request, under the broker's lease
    /minilog/broker_epochs                the registration epochs the controller has accepted

Epochs come from etcd revisions, so they are monotonic without any counter
of our own: a broker's epoch is its registration's `create_revision`; the
controller epoch is the controller key's `create_revision`.

Rules:
- Partition state changes only by compare-and-swap on the key's
  `mod_revision` (`update_partition_state`). A controller also guards each
  write with `fence`: its controller key must still exist with its epoch,
  so a deposed controller (its lease lapsed, another elected) can write
  nothing, even with a fresh revision (Kafka's controller epoch, enforced by
  the store instead of by every broker).
- Topic creation writes the topic record first (guarded by "missing"), then
  the partition states in transactions of at most `TXN_OPS_MAX` puts, each
  guarded by "missing", so a creation interrupted half-way is completed by
  `ensure_partition_states` and never overwrites a state someone changed.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ._api import KVStore
from ._assignment import assign_replicas
from ._types import Compare, Delete, Get, KeyValue, MetaStoreError, Put, RangeResult, compare_holds

__all__ = [
    "ClusterKeys",
    "BrokerRegistration",
    "ControllerRecord",
    "TopicRecord",
    "PartitionState",
    "NO_LEADER",
    "TXN_OPS_MAX",
    "CAS_ATTEMPTS_MAX",
    "ClusterMetadataError",
    "TopicExists",
    "UnknownTopicOrPartition",
    "NotController",
    "BrokerIdInUse",
    "CasContention",
    "live_brokers",
    "current_controller",
    "create_topic",
    "put_new_topic",
    "update_topic",
    "delete_topic",
    "ensure_partition_states",
    "get_topic",
    "list_topics",
    "get_partition_state",
    "update_partition_state",
    "allocate_producer_ids",
]

NO_LEADER = -1
TXN_OPS_MAX = 64  # ops per transaction we send (etcd's --max-txn-ops default is 128)
CAS_ATTEMPTS_MAX = 64  # compare-and-swap attempts before CasContention


class ClusterMetadataError(MetaStoreError):
    """Base of the cluster-level errors (all are `MetaStoreError`s)."""


class TopicExists(ClusterMetadataError):
    pass


class UnknownTopicOrPartition(ClusterMetadataError):
    pass


class NotController(ClusterMetadataError):
    """The fence failed: the writer's controller epoch is no longer the current one."""


class BrokerIdInUse(ClusterMetadataError):
    """Another live broker holds this broker id's registration."""


class CasContention(ClusterMetadataError):
    """A compare-and-swap lost `CAS_ATTEMPTS_MAX` times in a row."""


@dataclass(frozen=True)
class ClusterKeys:
    """Where each record lives; one etcd can hold several clusters under different roots."""

    root: str = "/minilog"

    def brokers_prefix(self) -> bytes:
        return f"{self.root}/brokers/".encode()

    def broker(self, broker_id: int) -> bytes:
        return f"{self.root}/brokers/{broker_id}".encode()

    def controller(self) -> bytes:
        return f"{self.root}/controller".encode()

    def topics_prefix(self) -> bytes:
        return f"{self.root}/topics/".encode()

    def topic(self, name: str) -> bytes:
        return f"{self.root}/topics/{name}".encode()

    def partitions_prefix(self, topic: str) -> bytes:
        return f"{self.root}/partitions/{topic}/".encode()

    def partition(self, topic: str, partition: int) -> bytes:
        return f"{self.root}/partitions/{topic}/{partition}".encode()

    def producer_ids(self) -> bytes:
        return f"{self.root}/producer_ids".encode()

    def cluster_id(self) -> bytes:
        return f"{self.root}/cluster_id".encode()

    def shutdown_prefix(self) -> bytes:
        return f"{self.root}/shutdown/".encode()

    def shutdown(self, broker_id: int) -> bytes:
        return f"{self.root}/shutdown/{broker_id}".encode()

    def broker_epochs(self) -> bytes:
        return f"{self.root}/broker_epochs".encode()

    def prefix(self) -> bytes:
        """Every key of this cluster."""
        return f"{self.root}/".encode()


def _dump(record: Any) -> bytes:
    return json.dumps(asdict(record), sort_keys=True, separators=(",", ":")).encode()


def _load(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    assert isinstance(value, dict), value
    return value


@dataclass(frozen=True)
class BrokerRegistration:
    broker_id: int
    addresses: tuple[str, ...]  # "host:port" per listener, minilog's first (advertised addresses)
    epoch: int = 0  # the registration's create_revision; filled in when read
    listeners: tuple[str, ...] = ()  # listener name per address ("native", "kafka"); () = native only

    def to_bytes(self) -> bytes:
        return _dump(replace(self, epoch=0))

    @classmethod
    def from_kv(cls, kv: KeyValue) -> BrokerRegistration:
        d = _load(kv.value)
        return cls(int(d["broker_id"]), tuple(d["addresses"]), kv.create_revision, tuple(d.get("listeners", ())))

    def address(self, listener: str = "native") -> tuple[str, int] | None:
        """(host, port) of the named listener, None when this broker has no such listener."""
        names = self.listeners or ("native",)
        for name, address in zip(names, self.addresses):
            if name == listener:
                host, _, port = address.rpartition(":")
                return host.strip("[]"), int(port)
        return None


@dataclass(frozen=True)
class ControllerRecord:
    broker_id: int
    epoch: int = 0  # the controller key's create_revision; filled in when read

    def to_bytes(self) -> bytes:
        return _dump(replace(self, epoch=0))

    @classmethod
    def from_kv(cls, kv: KeyValue) -> ControllerRecord:
        return cls(int(_load(kv.value)["broker_id"]), kv.create_revision)


@dataclass(frozen=True)
class TopicRecord:
    name: str
    assignment: tuple[tuple[int, ...], ...]  # replicas per partition, preferred leader first
    configs: Mapping[str, str] = field(default_factory=dict)  # Kafka's keys: retention.ms, ...
    topic_id: str = ""  # uuid hex, fixed at creation (tells a re-created topic from the old one)
    internal: bool = False  # __consumer_offsets and the like

    @property
    def partitions(self) -> int:
        return len(self.assignment)

    @property
    def replication_factor(self) -> int:
        return len(self.assignment[0])

    def to_bytes(self) -> bytes:
        d: dict[str, Any] = {"name": self.name, "assignment": [list(r) for r in self.assignment]}
        d["configs"] = dict(self.configs)
        if self.topic_id:
            d["topic_id"] = self.topic_id
        if self.internal:
            d["internal"] = True
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TopicRecord:
        d = _load(data)
        assignment = tuple(tuple(int(b) for b in r) for r in d["assignment"])
        return cls(str(d["name"]), assignment, dict(d["configs"]), str(d.get("topic_id", "")), bool(d.get("internal")))


@dataclass(frozen=True)
class PartitionState:
    """Kafka's LeaderAndIsr plus the replica set. `version` counts changes (Kafka's partition epoch)."""

    replicas: tuple[int, ...]
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    version: int = 0
    mod_revision: int = 0  # of the key when read; not stored

    def __post_init__(self) -> None:
        assert self.leader == NO_LEADER or self.leader in self.isr, self
        assert set(self.isr) <= set(self.replicas), self

    def to_bytes(self) -> bytes:
        d = {"replicas": list(self.replicas), "leader": self.leader, "leader_epoch": self.leader_epoch}
        d |= {"isr": list(self.isr), "version": self.version}
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_kv(cls, kv: KeyValue) -> PartitionState:
        d = _load(kv.value)
        return cls(
            tuple(d["replicas"]), int(d["leader"]), int(d["leader_epoch"]), tuple(d["isr"]), int(d["version"]),
            kv.mod_revision,
        )  # fmt: skip

    @classmethod
    def initial(cls, replicas: Sequence[int]) -> PartitionState:
        """A new partition: the preferred replica leads in epoch 0, every replica in sync."""
        return cls(tuple(replicas), replicas[0], 0, tuple(replicas))


async def live_brokers(kv: KVStore, keys: ClusterKeys = ClusterKeys()) -> tuple[dict[int, BrokerRegistration], int]:
    """The registered (lease-alive) brokers by id, and the revision read (watch from it + 1)."""
    got = await kv.get(keys.brokers_prefix(), prefix=True)
    brokers = {r.broker_id: r for r in map(BrokerRegistration.from_kv, got.kvs)}
    return brokers, got.revision


async def current_controller(kv: KVStore, keys: ClusterKeys = ClusterKeys()) -> ControllerRecord | None:
    got = await kv.get(keys.controller())
    return ControllerRecord.from_kv(got.kvs[0]) if got.kvs else None


async def create_topic(
    kv: KVStore,
    name: str,
    partitions: int,
    replication_factor: int,
    brokers: Sequence[int],
    *,
    configs: Mapping[str, str] | None = None,
    fence: Sequence[Compare] = (),
    keys: ClusterKeys = ClusterKeys(),
) -> TopicRecord:
    """Create a topic with replicas spread evenly over `brokers` and its initial partition states.

    Raises:
        TopicExists: a topic of that name exists.
        NotController: `fence` failed.
        ValueError: replication factor above the broker count.
    """
    start = zlib.crc32(name.encode()) % max(1, len(brokers))
    assignment = assign_replicas(partitions, replication_factor, brokers, start_index=start)
    record = TopicRecord(name, tuple(assignment), dict(configs or {}))
    await put_new_topic(kv, record, fence=fence, keys=keys)
    return record


async def put_new_topic(
    kv: KVStore, record: TopicRecord, *, fence: Sequence[Compare] = (), keys: ClusterKeys = ClusterKeys()
) -> int:
    """Store a new topic (its assignment already placed) and its initial partition states.

    Returns the revision of the topic record's creation. Raises `TopicExists`
    (someone created it first: racing creators are safe) or `NotController`.
    """
    name = record.name
    result = await kv.txn(
        [*fence, Compare.missing(keys.topic(name))],
        [Put(keys.topic(name), record.to_bytes())],
        [Get(keys.topic(name)), *(Get(c.key) for c in fence)],
    )
    if not result.succeeded:
        _raise_fenced(fence, result.responses[1:])
        raise TopicExists(name)
    await ensure_partition_states(kv, record, fence=fence, keys=keys)
    return result.revision


async def update_topic(
    kv: KVStore, name: str, fn: Callable[[TopicRecord], TopicRecord], *, keys: ClusterKeys = ClusterKeys()
) -> TopicRecord:
    """Change a topic record by compare-and-swap (configs, more partitions), then create the
    partition states it names that do not exist yet. `fn` must be pure (it may run again).

    Raises:
        UnknownTopicOrPartition: no such topic.
        CasContention: lost `CAS_ATTEMPTS_MAX` races in a row.
    """
    key = keys.topic(name)
    got = await kv.get(key)
    for _ in range(CAS_ATTEMPTS_MAX):
        if not got.kvs:
            raise UnknownTopicOrPartition(name)
        current = got.kvs[0]
        record = fn(TopicRecord.from_bytes(current.value))
        result = await kv.txn([Compare.mod_revision(key, "==", current.mod_revision)], [Put(key, record.to_bytes())], [Get(key)])
        if result.succeeded:
            await ensure_partition_states(kv, record, keys=keys)
            return record
        read = result.responses[0]
        assert isinstance(read, RangeResult)
        got = read
    raise CasContention(f"topic {name}: lost {CAS_ATTEMPTS_MAX} compare-and-swaps in a row")


async def delete_topic(kv: KVStore, name: str, *, keys: ClusterKeys = ClusterKeys()) -> TopicRecord:
    """Delete a topic record and every partition state of it, in one transaction.

    Raises:
        UnknownTopicOrPartition: no such topic.
    """
    key = keys.topic(name)
    result = await kv.txn([Compare.exists(key)], [Get(key), Delete(key), Delete(keys.partitions_prefix(name), prefix=True)])
    if not result.succeeded:
        raise UnknownTopicOrPartition(name)
    read = result.responses[0]
    assert isinstance(read, RangeResult) and read.kvs
    return TopicRecord.from_bytes(read.kvs[0].value)


async def ensure_partition_states(
    kv: KVStore, topic: TopicRecord, *, fence: Sequence[Compare] = (), keys: ClusterKeys = ClusterKeys()
) -> int:
    """Create the missing partition states of `topic` (never touching existing ones); returns how many."""
    existing = await kv.get(keys.partitions_prefix(topic.name), prefix=True)
    have = {kv_.key for kv_ in existing.kvs}
    missing = [p for p in range(topic.partitions) if keys.partition(topic.name, p) not in have]
    created = 0
    for i in range(0, len(missing), TXN_OPS_MAX // 2):
        chunk = missing[i : i + TXN_OPS_MAX // 2]
        pkeys = [keys.partition(topic.name, p) for p in chunk]
        states = [PartitionState.initial(topic.assignment[p]) for p in chunk]
        result = await kv.txn(
            [*fence, *(Compare.missing(k) for k in pkeys)],
            [Put(k, s.to_bytes()) for k, s in zip(pkeys, states)],
            [Get(c.key) for c in fence],
        )
        if not result.succeeded:
            _raise_fenced(fence, result.responses)
            return created + await ensure_partition_states(kv, topic, fence=fence, keys=keys)  # someone raced us
        created += len(chunk)
    return created


async def get_topic(kv: KVStore, name: str, keys: ClusterKeys = ClusterKeys()) -> TopicRecord:
    got = await kv.get(keys.topic(name))
    if not got.kvs:
        raise UnknownTopicOrPartition(name)
    return TopicRecord.from_bytes(got.kvs[0].value)


async def list_topics(kv: KVStore, keys: ClusterKeys = ClusterKeys()) -> dict[str, TopicRecord]:
    got = await kv.get(keys.topics_prefix(), prefix=True)
    return {t.name: t for t in (TopicRecord.from_bytes(x.value) for x in got.kvs)}


async def get_partition_state(kv: KVStore, topic: str, partition: int, keys: ClusterKeys = ClusterKeys()) -> PartitionState:
    got = await kv.get(keys.partition(topic, partition))
    if not got.kvs:
        raise UnknownTopicOrPartition(f"{topic}-{partition}")
    return PartitionState.from_kv(got.kvs[0])


async def update_partition_state(
    kv: KVStore,
    topic: str,
    partition: int,
    fn: Callable[[PartitionState], PartitionState | None],
    *,
    fence: Sequence[Compare] = (),
    keys: ClusterKeys = ClusterKeys(),
) -> PartitionState:
    """Apply `fn` to the partition's state by compare-and-swap on its mod_revision, retrying lost races.

    `fn` gets the current state and returns the new one (its `version` is
    set here: previous + 1) or None for "no change". It may run several
    times (once per lost race), so it must be pure. Returns the state
    stored (with its new `mod_revision`), or the current one when `fn`
    returned None.

    Raises:
        UnknownTopicOrPartition: no such partition state.
        NotController: `fence` failed (a deposed controller).
        CasContention: lost `CAS_ATTEMPTS_MAX` races in a row.
    """
    key = keys.partition(topic, partition)
    current = await get_partition_state(kv, topic, partition, keys)
    for _ in range(CAS_ATTEMPTS_MAX):
        wanted = fn(current)
        if wanted is None:
            return current
        new = replace(wanted, version=current.version + 1, mod_revision=0)
        result = await kv.txn(
            [*fence, Compare.mod_revision(key, "==", current.mod_revision)],
            [Put(key, new.to_bytes())],
            [Get(key), *(Get(c.key) for c in fence)],
        )
        if result.succeeded:
            return replace(new, mod_revision=result.revision)
        _raise_fenced(fence, result.responses[1:])
        read = result.responses[0]
        assert isinstance(read, RangeResult)
        if not read.kvs:
            raise UnknownTopicOrPartition(f"{topic}-{partition}")
        current = PartitionState.from_kv(read.kvs[0])
    raise CasContention(f"{topic}-{partition}: lost {CAS_ATTEMPTS_MAX} compare-and-swaps in a row")


async def allocate_producer_ids(kv: KVStore, block_size: int = 1000, keys: ClusterKeys = ClusterKeys()) -> range:
    """A block of `block_size` producer ids no other caller will ever get (Kafka's ProducerIdsBlock).

    Raises:
        CasContention: lost `CAS_ATTEMPTS_MAX` races in a row.
    """
    assert block_size > 0
    key = keys.producer_ids()
    got = await kv.get(key)
    for _ in range(CAS_ATTEMPTS_MAX):
        if got.kvs:
            start, guard = int(_load(got.kvs[0].value)["next"]), Compare.mod_revision(key, "==", got.kvs[0].mod_revision)
        else:
            start, guard = 0, Compare.missing(key)
        block = range(start, start + block_size)
        nxt = json.dumps({"next": block.stop}).encode()
        result = await kv.txn([guard], [Put(key, nxt)], [Get(key)])
        if result.succeeded:
            return block
        read = result.responses[0]
        assert isinstance(read, RangeResult)
        got = read
    raise CasContention(f"producer ids: lost {CAS_ATTEMPTS_MAX} compare-and-swaps in a row")


def _raise_fenced(fence: Sequence[Compare], reads: Sequence[object]) -> None:
    """Raise NotController when a failed txn's fence reads show the fence no longer holds."""
    for c, read in zip(fence, reads):
        assert isinstance(read, RangeResult)
        if not compare_holds(c, read.kvs[0] if read.kvs else None):
            raise NotController(f"fence failed on {c.key!r} ({c.target} {c.op} {c.operand!r})")
