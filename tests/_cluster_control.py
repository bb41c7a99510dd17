"""In-process clusters for the control-plane tests: N `Broker`s in one trio run, a real etcd.

Each cluster lives under its own etcd root (`etcd://HOST:PORT/<root>`), so tests share the
session's etcd without seeing each other's keys or leases. Brokers listen on free loopback
ports; each runs in its own cancel scope, so a test can stop one abruptly (`kill`: its
session ends, its lease is revoked, as when a process dies and its lease lapses, only
faster) or gracefully (`stop`). Every wait is a condition with a deadline.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from minilog.broker.app import Broker
from minilog.broker.config import BrokerConfig
from minilog.metastore import EtcdStore, PartitionState
from minilog.protocol import ApiKey

from conftest import AsyncRawClient

WAIT_S = 20.0           # bound on any one condition (a loaded 2-core machine is slow)
SESSION_MS = 2000       # lease TTL of the test brokers (etcd's minimum here is 1 s)


async def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll `predicate` (cheap, in memory) until true; fail after `timeout_s`."""
    with trio.move_on_after(timeout_s):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting for: {what}")


@dataclass
class RunningBroker:
    broker: Broker
    scope: trio.CancelScope
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def id(self) -> int:
        return self.broker.broker_id

    @property
    def node(self) -> Any:
        assert self.broker.cluster_node is not None
        return self.broker.cluster_node


@dataclass
class Cluster:
    url: str
    endpoint: str
    root: str
    base: str
    nursery: trio.Nursery
    settings: dict[str, Any]
    group_coordinator: bool
    brokers: dict[int, RunningBroker] = field(default_factory=dict)

    async def start(self, broker_id: int, **settings: Any) -> RunningBroker:
        config = BrokerConfig.from_sources({"broker.session.timeout.ms": SESSION_MS,
                                            **self.settings, **settings})
        b = Broker(config, f"{self.base}/b{broker_id}", port=0, broker_id=broker_id,
                   metadata=self.url, group_coordinator=self.group_coordinator)
        running = RunningBroker(b, trio.CancelScope())

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with running.scope:
                    await b.run(task_status=task_status)
            finally:
                running.done.set()

        await self.nursery.start(run)
        self.brokers[broker_id] = running
        return running

    async def kill(self, broker_id: int) -> None:
        """Stop a broker abruptly (no controlled shutdown)."""
        running = self.brokers.pop(broker_id)
        running.scope.cancel()
        with trio.fail_after(WAIT_S):
            await running.done.wait()

    async def stop(self, broker_id: int) -> None:
        """SIGTERM, in-process: a controlled shutdown when enabled, then stop."""
        running = self.brokers.pop(broker_id)
        running.broker.request_shutdown()
        with trio.fail_after(WAIT_S + 30):
            await running.done.wait()

    def any(self) -> RunningBroker:
        return next(iter(self.brokers.values()))

    def state(self, topic: str, p: int) -> PartitionState | None:
        """The partition state as the first running broker's picture holds it."""
        return self.any().node.picture.state(topic, p)

    def states(self, topic: str) -> dict[int, PartitionState]:
        pic = self.any().node.picture
        return {p: s for (t, p), s in pic.states.items() if t == topic}

    async def client(self, broker_id: int | None = None) -> AsyncRawClient:
        b = self.brokers[broker_id] if broker_id is not None else self.any()
        return await AsyncRawClient.connect(b.broker.port)

    async def create_topic(self, name: str, partitions: int, rf: int, *, via: int | None = None,
                           configs: dict[str, str] | None = None) -> tuple[int, str | None]:
        c = await self.client(via)
        try:
            r = await c.request(ApiKey.CREATE_TOPICS, {
                "topics": [{"name": name, "num_partitions": partitions, "replication_factor": rf,
                            "configs": configs or {}}], "timeout_ms": 10_000, "validate_only": False})
        finally:
            await c.aclose()
        t = r.payload["topics"][0]
        return t["error_code"], t.get("error_message")

    async def metadata(self, broker_id: int, topics: list[str] | None = None) -> dict[str, Any]:
        c = await self.client(broker_id)
        try:
            r = await c.request(ApiKey.METADATA, {"topics": topics, "allow_auto_topic_creation": False})
        finally:
            await c.aclose()
        return dict(r.payload)


@asynccontextmanager
async def open_kv(cluster: Cluster) -> AsyncIterator[EtcdStore]:
    async with EtcdStore.connect(cluster.endpoint) as kv:
        yield kv


@asynccontextmanager
async def open_cluster(endpoint: str, base: str, brokers: int = 3, *, group_coordinator: bool = False,
                       **settings: Any) -> AsyncIterator[Cluster]:
    """`brokers` brokers (ids 1..n) on a fresh root of the etcd at `endpoint`."""
    root = f"/test-{uuid.uuid4().hex[:12]}"
    url = endpoint.replace("http://", "etcd://") + root
    async with trio.open_nursery() as nursery:
        cluster = Cluster(url, endpoint, root, base, nursery, dict(settings), group_coordinator)
        for i in range(1, brokers + 1):
            await cluster.start(i)
        try:
            yield cluster
        finally:
            for b in list(cluster.brokers.values()):
                b.broker.request_shutdown()
            with trio.move_on_after(WAIT_S + 30):
                for b in list(cluster.brokers.values()):
                    await b.done.wait()
            nursery.cancel_scope.cancel()
        async with EtcdStore.connect(endpoint) as kv:
            await kv.delete(root.encode() + b"/", prefix=True)
