"""The Broker object: topics, partitions, listener, background tasks, shutdown.

This is the object handlers and plugins (the group coordinator) receive.
Its public surface, kept stable:

    broker.config                       BrokerConfig (Kafka keys, see config.py)
    broker.broker_id, broker.host, broker.port, broker.data_dir
    broker.partition(topic, p)          -> Partition | None
    broker.topic_metadata(name)         -> TopicMeta | None   (.partitions = count, .configs)
    broker.partition_counts()           -> dict[str, int]
    broker.create_internal_topic(name, partitions, configs) -> TopicMeta   (idempotent)
    broker.register_handler(api_key, handler)
    broker.on_topic_change(callback)    callback(event, topic): event in
                                        "created" | "deleted" | "partitions" | "configs"
    broker.on_start(callback)           callback(broker) once listening; may start tasks
    broker.nursery                      trio nursery for background tasks (set while running)
    broker.stopping                     True once shutdown began

Plugins: at start the broker imports `minilog.broker.groups` and, when it
defines `install(broker)`, calls it (before listening). That is where the
group coordinator registers its handlers and callbacks.

Theory of operation (`run`):
1. Lock the data dir, load metadata, remove orphan partition dirs, open
   every partition log (recovery happens here, logged by storage).
2. Open the listener; start retention and flush loops; install plugins;
   report the bound address (`task_status.started`).
3. Accept connections (bounded by max.connections), one task each.
4. On `request_shutdown()` (SIGTERM/SIGINT in the daemon): stop accepting,
   stop reading on every connection, let queued requests finish within
   shutdown.timeout.ms, cancel the rest, then flush and close every log
   (each writes its clean-shutdown marker).

Error handling: admin methods return `(ErrorCode, message)` instead of
raising for bad input; storage failures on open propagate (the broker
refuses to start on a data dir it cannot read).
"""

from __future__ import annotations

import errno
import fcntl
import gc
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import trio

from minilog.protocol import ApiKey, CorruptBatchError, ErrorCode
from minilog.storage import (
    ConfigError,
    Log,
    StorageError,
    atomic_write,
    parse_partition_dir_name,
    partition_dir_name,
)

from .config import TOPIC_CONFIG_KEYS, BrokerConfig, normalize_topic_overrides
from .handlers import DEFAULT_HANDLERS, Handler
from .metadata import MetadataStore, TopicMeta, validate_topic_name
from .partition import Partition
from .server import ConnectionInfo, serve_connection

__all__ = ["Broker", "BrokerStatistics", "ProducerIdManager"]

log = logging.getLogger("minilog.broker")

PARTITIONS_MAX = 10_000
TOPIC_CONFIG_NAMES = frozenset(key.name for key in TOPIC_CONFIG_KEYS)
_DELETE_SUFFIX = "-delete"
_LOCK_FILE = ".lock"
_FLUSH_CHECK_INTERVAL_S = 1.0     # flush.ms granularity and delay before rolled segments are fsynced
_ACCEPT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


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


class ProducerIdManager:
    """Hands out increasing producer ids, persisted in blocks.

    File `<data-dir>/producer-ids`: "0\\nnext-block <int>\\n". Before ids from
    a block are handed out, the end of the block is written (atomically), so
    after any crash the next start begins above every id ever given out.
    """

    BLOCK = 1000

    def __init__(self, data_dir: str) -> None:
        self._path = os.path.join(data_dir, "producer-ids")
        try:
            with open(self._path, encoding="ascii") as f:
                version, line = f.read().split("\n")[:2]
            assert version == "0"
            self._block_end = int(line.split()[1])
        except FileNotFoundError:
            self._block_end = 0
        self.next_id = self._block_end
        self._lock = trio.Lock()

    async def allocate(self) -> int:
        async with self._lock:
            if self.next_id >= self._block_end:
                end = self.next_id + self.BLOCK
                await trio.to_thread.run_sync(atomic_write, self._path, f"0\nnext-block {end}\n".encode())
                self._block_end = end
            pid = self.next_id
            self.next_id += 1
            return pid


