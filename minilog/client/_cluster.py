"""The client's view of the cluster: bootstrap, connections per broker, metadata cache.

Theory of operation. `Cluster.start(nursery)` connects to the first
bootstrap server that answers (retrying the list with backoff until the
connect timeout, `socket_connection_setup_timeout_ms`, has passed, then
`BrokerUnavailableError`: a refused connection is reported within seconds,
not after a request timeout) and loads metadata. Later, `connection(node_id)` returns an open connection to a
broker, reconnecting lazily when the previous one broke; concurrent callers
share one connect attempt. The metadata cache maps topic -> partition
leaders; it is refreshed when older than `metadata_max_age_ms`, on demand
(`refresh()`), and by callers that got a retriable error
(NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, a lost connection).
Concurrent refreshes are coalesced into one request.

Everything here runs on the trio thread. Not thread-safe; task-safe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from minilog.errors import (
    BrokerUnavailableError,
    ClosedError,
    LeaderNotAvailableError,
    MinilogError,
    RequestTimeoutError,
    UnknownTopicOrPartitionError,
    error_for_code,
)
from minilog.protocol import ApiKey, ErrorCode

from ._connection import CONNECT_TIMEOUT_MS, BrokerConnection, Connect, open_tcp
from ._error_actions import Action, action_for

__all__ = ["Cluster", "PartitionMeta", "TopicMeta", "check_error"]

log = logging.getLogger("minilog.client")


@dataclass(frozen=True)
class PartitionMeta:
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple
    isr: tuple
    error_code: int = 0


@dataclass
class TopicMeta:
    topic: str
    error_code: int
    partitions: list[PartitionMeta] = field(default_factory=list)


def check_error(payload: dict, what: str = "") -> None:
    """Raise the BrokerError for a payload's top-level error_code, if any."""
    code = payload.get("error_code", 0)
    if code:
        msg = payload.get("error_message")
        if what and not msg:
            msg = f"{what}: {error_for_code(code).message}"
        raise error_for_code(code, msg)


