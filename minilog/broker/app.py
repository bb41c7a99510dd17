"""The Broker: builds the parts, wires them, runs them, shuts them down.

Parts (each its own module, Kafka's broker being the model):

    LogManager       log_manager.py      data dir, open/recover logs, retention, flush, close
    ReplicaManager   replica_manager.py  partitions and roles; appends, reads, acks; leadership hooks
    MetadataStore    metadata.py         topics, topic ids, producer-id blocks, replica placement
                                         (DataDirMetadata here; an etcd one for a cluster)
    TopicAdmin       topic_admin.py      create / delete / add partitions / alter configs
    GroupCoordinator groups/             consumer groups, wired to the offsets topic's leadership
    Listeners        listeners.py        one per (address, codec); connections (connection.py)
    handlers/                            one function per API, using only `BrokerServices`

The `Broker` implements `BrokerServices` (`_services.py`) and hands itself
to the listeners; handlers never import this module.

Public surface (kept stable for the CLI, tests and tools):

    broker.config, broker.broker_id, broker.host, broker.port, broker.data_dir
    broker.partition(topic, p) -> Partition | None
    broker.topic_metadata(name) -> TopicMeta | None
    broker.create_internal_topic(name, partitions, configs) -> TopicMeta   (idempotent)
    broker.on_topic_change(callback)    callback(event, topic)
    broker.statistics() -> BrokerStatistics
    broker.request_shutdown(); await broker.run(task_status=...)

Theory of operation (`run`):
1. Lock the data dir, load metadata, remove orphan partition dirs, open
   every partition log (recovery happens here, logged by storage).
2. Build the group coordinator: create `__consumer_offsets` if missing and
   register its become-leader / resign hooks with the replica manager,
   which loads every offsets partition led here.
3. Bind the listeners; start the log manager's retention and flush loops
   and the coordinator's timers; report the bound address
   (`task_status.started`).
4. Accept connections until `request_shutdown()` (SIGTERM/SIGINT in the
   daemon): stop accepting, stop reading on every connection, let queued
   requests finish within shutdown.timeout.ms, cancel the rest, then flush
   and close every log (each writes its clean-shutdown marker).

Error handling: admin operations return `(ErrorCode, message)` instead of
raising for bad input; storage failures on open propagate (the broker
refuses to start on a data dir it cannot read).
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from minilog.storage import OS_FS, FileSystem

from ._services import BrokerServices
from .config import BrokerConfig
from .connection import ConnectionLimits
from .groups import OFFSETS_TOPIC, CoordinatorConfig, GroupCoordinator, offsets_topic_configs
from .listeners import ListenerConfig, Listeners
from .kafka.listener import configured_listeners
from .log_cleaner import LogCleaner, LogCleanerStatistics
from .log_manager import LogManager
from .metadata import DataDirMetadata, MetadataStore, TopicMeta
from .partition import Partition
from .replica_manager import ReplicaManager
from .topic_admin import TopicAdmin

if TYPE_CHECKING:
    from ._services import ClusterView
    from .cluster import ClusterNode

__all__ = ["Broker", "BrokerStatistics"]

log = logging.getLogger("minilog.broker")

_PRODUCER_EPOCH_MAX = 32767


@dataclass(frozen=True)
class BrokerStatistics:
    broker_id: int
    connections: int              # open client connections
    connections_total: int        # accepted since start
    requests_total: int           # requests read on closed and open connections
    topics: int
    partitions: int
    size_bytes: int               # sum of partition sizes on disk
    fetch_waiters: int            # parked long-poll fetch registrations
    cleaner: LogCleanerStatistics | None = None   # log cleaner progress (None: disabled)


class Broker:
    """A single minilog broker. Create, then `await broker.run(task_status=...)`.

    Args:
        config: the broker's settings.
        data_dir: where the logs and the metadata live.
        host, port: the native listener's address (when `listeners` is None).
        broker_id: overrides `config.broker_id`.
        install_signal_handlers: SIGTERM/SIGINT request a graceful shutdown.
        group_coordinator: run the consumer-group coordinator.
        listeners: the listeners to run (default: one native listener at host:port).
        metadata: the metadata store (default: `DataDirMetadata(data_dir)`), or the URL
            of a cluster's etcd, "etcd://HOST:PORT[/ROOT]" (minilog.broker.cluster;
            etcd is imported only then).
        fs: the file system the logs and the data-dir metadata go through (disk-fault tests).
    """

    def __init__(self, config: BrokerConfig, data_dir: str, *, host: str = "127.0.0.1",
                 port: int = 9092, broker_id: int | None = None,
                 install_signal_handlers: bool = False, group_coordinator: bool = True,
                 listeners: list[ListenerConfig] | None = None,
                 metadata: MetadataStore | str | None = None, fs: FileSystem = OS_FS) -> None:
        self.config = config
        self.data_dir = os.path.abspath(data_dir)
        self.broker_id = config.broker_id if broker_id is None else broker_id
        configs = listeners or configured_listeners(config, host, port)
        self.host = configs[0].host
        self.port = configs[0].port
        self.cluster_node: ClusterNode | None = None
        if isinstance(metadata, str):
            from .cluster import ClusterNode

            self.cluster_node = ClusterNode(metadata, self.broker_id, config)
            metadata = self.cluster_node.metadata
        self.metadata: MetadataStore = metadata or DataDirMetadata(self.data_dir, fs=fs)
        self.logs = LogManager(self.data_dir,
                               retention_check_interval_s=config.log_retention_check_interval_ms / 1000,
                               cleaner=LogCleaner.from_config(config) if config.log_cleaner_enable else None,
                               fs=fs)
        self.replicas = ReplicaManager(self.broker_id, config, logs=self.logs, source_host=self.host)
        self.admin: TopicAdmin
        if self.cluster_node is not None:
            from .cluster import ClusterTopicAdmin

            self.admin = ClusterTopicAdmin(config, self.cluster_node.metadata, self.logs, self.replicas)
        else:
            self.admin = TopicAdmin(config, self.metadata, self.logs, self.replicas)
        self.groups: GroupCoordinator | None = None
        services: BrokerServices = self
        self.listeners = Listeners(configs, services, ConnectionLimits.from_config(config),
                                   config.max_connections, config.max_connections_per_ip)
        self._run_group_coordinator = group_coordinator
        self._install_signals = install_signal_handlers
        self.stopping = False
        self.started = trio.Event()
        self._root: trio.Nursery | None = None

    # -- BrokerServices and the public surface -------------------------------------------------

    def partition(self, topic: str, p: int) -> Partition | None:
        return self.replicas.partition(topic, p)

    def topic_metadata(self, name: str) -> TopicMeta | None:
        return self.metadata.topic(name)

    def on_topic_change(self, callback: Callable[[str, str], Any]) -> None:
        self.admin.on_topic_change(callback)

    @property
    def cluster(self) -> ClusterView | None:
        return self.cluster_node.view if self.cluster_node is not None else None

    async def create_internal_topic(self, name: str, partitions: int, configs: dict[str, Any]
                                    ) -> TopicMeta:
        return await self.admin.create_internal_topic(name, partitions, configs)

    async def allocate_producer_id(self, producer_id: int, producer_epoch: int) -> tuple[int, int]:
        if (producer_id >= 0 and 0 <= producer_epoch < _PRODUCER_EPOCH_MAX
                and self.metadata.producer_id_issued(producer_id)):
            return producer_id, producer_epoch + 1
        return await self.metadata.allocate_producer_id(), 0

    def statistics(self) -> BrokerStatistics:
        parts = self.replicas.partitions()
        return BrokerStatistics(
            self.broker_id, self.listeners.connections, self.listeners.connections_total,
            self.listeners.requests_total, len(self.metadata.topic_names()), len(parts),
            self.replicas.size_bytes(), self.replicas.waiters(),
            self.logs.cleaner.statistics() if self.logs.cleaner is not None else None)

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Lock and load the data dir, open every partition (recovering as needed), and
        load the group coordinator (a single broker; a cluster member opens in `run`)."""
        self.logs.lock()
        try:
            await self.metadata.load(self.broker_id)
            self.logs.clean(self.metadata.topics_snapshot())
            for meta in self.metadata.topics_snapshot().values():
                self.admin.open_partitions(meta, range(meta.partitions))
            log.info("loaded %d topics, %d partitions from %s", len(self.metadata.topic_names()),
                     len(self.replicas.partitions()), self.data_dir)
            if self._run_group_coordinator:
                await self._start_group_coordinator()
        except BaseException:
            self.close()
            raise

    async def _ensure_offsets_topic(self) -> None:
        config = CoordinatorConfig.from_broker_config(self.config)
        await self.create_internal_topic(OFFSETS_TOPIC, config.offsets_topic_num_partitions,
                                         offsets_topic_configs(config))

    async def _start_group_coordinator(self) -> None:
        """Create `__consumer_offsets` if missing (a cluster member creates it later, once
        enough brokers are live) and wire the coordinator to its leadership."""
        config = CoordinatorConfig.from_broker_config(self.config)
        try:
            if self.cluster_node is None:
                await self._ensure_offsets_topic()
            coordinator = GroupCoordinator(self, config)
            self.replicas.on_leadership(OFFSETS_TOPIC, coordinator.become_leader, coordinator.resign)
            coordinator.forget_missing_topics_nowait()     # a crash between a topic's deletion
            self.on_topic_change(coordinator.on_topic_change)   # and its offsets' deletion
        except Exception:
            # The broker still serves topics; group APIs answer COORDINATOR_NOT_AVAILABLE.
            log.exception("the group coordinator failed to start; group APIs are unavailable")
            return
        log.info("group coordinator loaded %d records of %s (%d groups)", coordinator.records_loaded,
                 OFFSETS_TOPIC, len(coordinator.store.groups()))
        self.groups = coordinator

    def close(self) -> None:
        """Flush and close every partition log (clean-shutdown markers), release the lock."""
        LogManager.close_now(self.replicas.clear())
        self.logs.unlock()

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown (idempotent; safe from any task). A cluster member with
        controlled.shutdown.enable first moves its leaderships away (bounded), serving
        meanwhile."""
        if self.stopping:
            return
        self.stopping = True
        node = self.cluster_node
        if (node is not None and self.config.controlled_shutdown_enable and self._root is not None
                and node.session is not None):
            log.info("controlled shutdown: moving leaderships away")
            self._root.start_soon(self._controlled_shutdown, node)
            return
        self._stop_serving()

    async def _controlled_shutdown(self, node: ClusterNode) -> None:
        try:
            await node.controlled_shutdown(self.config.controlled_shutdown_timeout_ms / 1000)
        finally:
            self._stop_serving()

    def _stop_serving(self) -> None:
        log.info("shutting down")
        self.replicas.shutdown()
        self.listeners.stop()

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve until `request_shutdown()`; then drain, flush and close. See module doc."""
        if self.cluster_node is None:
            await self.open()
        else:
            self.logs.lock()
        try:
            async with trio.open_nursery() as root:
                self._root = root
                await self.listeners.open()
                self.port = self.listeners.bound[0].info.port
                if self.cluster_node is not None:
                    await self._join_cluster(root, self.cluster_node)
                await root.start(self.logs.run, self.replicas.partitions)
                await root.start(self.replicas.run)          # replication, once a link is attached
                if self.groups is not None:
                    await root.start(self.groups.run)
                if self._install_signals:
                    await root.start(self._signal_loop)    # installed before we say "listening"
                for bound in self.listeners.bound:
                    log.info("broker %d listening on %s:%d", self.broker_id, bound.config.host,
                             bound.info.port)
                # Everything loaded so far (topic metadata, indexes, group state)
                # lives as long as the broker: move it out of the cyclic GC's
                # generations so full collections don't rescan it (their pauses
                # showed in the end-to-end latency tail; p999 3.9-4.3 -> 2.5-3.4 ms).
                gc.freeze()
                self.started.set()
                task_status.started((self.host, self.port))
                await self.listeners.serve(self.config.shutdown_timeout_ms / 1000)
                root.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await LogManager.close_all(self.replicas.partitions())
            self.close()
            log.info("broker %d stopped", self.broker_id)

    async def _join_cluster(self, root: trio.Nursery, node: ClusterNode) -> None:
        """Start the cluster node (picture, local replicas, registration, controller) and
        the group coordinator on it."""
        from .cluster import ClusterTopicAdmin, NodeParts

        coordinator = None
        if self._run_group_coordinator:
            coordinator = GroupCoordinator(self, CoordinatorConfig.from_broker_config(self.config))
            self.replicas.on_leadership(OFFSETS_TOPIC, coordinator.become_leader, coordinator.resign)
        bound = [(b.config.name, b.config.host, b.info.port) for b in self.listeners.bound]
        assert isinstance(self.admin, ClusterTopicAdmin)
        parts = NodeParts(
            self.replicas, self.admin, bound, self.logs.clean, self.logs.delete_dirs,
            lambda meta: self.replicas.apply_config(meta, self.config.topic_config(meta.configs)),
            self._ensure_offsets_topic if coordinator is not None else None)
        await root.start(node.run, parts)
        if coordinator is not None:
            coordinator.forget_missing_topics_nowait()
            self.on_topic_change(coordinator.on_topic_change)
            self.groups = coordinator

    async def _signal_loop(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                           ) -> None:
        import signal

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                self.request_shutdown()


def _check_services(broker: Broker) -> BrokerServices:     # mypy: Broker is a BrokerServices
    return broker

