"""A control-plane stand-in for replication tests, built from the real metastore code.

Partition states live in `minilog.metastore` records on a `MemoryStore`
(the same `create_topic`, `update_partition_state` compare-and-swap the
etcd control plane uses); the stand-in watches them and calls each
broker's `ReplicaManager.apply_partition_state` in commit order, as the
control helper's controller does. Each broker gets a `ClusterLink`
(`StandInLink`) whose `alter_isr` is the same guarded CAS. Nothing of the
replica manager is mocked: brokers are real `Broker`s in this trio run,
on real sockets (127.0.0.1/2/3), with real data dirs.

`Cut` is a TCP proxy per (follower, leader) pair, so a test can cut one
follower off from one leader and let it back, on real sockets.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import trio

from minilog.broker._services import PartitionState as LinkState
from minilog.broker.app import Broker
from minilog.broker.config import BrokerConfig
from minilog.broker.metadata import TopicMeta
from minilog.metastore import (
    ClusterKeys,
    MemoryStore,
    PartitionState,
    create_topic,
    get_partition_state,
    update_partition_state,
)
from minilog.protocol import ApiKey, FrameDecoder, build_batch, encode_request

KEYS = ClusterKeys()
DEADLINE_S = 20.0


def name_led_by(base: str, leader: int, brokers: int = 3) -> str:
    """A topic name whose partition 0 `create_topic` gives to `leader` first (it rotates
    the assignment by crc32(name); brokers are 1..n)."""
    for i in range(1000):
        name = f"{base}{i}"
        if zlib.crc32(name.encode()) % brokers == leader - 1:
            return name
    raise AssertionError("no name found")


def link_state(state: PartitionState) -> LinkState:
    return LinkState(state.leader, state.leader_epoch, state.replicas, state.isr, state.version)


class Cut:
    """A TCP proxy to one broker; `block()` drops every connection and refuses new ones
    until `unblock()` (the follower behind it sees the leader vanish)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.blocked = False
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self._streams: set[trio.SocketStream] = set()
        self.peers: set[str] = set()              # source addresses seen

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.address = listeners[0].socket.getsockname()[:2]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def block(self) -> None:
        self.blocked = True
        for s in list(self._streams):
            with contextlib.suppress(Exception):
                s.socket.close()

    def unblock(self) -> None:
        self.blocked = False

    async def _handle(self, client: trio.SocketStream) -> None:
        self.peers.add(client.socket.getpeername()[0])
        if self.blocked:
            await client.aclose()
            return
        try:
            server = await trio.open_tcp_stream(*self.target)
        except OSError:
            await client.aclose()
            return
        self._streams |= {client, server}
        try:
            async with trio.open_nursery() as nursery:
                async def pump(a: trio.SocketStream, b: trio.SocketStream) -> None:
                    try:
                        while data := await a.receive_some(1 << 16):
                            if self.blocked:
                                break
                            await b.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
                    nursery.cancel_scope.cancel()
                nursery.start_soon(pump, client, server)
                nursery.start_soon(pump, server, client)
        finally:
            self._streams -= {client, server}
            for s in (client, server):
                with contextlib.suppress(Exception):
                    s.socket.close()


class StandInLink:
    """One broker's `ClusterLink` over the stand-in."""

    def __init__(self, control: StandInControl, broker_id: int) -> None:
        self.control = control
        self._broker_id = broker_id
        self.alter_calls = 0

    @property
    def broker_id(self) -> int:
        return self._broker_id

    def broker_address(self, broker_id: int) -> tuple[str, int] | None:
        cut = self.control.cuts.get((self._broker_id, broker_id))
        if cut is not None:
            return cut.address
        broker = self.control.brokers.get(broker_id)
        if broker is None or not broker.started.is_set() or broker.stopping:
            return None
        return broker.host, broker.port

    async def alter_isr(self, topic: str, partition: int, leader_epoch: int,
                        isr: tuple[int, ...]) -> LinkState | None:
        self.alter_calls += 1
        fenced = False

        def change(s: PartitionState) -> PartitionState | None:
            nonlocal fenced
            fenced = s.leader != self._broker_id or s.leader_epoch != leader_epoch
            return None if fenced else replace(s, isr=tuple(isr))

        stored = await update_partition_state(self.control.kv, topic, partition, change)
        return None if fenced else link_state(stored)


