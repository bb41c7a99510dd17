"""A broker's membership of a cluster: etcd connection, picture, registration, controller, shutdown.

Theory of operation (`ClusterNode.run`, started by the broker once its
listeners are bound):

1. connect to etcd (`EtcdStore`, the JSON gateway over httpx, on trio);
2. read and watch the cluster's root into the picture (`MetadataFollower`;
   waits, retrying, while etcd is unreachable: a broker cannot serve a
   cluster it cannot see); make sure the cluster has an id;
3. remove local partition directories of topics the picture does not
   know (deleted while this broker was down), then apply every state of a
   partition this broker holds (`Applier`: opens the logs, leads, follows);
4. register: a lease (TTL `broker.session.timeout.ms`) and
   `/minilog/brokers/<id>` holding the advertised address of each listener
   (a restarted broker waits for its previous registration to lapse);
   campaign for controller, and control when elected (`Controller`);
5. `started`: the broker serves.

Lease lost (`LeaseNotFound`: the broker was silent past its TTL, e.g.
paused, or cut off from etcd while etcd expired it): the rest of the
cluster already sees it as dead and its leaderships are being moved; it
stops leading (the replica manager's `lease_lost()` when it has one) and
registers again with a new epoch, so the controller treats it as a
restarted broker (out of every ISR until it catches up). etcd unreachable
is not a lost lease: the broker keeps serving on its last picture, keeps
trying, and learns its fate when etcd is back.

Controlled shutdown (`controlled.shutdown.enable`): `controlled_shutdown`
puts `/minilog/shutdown/<id>` under the lease; the controller moves every
leadership it can to another live ISR member; the broker waits (at most
`controlled.shutdown.timeout.ms`) until it leads nothing that could move,
then stops. Leaving `run` revokes the lease: its registration goes at once.

Resource handling: everything (HTTP pool, watch, lease keeper, controller)
lives in `run`'s nursery and ends with it.
"""

from __future__ import annotations

import logging
import math
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import trio

from minilog.metastore import (
    BrokerSession,
    ClusterKeys,
    Compare,
    EtcdStore,
    KVStore,
    LeaseNotFound,
    MetaStoreError,
    Put,
    Unavailable,
)

from ..config import BrokerConfig
from ..kafka.spec import parse_listeners
from ..metadata import TopicMeta
from .admin import ClusterTopicAdmin
from .applier import Applier, LocalReplicas
from .controller import Controller
from .etcd_metadata import EtcdMetadata
from .follower import Backoff, MetadataFollower
from .link import EtcdClusterLink
from .picture import ClusterPicture
from .view import PictureView

__all__ = ["ClusterNode", "parse_metadata_url", "advertised_addresses", "NodeParts"]

log = logging.getLogger("minilog.broker.cluster")

_WILDCARDS = ("", "0.0.0.0", "::")