class Broker:
    """A single minilog broker. Create, then `await broker.run(task_status=...)`."""

    def __init__(self, config: BrokerConfig, data_dir: str, *, host: str = "127.0.0.1",
                 port: int = 9092, broker_id: int | None = None,
                 install_signal_handlers: bool = False, load_plugins: bool = True) -> None:
        self.config = config
        self.data_dir = os.path.abspath(data_dir)
        self.host = host
        self.port = port
        self.broker_id = config.broker_id if broker_id is None else broker_id
        self.metadata = MetadataStore(self.data_dir)
        self.partitions: dict[tuple[str, int], Partition] = {}
        self.handlers: dict[int, Handler] = dict(DEFAULT_HANDLERS)
        self.producer_ids: ProducerIdManager | None = None
        self.groups: Any = None          # the GroupCoordinator, set by minilog.broker.groups.install
        self.nursery: trio.Nursery | None = None
        self.stopping = False
        self._install_signals = install_signal_handlers
        self._load_plugins = load_plugins
        self._topic_callbacks: list[Callable[[str, str], Any]] = []
        self._start_callbacks: list[Callable[[Broker], Any]] = []
        self._stop_waiters: set[trio.Event] = set()
        self._connections: dict[int, ConnectionInfo] = {}
        self._next_connection_id = 0
        self._requests_closed = 0
        self._accept_scope = trio.CancelScope()
        self._lock_fd: int | None = None
        self.started = trio.Event()

    # -- public API for handlers and plugins ------------------------------------------------

    def partition(self, topic: str, p: int) -> Partition | None:
        return self.partitions.get((topic, p))

    def topic_metadata(self, name: str) -> TopicMeta | None:
        return self.metadata.topics.get(name)

    def partition_counts(self) -> dict[str, int]:
        return {name: meta.partitions for name, meta in self.metadata.topics.items()}

    def register_handler(self, api_key: ApiKey, handler: Handler) -> None:
        self.handlers[int(api_key)] = handler

    def on_topic_change(self, callback: Callable[[str, str], Any]) -> None:
        self._topic_callbacks.append(callback)

    def on_start(self, callback: Callable[[Broker], Any]) -> None:
        self._start_callbacks.append(callback)

    def add_stop_waiter(self, event: trio.Event) -> None:
        self._stop_waiters.add(event)

    def discard_stop_waiter(self, event: trio.Event) -> None:
        self._stop_waiters.discard(event)

    def create_internal_topic(self, name: str, partitions: int, configs: dict) -> TopicMeta:
        """Create an internal topic (e.g. __consumer_offsets) unless it exists; return it.

        Raises:
            ConfigError: `configs` holds an unknown key or a bad value.
        """
        meta = self.topic_metadata(name)
        if meta is not None:
            return meta
        overrides = normalize_topic_overrides(configs)
        self.config.topic_config(overrides)
        self._create(name, partitions, overrides, internal=True)
        return self.metadata.topics[name]

    def statistics(self) -> BrokerStatistics:
        parts = list(self.partitions.values())
        return BrokerStatistics(
            self.broker_id, len(self._connections), self._next_connection_id,
            self._requests_closed + sum(c.requests for c in self._connections.values()),
            len(self.metadata.topics), len(parts), sum(p.size_bytes for p in parts),
            sum(p.statistics().waiters for p in parts))

    # -- admin operations (return (code, message)) ------------------------------------------

    def create_topic(self, name: str, num_partitions: int, replication_factor: int,
                     configs: dict, *, validate_only: bool = False) -> tuple[ErrorCode, str | None]:
        problem = validate_topic_name(name) if isinstance(name, str) else "topic name is not a string"
        if problem:
            return ErrorCode.INVALID_TOPIC_EXCEPTION, problem
        if name in self.metadata.topics:
            return ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists"
        if num_partitions == -1:
            num_partitions = self.config.num_partitions
        if not 1 <= num_partitions <= PARTITIONS_MAX:
            return ErrorCode.INVALID_PARTITIONS, f"partition count must be in [1, {PARTITIONS_MAX}]"
        if replication_factor == -1:
            replication_factor = self.config.default_replication_factor
        if replication_factor != 1:
            return (ErrorCode.INVALID_REPLICATION_FACTOR,
                    f"replication factor {replication_factor} is larger than the 1 available broker"
                    if replication_factor > 1 else "replication factor must be at least 1")
        try:
            overrides = normalize_topic_overrides(configs)
            self.config.topic_config(overrides)
        except ConfigError as exc:
            return ErrorCode.INVALID_CONFIG, str(exc)
        if validate_only:
            return ErrorCode.NONE, None
        try:
            self._create(name, num_partitions, overrides)
        except StorageError as exc:
            log.error("cannot create topic %s: %s", name, exc)
            return ErrorCode.KAFKA_STORAGE_ERROR, str(exc)
        return ErrorCode.NONE, None

    def auto_create_topic(self, name: str) -> ErrorCode:
        """METADATA's auto-creation; returns NONE when the topic now exists."""
        if not self.config.auto_create_topics_enable:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        if validate_topic_name(name):
            return ErrorCode.INVALID_TOPIC_EXCEPTION
        code, _ = self.create_topic(name, -1, -1, {})
        return code

    def _create(self, name: str, partitions: int, overrides: dict, *, internal: bool = False) -> None:
        """Open the partition logs first, then store the metadata: a crash in between
        leaves only orphan directories, which the next start removes."""
        meta = self.metadata.new_topic(name, partitions, overrides, internal=internal)
        self._open_and_store(meta, range(partitions))
        log.info("created topic %s with %d partitions%s%s", name, partitions,
                 f", configs {overrides}" if overrides else "", " (internal)" if internal else "")
        self._notify("created", name)

    async def delete_topic(self, name: str) -> tuple[ErrorCode, str | None]:
        """Delete a topic: forget it durably, close its logs, remove its directories.

        The metadata is written first (it is the truth); the directories are
        renamed to `*-delete` and removed in the background. A crash in
        between leaves directories the next start removes.
        """
        meta = self.metadata.topics.get(name)
        if meta is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
        if meta.internal:
            return ErrorCode.INVALID_REQUEST, f"{name!r} is an internal topic"
        self.metadata.delete(name)
        parts = [self.partitions.pop((name, p), None) for p in range(meta.partitions)]
        for part in parts:
            if part is not None:
                try:
                    await part.aclose()               # waits for a running flush, wakes fetches
                except StorageError as exc:
                    log.warning("%s-%d: close before delete failed: %s", name, part.partition, exc)
        doomed = [self._rename_for_delete(partition_dir_name(name, p), meta.topic_id)
                  for p in range(meta.partitions)]
        self._remove_later([d for d in doomed if d])
        log.info("deleted topic %s (%d partitions)", name, meta.partitions)
        self._notify("deleted", name)
        return ErrorCode.NONE, None

    def create_partitions(self, name: str, count: int, *,
                          validate_only: bool = False) -> tuple[ErrorCode, str | None]:
        meta = self.metadata.topics.get(name)
        if meta is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
        if count <= meta.partitions:
            return (ErrorCode.INVALID_PARTITIONS,
                    f"topic has {meta.partitions} partitions; the count can only increase")
        if count > PARTITIONS_MAX:
            return ErrorCode.INVALID_PARTITIONS, f"at most {PARTITIONS_MAX} partitions"
        if validate_only:
            return ErrorCode.NONE, None
        old = meta.partitions
        try:
            self._open_and_store(self.metadata.with_partitions(name, count), range(old, count))
        except StorageError as exc:
            return ErrorCode.KAFKA_STORAGE_ERROR, str(exc)
        log.info("topic %s now has %d partitions (was %d)", name, count, old)
        self._notify("partitions", name)
        return ErrorCode.NONE, None

    def alter_topic_configs(self, name: str, changes: dict, *,
                            validate_only: bool = False) -> tuple[ErrorCode, str | None]:
        """Set (value) or delete (None) topic overrides; applied live to every partition."""
        meta = self.metadata.topics.get(name)
        if meta is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
        overrides = dict(meta.configs)
        try:
            for key, value in changes.items():
                if value is None:
                    if key not in TOPIC_CONFIG_NAMES:
                        raise ConfigError(str(key), "unknown topic config key")
                    overrides.pop(key, None)
                else:
                    overrides.update(normalize_topic_overrides({key: value}))
            effective = self.config.topic_config(overrides)
        except ConfigError as exc:
            return ErrorCode.INVALID_CONFIG, str(exc)
        if validate_only:
            return ErrorCode.NONE, None
        self.metadata.set_configs(name, overrides)
        for p in range(meta.partitions):
            part = self.partitions.get((name, p))
            if part is not None:
                part.apply_config(effective)
        log.info("altered topic %s configs: %s", name, changes)
        self._notify("configs", name)
        return ErrorCode.NONE, None

    def _notify(self, event: str, topic: str) -> None:
        for callback in self._topic_callbacks:
            try:
                callback(event, topic)
            except Exception:
                log.exception("topic-change callback failed")

    # -- partitions on disk -----------------------------------------------------------------

    def _open_partitions(self, meta: TopicMeta, numbers) -> None:
        self.partitions.update(self._open_logs(meta, numbers))

    def _open_logs(self, meta: TopicMeta, numbers) -> dict[tuple[str, int], Partition]:
        """Open (creating) the partitions `numbers` of `meta`; all or none (StorageError)."""
        effective = self.config.topic_config(meta.configs)
        log_config = Partition.log_config_for(effective)
        opened: dict[tuple[str, int], Partition] = {}
        try:
            for p in numbers:
                path = os.path.join(self.data_dir, partition_dir_name(meta.name, p))
                plog = Log.open(path, log_config)
                part = Partition(meta.name, p, plog, leader_id=self.broker_id,
                                 leader_epoch=meta.leader_epoch, replicas=[self.broker_id],
                                 isr=[self.broker_id])
                part.apply_config(effective)
                opened[(meta.name, p)] = part
                try:
                    part.load_producer_state()
                except (StorageError, CorruptBatchError) as exc:
                    log.warning("%s-%d: producer state not rebuilt: %s", meta.name, p, exc)
        except Exception:
            for part in opened.values():
                part.log.close()
            raise
        return opened

    def _open_and_store(self, meta: TopicMeta, numbers) -> None:
        opened = self._open_logs(meta, numbers)
        try:
            self.metadata.put(meta)
        except OSError as exc:
            for part in opened.values():
                part.log.close()
            raise StorageError(f"cannot write topic metadata: {exc}") from exc
        self.partitions.update(opened)

    def _rename_for_delete(self, dir_name: str, topic_id: str) -> str | None:
        src = os.path.join(self.data_dir, dir_name)
        dst = f"{src}.{topic_id}{_DELETE_SUFFIX}"
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            return None
        return dst

    def _remove_later(self, paths: list[str]) -> None:
        if not paths:
            return

        def remove() -> None:
            for path in paths:
                shutil.rmtree(path, ignore_errors=True)

        if self.nursery is not None:
            self.nursery.start_soon(trio.to_thread.run_sync, remove)
        else:
            remove()

    def _clean_data_dir(self) -> None:
        """Remove dirs of deleted topics and orphan partition dirs (not in topics.json)."""
        doomed = []
        for entry in os.scandir(self.data_dir):
            if not entry.is_dir():
                continue
            if entry.name.endswith(_DELETE_SUFFIX):
                doomed.append(entry.path)
                continue
            try:
                topic, p = parse_partition_dir_name(entry.name)
            except ValueError:
                continue
            meta = self.metadata.topics.get(topic)
            if meta is None or p >= meta.partitions:
                log.warning("removing orphan partition directory %s (not in %s)", entry.name,
                            "topics.json")
                doomed.append(self._rename_for_delete(entry.name, "orphan"))
        for path in doomed:
            if path:
                shutil.rmtree(path, ignore_errors=True)

    def _lock_data_dir(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        fd = os.open(os.path.join(self.data_dir, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StorageError(f"data dir {self.data_dir} is in use by another broker") from None
        self._lock_fd = fd

    def open(self) -> None:
        """Lock and load the data dir and open every partition (recovering as needed)."""
        self._lock_data_dir()
        self.metadata.load(self.broker_id)
        self._clean_data_dir()
        self.producer_ids = ProducerIdManager(self.data_dir)
        for meta in self.metadata.topics.values():
            self._open_partitions(meta, range(meta.partitions))
        log.info("loaded %d topics, %d partitions from %s", len(self.metadata.topics),
                 len(self.partitions), self.data_dir)

    async def _close_partitions(self) -> None:
        """Close every partition log, several at once in worker threads (each fsyncs)."""
        limiter = trio.CapacityLimiter(16)

        async def close_one(part: Partition) -> None:
            try:
                await part.aclose(limiter)
            except StorageError as exc:
                log.error("%s-%d: close failed: %s", part.topic, part.partition, exc)

        async with trio.open_nursery() as nursery:
            for part in list(self.partitions.values()):
                nursery.start_soon(close_one, part)

    def close(self) -> None:
        """Flush and close every partition log (clean-shutdown markers), release the lock."""
        for part in self.partitions.values():
            try:
                part.close()
            except StorageError as exc:
                log.error("%s-%d: close failed: %s", part.topic, part.partition, exc)
        self.partitions.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- running ----------------------------------------------------------------------------

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown (idempotent; safe from any task)."""
        if self.stopping:
            return
        self.stopping = True
        log.info("shutting down")
        self._accept_scope.cancel()
        for event in list(self._stop_waiters):
            event.set()
        for conn in self._connections.values():
            if conn.reader_scope is not None:
                conn.reader_scope.cancel()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until `request_shutdown()`; then drain, flush and close. See module doc."""
        self.open()
        try:
            async with trio.open_nursery() as root:
                self.nursery = root
                listeners = await trio.open_tcp_listeners(self.port, host=self.host)
                self.port = listeners[0].socket.getsockname()[1]
                root.start_soon(self._retention_loop)
                root.start_soon(self._flush_loop)
                if self._install_signals:
                    await root.start(self._signal_loop)    # before "listening": no SIGTERM race
                self._install_plugins()
                for callback in self._start_callbacks:
                    callback(self)
                log.info("broker %d listening on %s:%d", self.broker_id, self.host, self.port)
                # Everything loaded so far (topic metadata, indexes, group state)
                # lives as long as the broker: move it out of the cyclic GC's
                # generations so full collections don't rescan it (their pauses
                # showed in the end-to-end latency tail; p999 3.9-4.3 -> 2.5-3.4 ms).
                gc.freeze()
                self.started.set()
                task_status.started((self.host, self.port))
                await self._serve(listeners)
                root.cancel_scope.cancel()
        finally:
            self.nursery = None
            with trio.CancelScope(shield=True):
                await self._close_partitions()
            self.close()
            log.info("broker %d stopped", self.broker_id)

    async def _serve(self, listeners: list) -> None:
        with trio.CancelScope() as connections_scope:
            async with trio.open_nursery() as connections:
                with self._accept_scope:
                    async with trio.open_nursery() as accepters:
                        for listener in listeners:
                            accepters.start_soon(self._accept_loop, listener, connections)
                for listener in listeners:
                    await listener.aclose()
                # Shutdown: readers are cancelled; queued requests may finish until the deadline.
                for conn in self._connections.values():
                    if conn.reader_scope is not None:
                        conn.reader_scope.cancel()
                connections_scope.deadline = (trio.current_time()
                                              + self.config.shutdown_timeout_ms / 1000)

    async def _accept_loop(self, listener: trio.SocketListener, connections: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_ERRNOS:
                    log.error("accept failed (%s); retrying in 100 ms", exc)
                    await trio.sleep(0.1)     # as trio.serve_listeners: wait for fds to free up
                    continue
                raise
            if len(self._connections) >= self.config.max_connections:
                log.debug("max.connections %d reached: closing a new connection",
                          self.config.max_connections)
                await trio.aclose_forcefully(stream)
                continue
            connections.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self._next_connection_id += 1
        try:
            peer = stream.socket.getpeername()
            local = stream.socket.getsockname()
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        info = ConnectionInfo(self._next_connection_id, str(peer[0]), int(peer[1]), str(local[0]))
        info.reader_scope = trio.CancelScope()
        if self.stopping:
            info.reader_scope.cancel()
        self._connections[info.connection_id] = info
        try:
            await serve_connection(self, stream, info)
        except Exception:
            # A bug while serving one connection must not take the broker down:
            # log it loudly, drop that connection, keep serving the others.
            log.exception("connection %d from %s:%d failed; closing it", info.connection_id,
                          info.client_host, info.client_port)
        finally:
            del self._connections[info.connection_id]
            self._requests_closed += info.requests

    async def _retention_loop(self) -> None:
        interval = self.config.log_retention_check_interval_ms / 1000
        while True:
            await trio.sleep(interval)
            for part in list(self.partitions.values()):
                if part.closed:
                    continue
                await part.wait_idle()
                try:
                    part.log.apply_retention(high_watermark=part.high_watermark)
                except StorageError as exc:
                    log.error("%s-%d: retention failed: %s", part.topic, part.partition, exc)
                await trio.sleep(0)           # one partition at a time; let requests run

    async def _flush_loop(self) -> None:
        """Kafka's flush scheduler: fsync rolled segments, and apply flush.ms to partitions
        that stopped receiving appends. Every fsync runs in a worker thread."""
        while True:
            await trio.sleep(_FLUSH_CHECK_INTERVAL_S)
            for part in list(self.partitions.values()):
                if part.closed:
                    continue
                try:
                    if part.flush_due():
                        await part.flush()
                    elif part.log.rolled_segments_unflushed:
                        await part.flush_rolled()
                except StorageError as exc:
                    log.error("%s-%d: flush failed: %s", part.topic, part.partition, exc)

    async def _signal_loop(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        import signal

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                self.request_shutdown()

    def _install_plugins(self) -> None:
        if not self._load_plugins:
            return
        try:
            import minilog.broker.groups as groups
        except ImportError as exc:
            log.debug("no group coordinator: %s", exc)
            return
        install = getattr(groups, "install", None)
        if install is not None:
            try:
                install(self)
            except Exception:
                # The broker still serves topics; group APIs keep answering
                # COORDINATOR_NOT_AVAILABLE from the default handlers.
                log.exception("the group coordinator failed to start; group APIs are unavailable")