class StandInControl:
    """Brokers, topics and partition states (see the module docstring)."""

    def __init__(self, kv: MemoryStore, base_dir: str, settings: dict[str, Any]) -> None:
        self.kv = kv
        self.base_dir = base_dir
        self.settings = settings
        self.brokers: dict[int, Broker] = {}
        self.links: dict[int, StandInLink] = {}
        self.topics: dict[str, TopicMeta] = {}
        self.cuts: dict[tuple[int, int], Cut] = {}
        self.applied = 0

    async def start_broker(self, nursery: trio.Nursery, broker_id: int) -> Broker:
        config = BrokerConfig.from_sources(self.settings)
        broker = Broker(config, os.path.join(self.base_dir, f"b{broker_id}"),
                        host=f"127.0.0.{broker_id}", port=0, broker_id=broker_id,
                        group_coordinator=False)
        self.brokers[broker_id] = broker
        link = self.links[broker_id] = StandInLink(self, broker_id)
        broker.replicas.attach_link(link)
        await nursery.start(broker.run)
        return broker

    async def cut(self, nursery: trio.Nursery, follower: int, leader: int) -> Cut:
        """Route `follower`'s fetches from `leader` through a proxy (before it connects)."""
        b = self.brokers[leader]
        cut = Cut((b.host, b.port))
        await nursery.start(cut.run)
        self.cuts[(follower, leader)] = cut
        return cut

    async def create_topic(self, name: str, partitions: int, replication_factor: int,
                           configs: dict[str, str] | None = None) -> TopicMeta:
        await create_topic(self.kv, name, partitions, replication_factor, sorted(self.brokers),
                           configs=configs or {}, keys=KEYS)
        meta = TopicMeta(name, name, partitions, replication_factor, configs=dict(configs or {}))
        self.topics[name] = meta
        return meta

    async def state(self, topic: str, partition: int) -> PartitionState:
        return await get_partition_state(self.kv, topic, partition, KEYS)

    async def elect(self, topic: str, partition: int, leader: int,
                    isr: tuple[int, ...] | None = None) -> PartitionState:
        """The controller's move: `leader` leads at the next epoch."""
        def change(s: PartitionState) -> PartitionState:
            return replace(s, leader=leader, leader_epoch=s.leader_epoch + 1,
                           isr=tuple(isr) if isr is not None else s.isr)
        return await update_partition_state(self.kv, topic, partition, change)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Watch partition states; apply each to every broker that holds or held a replica."""
        prefix = f"{KEYS.root}/partitions/".encode()
        async with self.kv.watch(prefix, prefix=True, start_revision=1) as events:
            task_status.started()
            async for event in events:
                if event.kv is None or not event.kv.value:
                    continue
                state = PartitionState.from_kv(event.kv)
                _, topic, p = event.kv.key.decode().rsplit("/", 2)
                meta = self.topics.get(topic)
                if meta is None:
                    continue
                for broker_id, broker in sorted(self.brokers.items()):
                    if broker.started.is_set() and not broker.stopping:
                        if broker_id in state.replicas or broker.replicas.partition(topic, int(p)):
                            await broker.replicas.apply_partition_state(meta, int(p),
                                                                       link_state(state))
                self.applied += 1


@contextlib.asynccontextmanager
async def cluster(tmp_path: Any, brokers: int = 3, settings: dict[str, Any] | None = None,
                  cuts: tuple[tuple[int, int], ...] = ()
                  ) -> AsyncIterator[tuple[StandInControl, trio.Nursery]]:
    """`brokers` brokers (ids 1..n on 127.0.0.1..n) and the stand-in control running."""
    async with MemoryStore.open() as kv, trio.open_nursery() as nursery:
        control = StandInControl(kv, str(tmp_path), {"replica.fetch.backoff.ms": 50,
                                                     "replica.fetch.wait.max.ms": 200,
                                                     **(settings or {})})
        for i in range(1, brokers + 1):
            await control.start_broker(nursery, i)
        for follower, leader in cuts:
            await control.cut(nursery, follower, leader)
        await nursery.start(control.run)
        try:
            yield control, nursery
        finally:
            for b in control.brokers.values():
                b.request_shutdown()
            with trio.move_on_after(DEADLINE_S):
                while not all(b.replicas.partitions() == [] for b in control.brokers.values()):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


async def wait_for(predicate: Any, what: str, timeout_s: float = DEADLINE_S) -> None:
    """Wait until `predicate()` holds (checked every 10 ms of trio time), or fail."""
    with trio.move_on_after(timeout_s):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting for: {what}")


class Client:
    """A raw native-protocol client on one connection (produce, fetch)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder("client")
        self.cid = 0

    @classmethod
    async def connect(cls, broker: Broker) -> Client:
        return cls(await trio.open_tcp_stream(broker.host, broker.port))

    async def request(self, api_key: int, payload: dict[str, Any],
                      attachments: tuple[Any, ...] = ()) -> Any:
        self.cid += 1
        await self.stream.send_all(b"".join(
            bytes(p) for p in encode_request(api_key, 0, self.cid, "tests", payload, attachments)))
        while True:
            frame: Any = self.decoder.next_frame()
            if isinstance(frame, tuple):
                assert frame.correlation_id == self.cid
                return frame
            data = await self.stream.receive_some(1 << 20)
            assert data, "broker closed the connection"
            self.decoder.feed(data)

    async def produce(self, topic: str, partition: int, batch: bytes, *, acks: int = -1,
                      timeout_ms: int = 10_000) -> dict[str, Any]:
        frame = await self.request(ApiKey.PRODUCE, {"acks": acks, "timeout_ms": timeout_ms, "topics": [
            {"topic": topic, "partitions": [{"partition": partition, "records": 0}]}]}, (batch,))
        result: dict[str, Any] = frame.payload["topics"][0]["partitions"][0]
        return result

    async def fetch(self, topic: str, partition: int, offset: int, *, epoch: int = -1) -> dict[str, Any]:
        frame = await self.request(ApiKey.FETCH, {
            "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
            "isolation_level": 0, "topics": [{"topic": topic, "partitions": [
                {"partition": partition, "fetch_offset": offset, "partition_max_bytes": 1 << 20,
                 "current_leader_epoch": epoch}]}]})
        result: dict[str, Any] = frame.payload["topics"][0]["partitions"][0]
        return result

    async def aclose(self) -> None:
        await self.stream.aclose()


def batch(*values: bytes, **kw: Any) -> bytes:
    return build_batch(list(values), timestamps=1_700_000_000_000, **kw)