def parse_metadata_url(url: str) -> tuple[str, ClusterKeys]:
    """`etcd://HOST:PORT[/ROOT]` -> (etcd endpoint, keys under ROOT, default /minilog).

    Raises:
        ValueError: not an etcd:// (or http://) URL with a host and port.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("etcd", "http") or not parts.hostname or not parts.port:
        raise ValueError(f"--metadata {url!r}: expected etcd://HOST:PORT[/ROOT]")
    root = parts.path.rstrip("/") or "/minilog"
    return f"http://{parts.netloc}", ClusterKeys(root)


def advertised_addresses(bound: Sequence[tuple[str, str, int]], advertised: str
                         ) -> list[tuple[str, str]]:
    """(listener name, "host:port") to register for each bound (name, host, port).

    `advertised` is the advertised.listeners setting (Kafka's form): a listener
    named there is registered with that host and port (port 0: the bound one);
    otherwise the bound host, or this machine's name when bound to every interface.
    """
    named = {kind: (host, port) for kind, host, port in parse_listeners(advertised)} if advertised else {}
    out = []
    for name, host, port in bound:
        if name in named:
            a_host, a_port = named[name]
            host, port = (a_host if a_host not in _WILDCARDS else host), (a_port or port)
        if host in _WILDCARDS:
            host = socket.getfqdn()
        out.append((name, f"{host}:{port}"))
    return out


@dataclass
class NodeParts:
    """What the node needs of its broker."""

    replicas: Any                                   # the ReplicaManager
    admin: ClusterTopicAdmin
    bound: list[tuple[str, str, int]]               # (listener name, host, port) as bound
    clean: Callable[[dict[str, TopicMeta]], None]   # removes directories of unknown topics
    delete_dirs: Callable[[TopicMeta], None]
    apply_config: Callable[[TopicMeta], None]
    ensure_offsets_topic: Callable[[], Awaitable[None]] | None = None


class ClusterNode:
    """One broker's part in a cluster (see the module docstring).

    Args:
        url: the --metadata URL, etcd://HOST:PORT[/ROOT].
        broker_id: this broker's id.
        config: the broker's settings.
    """

    def __init__(self, url: str, broker_id: int, config: BrokerConfig) -> None:
        self.endpoint, self.keys = parse_metadata_url(url)
        self.broker_id = broker_id
        self.config = config
        self.picture = ClusterPicture(self.keys)
        self.metadata = EtcdMetadata(self.picture)
        self.view = PictureView(self.picture, self._ensure_offsets_topic)
        self.kv: KVStore | None = None
        self.follower: MetadataFollower | None = None
        self.applier: Applier | None = None
        self.controller: Controller | None = None
        self.link: EtcdClusterLink | None = None
        self.session: BrokerSession | None = None
        self.registered = trio.Event()
        self.lease_losses = 0
        self.shutting_down = False
        self._parts: NodeParts | None = None
        # httpx logs every request at INFO: keep-alives every TTL/3 would drown the broker's log.
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))

    @property
    def ttl_s(self) -> int:
        return max(1, math.ceil(self.config.broker_session_timeout_ms / 1000))

    async def _ensure_offsets_topic(self) -> None:
        if self._parts is not None and self._parts.ensure_offsets_topic is not None:
            await self._parts.ensure_offsets_topic()

    # -- running ------------------------------------------------------------------------------

    async def run(self, parts: NodeParts, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        self._parts = parts
        async with EtcdStore.connect(self.endpoint) as kv:
            self.kv = kv
            follower = self.follower = MetadataFollower(kv, self.picture)
            self.metadata.attach(kv, follower)
            async with trio.open_nursery() as nursery:
                log.info("broker %d: reading the cluster metadata from %s%s", self.broker_id,
                         self.endpoint, self.keys.root)
                await nursery.start(follower.run)
                await self._ensure_cluster_id(kv, follower)
                await self.metadata.load(self.broker_id)
                parts.clean(self.picture.topic_metas())
                control = self._replica_control(parts, kv, follower)
                applier = self.applier = Applier(self.broker_id, follower, control,
                                                 delete_dirs=parts.delete_dirs,
                                                 apply_config=parts.apply_config,
                                                 notify=parts.admin.notify)
                parts.admin.attach(applier)
                await nursery.start(applier.run)
                self.controller = Controller(kv, follower,
                                             unclean=self.config.unclean_leader_election_enable,
                                             rebalance=self.config.auto_leader_rebalance_enable)
                await nursery.start(self._membership, parts)
                if parts.ensure_offsets_topic is not None:
                    nursery.start_soon(self._offsets_topic_when_ready)
                task_status.started()

    def _replica_control(self, parts: NodeParts, kv: KVStore, follower: MetadataFollower) -> Any:
        """The replica manager as `ReplicaControl`, attached to this node's `ClusterLink`
        (or the no-replication stand-in while it implements neither)."""
        replicas = parts.replicas
        self.link = EtcdClusterLink(self.broker_id, kv, follower)
        attach = getattr(replicas, "attach_link", None)
        if attach is None or not hasattr(replicas, "apply_partition_state"):
            log.warning("this replica manager does not replicate: partitions are led without followers")
            return LocalReplicas(self.broker_id, replicas, parts.admin.open_partitions)
        attach(self.link)
        return replicas

    async def _ensure_cluster_id(self, kv: KVStore, follower: MetadataFollower) -> None:
        backoff = Backoff()
        key = self.keys.cluster_id()
        while not self.picture.cluster_id:
            try:
                await kv.txn([Compare.missing(key)], [Put(key, uuid.uuid4().hex[:22].encode())])
                await follower.wait_until(lambda: bool(self.picture.cluster_id))
            except MetaStoreError:
                await backoff.sleep()

    async def _membership(self, parts: NodeParts, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register, campaign, control; register again after a lost lease; until cancelled."""
        assert self.kv is not None and self.follower is not None and self.controller is not None
        kv, follower, controller = self.kv, self.follower, self.controller
        addresses = advertised_addresses(parts.bound, self.config.advertised_listeners)
        backoff = Backoff(0.1, 2.0)
        started = False
        while True:
            try:
                async with BrokerSession.open(
                        kv, self.broker_id, [a for _, a in addresses], ttl_s=self.ttl_s,
                        keys=self.keys, listeners=[n for n, _ in addresses],
                        give_up_s=math.inf) as session:
                    epoch = session.registration.epoch
                    await follower.wait_until(lambda e=epoch: (  # type: ignore[misc]
                        reg := self.picture.brokers.get(self.broker_id)) is not None and reg.epoch >= e)
                    self.session = session
                    self.registered.set()
                    log.info("broker %d registered (epoch %d) as %s", self.broker_id, epoch,
                             ", ".join(f"{n}://{a}" for n, a in addresses))
                    backoff.reset()
                    if not started:
                        task_status.started()
                        started = True
                    async with trio.open_nursery() as nursery:
                        if self.shutting_down:
                            nursery.start_soon(self._announce_shutdown, session)
                        await controller.run(session)
            except* LeaseNotFound:
                self.lease_losses += 1
                log.warning("broker %d lost its etcd lease: it no longer leads anything and "
                            "registers again", self.broker_id)
                lease_lost = getattr(parts.replicas, "lease_lost", None)
                if lease_lost is not None:
                    lease_lost()
            except* MetaStoreError as group:
                log.warning("broker %d: etcd session failed (%s); retrying", self.broker_id,
                            group.exceptions[0])
            finally:
                self.session = None
            await backoff.sleep()

    async def _offsets_topic_when_ready(self) -> None:
        """Create the offsets topic once enough brokers are live for its replication factor
        (or after a few session timeouts with fewer), unless it exists already."""
        assert self.follower is not None
        from ..groups import OFFSETS_TOPIC

        wanted = self.config.offsets_topic_replication_factor
        with trio.move_on_after(3 * self.ttl_s):
            await self.follower.wait_until(lambda: OFFSETS_TOPIC in self.picture.topics
                                           or len(self.picture.brokers) >= wanted)
        backoff = Backoff(0.1, 5.0)
        while OFFSETS_TOPIC not in self.picture.topics:
            try:
                await self._ensure_offsets_topic()
            except Exception as exc:         # a background task: never the broker's end
                log.info("cannot create the offsets topic yet (%s); retrying", exc)
                await backoff.sleep()

    # -- controlled shutdown ------------------------------------------------------------------

    def movable_leaderships(self) -> list[tuple[str, int]]:
        """Partitions this broker leads that another live, not-shutting-down ISR member could."""
        pic = self.picture
        out = []
        for (topic, p), state in pic.states.items():
            if state.leader == self.broker_id and any(
                    b != self.broker_id and b in pic.brokers and b not in pic.shutting_down
                    for b in state.isr):
                out.append((topic, p))
        return sorted(out)

    async def controlled_shutdown(self, timeout_s: float) -> bool:
        """Ask the controller to move this broker's leaderships away and wait until it has
        (at most `timeout_s`). True when nothing movable is led here any more."""
        self.shutting_down = True
        session, follower = self.session, self.follower
        if session is None or follower is None:
            return False
        with trio.move_on_after(timeout_s):
            await self._announce_shutdown(session)
            await follower.wait_until(lambda: not self.movable_leaderships())
            log.info("broker %d: controlled shutdown moved every leadership it could",
                     self.broker_id)
            return True
        log.warning("broker %d: controlled shutdown timed out still leading %d partitions",
                    self.broker_id, len(self.movable_leaderships()))
        return False

    async def _announce_shutdown(self, session: BrokerSession) -> None:
        assert self.kv is not None and self.follower is not None
        backoff = Backoff()
        while True:
            try:
                await self.kv.put(self.keys.shutdown(self.broker_id), b"", lease=session.lease.id)
                await self.follower.wait_until(lambda: self.broker_id in self.picture.shutting_down)
                return
            except Unavailable:
                await backoff.sleep()
            except MetaStoreError as exc:
                log.warning("broker %d: cannot announce its shutdown: %s", self.broker_id, exc)
                return