class Cluster:
    def __init__(self, bootstrap: list[tuple[str, int]], *, client_id: str,
                 request_timeout_ms: int, metadata_max_age_ms: int = 300000,
                 retry_backoff_ms: int = 100, allow_auto_topic_creation: bool = False,
                 connect: Connect = open_tcp,
                 connect_timeout_ms: int = CONNECT_TIMEOUT_MS) -> None:
        self.bootstrap = bootstrap
        self.connect = connect
        self.connect_timeout_ms = connect_timeout_ms
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.metadata_max_age_s = metadata_max_age_ms / 1000
        self.retry_backoff_s = retry_backoff_ms / 1000
        self.allow_auto_topic_creation = allow_auto_topic_creation
        self.brokers: dict[int, tuple[str, int]] = {}
        self.topics: dict[str, TopicMeta] = {}
        self.cluster_id: str | None = None
        self.controller_id: int = -1
        self._conns: dict[int, BrokerConnection] = {}
        self._connecting: dict[int, trio.Event] = {}
        self._nursery: trio.Nursery | None = None   # where connection readers run
        self._metadata_time = -1e18
        self._refreshing: trio.Event | None = None
        self._wanted: set[str] = set()
        self._closed = False
        self._bootstrap_conn: BrokerConnection | None = None
        self._failed_node = -1            # the last broker a request_any could not reach

    # -- lifecycle -----------------------------------------------------

    def _connection(self, host: str, port: int, node_id: int, request_timeout_ms: int) -> BrokerConnection:
        """A new, unopened connection using this cluster's connect function and timeouts."""
        return BrokerConnection(host, port, client_id=self.client_id,
                                request_timeout_ms=request_timeout_ms, node_id=node_id,
                                connect=self.connect, connect_timeout_ms=self.connect_timeout_ms)

    async def open_connection(self, host: str, port: int, node_id: int = -1) -> BrokerConnection:
        """A connection of the caller's own (not shared, not cached), e.g. to a group coordinator."""
        assert self._nursery is not None, "Cluster.start() first"
        conn = self._connection(host, port, node_id, self.request_timeout_ms)
        await conn.open(self._nursery)
        return conn

    async def start(self, nursery: trio.Nursery) -> None:
        """Connect to a bootstrap server and load cluster metadata.

        Raises:
            BrokerUnavailableError: no bootstrap server answered in time.
            UnsupportedVersionError: the broker is too old for this client.
        """
        self._nursery = nursery
        deadline = trio.current_time() + min(self.request_timeout_ms, self.connect_timeout_ms) / 1000
        backoff = min(self.retry_backoff_s, 0.05) or 0.01
        last: MinilogError | None = None
        while True:
            for host, port in self.bootstrap:
                remaining = deadline - trio.current_time()
                if remaining <= 0:
                    break
                conn = self._connection(host, port, -1, max(1, int(remaining * 1000)))
                try:
                    await conn.open(nursery)
                except (BrokerUnavailableError, RequestTimeoutError) as exc:
                    last = exc
                    continue
                conn.request_timeout_s = self.request_timeout_ms / 1000
                conn.node_id = conn.broker_id
                self._bootstrap_conn = conn
                self._conns[conn.broker_id] = conn
                await self.refresh()
                return
            if trio.current_time() + backoff >= deadline:
                servers = ",".join(f"{h}:{p}" for h, p in self.bootstrap)
                raise BrokerUnavailableError(
                    f"no broker reachable at {servers}" + (f": {last}" if last else ""))
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._conns.values()):
            await conn.aclose()
        self._conns.clear()

    # -- connections ---------------------------------------------------

    def any_node(self) -> int:
        for node, conn in self._conns.items():
            if conn.usable:
                return node
        if self.brokers:
            return next(iter(self.brokers))
        if self._bootstrap_conn is not None:
            return self._bootstrap_conn.node_id
        raise BrokerUnavailableError("no broker known")

    async def connection(self, node_id: int) -> BrokerConnection:
        """An open connection to `node_id`; reconnects if the last one broke."""
        if self._closed:
            raise ClosedError("client is closed")
        conn = self._conns.get(node_id)
        if conn is not None and conn.usable:
            return conn
        while node_id in self._connecting:
            await self._connecting[node_id].wait()
            conn = self._conns.get(node_id)
            if conn is not None and conn.usable:
                return conn
        addr = self.brokers.get(node_id)
        if addr is None:
            if self._bootstrap_conn is not None and node_id == self._bootstrap_conn.node_id:
                addr = (self._bootstrap_conn.host, self._bootstrap_conn.port)
            else:
                raise BrokerUnavailableError(f"broker {node_id} is not in the cluster metadata")
        done = self._connecting[node_id] = trio.Event()
        try:
            conn = self._connection(addr[0], addr[1], node_id, self.request_timeout_ms)
            assert self._nursery is not None, "Cluster.start() first"
            await conn.open(self._nursery)
            self._conns[node_id] = conn
            return conn
        finally:
            del self._connecting[node_id]
            done.set()

    async def request(self, node_id: int | None, api_key: int, payload: dict,
                      attachments=(), *, expect_response: bool = True,
                      timeout_s: float | None = None):
        """Send a request to `node_id` (None: any broker) and return its Response."""
        if node_id is None:
            node_id = self.any_node()
        conn = await self.connection(node_id)
        return await conn.request(api_key, payload, attachments,
                                  expect_response=expect_response, timeout_s=timeout_s)

    def _candidates(self) -> list[int | tuple[str, int]]:
        """Where a request for any broker may go, best first: brokers we hold an open
        connection to, then every other broker in the metadata, then bootstrap
        addresses no known broker has (the metadata may be stale). The broker that
        failed last goes last, so a dead or paused broker is not asked first again
        and again."""
        nodes = [node for node, conn in self._conns.items() if conn.usable]
        nodes += [node for node in sorted(self.brokers) if node not in nodes]
        if self._failed_node in nodes:
            nodes.remove(self._failed_node)
            nodes.append(self._failed_node)
        known = set(self.brokers.values())
        out: list[int | tuple[str, int]] = [*nodes, *(a for a in self.bootstrap if a not in known)]
        if not out and self._bootstrap_conn is not None:
            out.append(self._bootstrap_conn.node_id)
        if not out:
            raise BrokerUnavailableError("no broker known")
        return out

    async def _request_at(self, where: int | tuple[str, int], api_key: int, payload: dict,
                          attachments=(), timeout_s: float | None = None):
        """A request to broker `where`, or to the broker at address `where` (which
        then joins the known brokers, as the bootstrap connection does)."""
        if isinstance(where, tuple):
            conn = await self.open_connection(*where)
            known = self._conns.get(conn.broker_id)
            if conn.broker_id < 0 or (known is not None and known.usable):
                try:
                    return await conn.request(api_key, payload, attachments, timeout_s=timeout_s)
                finally:
                    await conn.aclose()
            conn.node_id = conn.broker_id
            self._conns[conn.broker_id] = conn
            self.brokers.setdefault(conn.broker_id, where)
            where = conn.broker_id
        return await self.request(where, api_key, payload, attachments, timeout_s=timeout_s)

    async def request_any(self, api_key: int, payload: dict, attachments=(), *,
                          timeout_s: float | None = None, retries: int = 2):
        """Like request() to any broker: on a connection failure, the next candidate
        (see `_candidates`), each broker once per round, up to `retries` + 1 rounds
        with backoff between rounds (a failover: the broker asked first may be dead)."""
        last: BrokerUnavailableError | RequestTimeoutError | None = None
        for attempt in range(retries + 1):
            for where in self._candidates():
                try:
                    return await self._request_at(where, api_key, payload, attachments,
                                                  timeout_s=timeout_s)
                except (BrokerUnavailableError, RequestTimeoutError) as exc:
                    last = exc
                    if isinstance(where, int):
                        self._failed_node = where
                    log.debug("request %s to %s failed: %s", api_key, where, exc)
            if attempt < retries:
                await trio.sleep(min(self.retry_backoff_s * (attempt + 1), 1.0))
        assert last is not None
        raise last

    # -- metadata ------------------------------------------------------

    def partition_count(self, topic: str) -> int | None:
        meta = self.topics.get(topic)
        if meta is None or meta.error_code or not meta.partitions:
            return None
        return len(meta.partitions)

    def leader(self, topic: str, partition: int) -> int | None:
        meta = self.topics.get(topic)
        if meta is None or partition >= len(meta.partitions):
            return None
        p = meta.partitions[partition]
        return p.leader if p.leader >= 0 else None

    def stale(self) -> bool:
        return trio.current_time() - self._metadata_time > self.metadata_max_age_s

    async def refresh(self, topics=None) -> None:
        """Reload metadata for the cached topics plus `topics`; coalesces callers."""
        if topics:
            self._wanted.update(topics)
        if self._refreshing is not None:
            await self._refreshing.wait()
            if not topics or all(t in self.topics for t in topics):
                return
        done = self._refreshing = trio.Event()
        try:
            await self._refresh_once()
        finally:
            self._refreshing = None
            done.set()

    async def _refresh_once(self) -> None:
        wanted = sorted(self._wanted | set(self.topics))
        resp = await self.request_any(ApiKey.METADATA, {
            "topics": wanted, "allow_auto_topic_creation": self.allow_auto_topic_creation,
        })
        self._apply_metadata(resp.payload, wanted)

    async def metadata_all(self) -> dict:
        """Metadata for every topic (Kafka's `topics=null`); updates the cache."""
        resp = await self.request_any(ApiKey.METADATA, {
            "topics": None, "allow_auto_topic_creation": False})
        self._apply_metadata(resp.payload, None)
        return resp.payload

    def _apply_metadata(self, payload: dict, wanted) -> None:
        check_error(payload, "metadata")
        brokers = {b["node_id"]: (b["host"], b["port"]) for b in payload.get("brokers", [])}
        if brokers:
            self.brokers = brokers
        self.cluster_id = payload.get("cluster_id")
        self.controller_id = payload.get("controller_id", -1)
        for t in payload.get("topics", []):
            parts = sorted(
                (PartitionMeta(p["partition"], p["leader"], p.get("leader_epoch", -1),
                               tuple(p.get("replicas", ())), tuple(p.get("isr", ())),
                               p.get("error_code", 0))
                 for p in t.get("partitions", [])), key=lambda p: p.partition)
            if t["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                self.topics.pop(t["topic"], None)
                continue
            self.topics[t["topic"]] = TopicMeta(t["topic"], t["error_code"], parts)
        if wanted is None:
            listed = {t["topic"] for t in payload.get("topics", [])}
            for name in list(self.topics):
                if name not in listed:
                    del self.topics[name]
        self._metadata_time = trio.current_time()

    async def list_offsets(self, query: dict[tuple[str, int], int]) -> dict[tuple[str, int], tuple[int, int]]:
        """{(topic, partition): timestamp or sentinel} -> {(topic, partition): (offset, timestamp)}.

        One ListOffsets per partition leader. Offsets are -1 when no record
        has a timestamp at or after the one asked. A leader that cannot be
        reached or has moved (a failover) is asked again after a metadata
        refresh, until request_timeout_ms has passed (as Kafka's consumer
        retries offsetsForTimes/endOffsets).

        Raises:
            UnknownTopicOrPartitionError: a partition of a topic that does not exist.
            BrokerError: the first partition error in an answer that is not retriable
                (or still there at the deadline).
        """
        deadline = trio.current_time() + self.request_timeout_ms / 1000
        backoff = max(self.retry_backoff_s, 0.01)
        while True:
            try:
                return await self._list_offsets_once(query)
            except UnknownTopicOrPartitionError:
                raise                    # no such topic: asking again will not create it
            except MinilogError as exc:
                if action_for(exc) is Action.FATAL or trio.current_time() + backoff > deadline:
                    raise
                log.debug("list offsets failed (%s); retrying after a metadata refresh", exc)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _list_offsets_once(self, query: dict[tuple[str, int], int]) -> dict[tuple[str, int], tuple[int, int]]:
        await self.refresh(sorted({t for t, _ in query}))
        by_node: dict[int, dict[str, list]] = {}
        for (topic, partition), ts in query.items():
            node = self.leader(topic, partition)
            if node is None:
                count = self.partition_count(topic)
                if count is not None and partition < count:     # an election is under way
                    raise LeaderNotAvailableError(message=f"{topic}-{partition} has no leader")
                raise UnknownTopicOrPartitionError(message=f"unknown partition {topic}-{partition}")
            by_node.setdefault(node, {}).setdefault(topic, []).append(
                {"partition": partition, "timestamp": int(ts)})
        out = {}
        for node, topics in by_node.items():
            resp = await self.request(node, ApiKey.LIST_OFFSETS, {
                "replica_id": -1, "isolation_level": 0,
                "topics": [{"topic": t, "partitions": ps} for t, ps in topics.items()]})
            for t in resp.payload["topics"]:
                for p in t["partitions"]:
                    if p["error_code"]:
                        raise error_for_code(p["error_code"],
                                             f"{t['topic']}-{p['partition']}: "
                                             f"{error_for_code(p['error_code']).message}")
                    out[(t["topic"], p["partition"])] = (p["offset"], p["timestamp"])
        return out

    def forget(self, topic: str) -> None:
        self.topics.pop(topic, None)
        self._wanted.discard(topic)

    async def wait_for_topic(self, topic: str, timeout_s: float) -> int:
        """Return the partition count of `topic`, refreshing until it is known.

        Raises:
            UnknownTopicOrPartitionError: still unknown after `timeout_s`.
        """
        count = self.partition_count(topic)
        if count is not None:
            return count
        deadline = trio.current_time() + timeout_s
        backoff = 0.01
        while True:
            await self.refresh([topic])
            count = self.partition_count(topic)
            if count is not None:
                return count
            if trio.current_time() + backoff > deadline:
                self._wanted.discard(topic)
                raise UnknownTopicOrPartitionError(
                    message=f"topic {topic!r} not present in metadata after "
                            f"{timeout_s * 1000:g} ms")
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)
