"""AsyncAdmin: topics, configs, partitions and offsets, trio-native.

Every method sends one request (to the controller or any broker; a
single-broker cluster has one) and raises the `BrokerError` subclass of the
first error code in the answer, so `create_topic` on an existing name raises
`TopicAlreadyExistsError`, `delete_topic` on a missing one
`UnknownTopicOrPartitionError`, and so on.

Extension: group administration (list_groups, describe_group, ...) lives in
`_group_admin.py` as a mixin `GroupAdminMixin`; when that module exists its
methods are mixed into `AsyncAdmin` (they use `self._cluster` and
`self._request`). The sync `Admin` forwards any public coroutine method of
`AsyncAdmin` automatically.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from minilog.errors import ClosedError, MinilogError, UnknownTopicOrPartitionError, error_for_code
from minilog.protocol import (
    CONFIG_OP_DELETE,
    CONFIG_OP_SET,
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    RESOURCE_TOPIC,
    ApiKey,
)

from ._cluster import Cluster, check_error
from ._config import AdminConfig, parse_bootstrap
from ._connection import Connect, open_tcp
from ._lifecycle import ClientLifecycle, background

try:  # the group engineer's mixin (next issue)
    from ._group_admin import GroupAdminMixin as _GroupMixin
except ImportError:  # pragma: no cover - until it lands
    class _GroupMixin:  # type: ignore[no-redef]
        pass

__all__ = ["AsyncAdmin", "TopicDescription", "PartitionInfo", "ClusterMetadata"]

_SENTINELS = {"earliest": EARLIEST_TIMESTAMP, "latest": LATEST_TIMESTAMP}


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    leader: int
    leader_epoch: int
    replicas: list
    isr: list
    log_start_offset: int = -1
    log_end_offset: int = -1
    high_watermark: int = -1
    size_bytes: int = -1
    cleanable_ratio: float | None = None     # compacted topics only


@dataclass(frozen=True)
class TopicDescription:
    name: str
    partitions: list[PartitionInfo]
    config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterMetadata:
    cluster_id: str | None
    controller_id: int
    brokers: dict            # node_id -> (host, port): the live (registered) brokers
    topics: dict             # name -> number of partitions
    # name -> [PartitionInfo] with leader, leader_epoch, replicas and isr (offsets unknown: -1);
    # leader -1 when the partition has none (offline)
    partitions: dict = field(default_factory=dict)


def _raise_for(results: list, key: str = "name") -> None:
    for r in results:
        if r.get("error_code"):
            raise error_for_code(r["error_code"], r.get("error_message") or
                                 f"{r.get(key)}: {error_for_code(r['error_code']).message}")


def _check_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError("topic name must be a non-empty str")
    return name


class AsyncAdmin(_GroupMixin, ClientLifecycle):
    """`async with AsyncAdmin("localhost:9092") as admin: await admin.create_topic("t", 3)`."""

    def __init__(self, bootstrap_servers="localhost:9092", *, connect: Connect = open_tcp,
                 **options) -> None:
        self.config = cfg = AdminConfig.from_kwargs(**options)
        self._cluster = Cluster(parse_bootstrap(bootstrap_servers), client_id=cfg.client_id,
                                request_timeout_ms=cfg.request_timeout_ms,
                                metadata_max_age_ms=cfg.metadata_max_age_ms, connect=connect,
                                connect_timeout_ms=cfg.socket_connection_setup_timeout_ms)
        self._timeout_ms = cfg.request_timeout_ms

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[AsyncAdmin]:
        async with background(self._cluster):
            yield self

    async def _request(self, api_key: int, payload: dict, node: int | None = None):
        if self._state != "running":
            raise ClosedError(f"admin client is {self._state}")
        if node is None:
            node = self._cluster.controller_id
            if node < 0 or node not in self._cluster.brokers:
                node = None
        if node is None:
            return (await self._cluster.request_any(api_key, payload)).payload
        return (await self._cluster.request(node, api_key, payload)).payload

    # -- topics ----------------------------------------------------------

    async def create_topics(self, topics: list, *, validate_only: bool = False) -> None:
        """Create several topics: [(name, partitions, replication_factor, config)] or dicts.

        Raises the error of the first topic that failed (e.g. TopicAlreadyExistsError).
        """
        specs = []
        for t in topics:
            if isinstance(t, dict):
                t = (t["name"], t.get("partitions", 1), t.get("replication_factor", 1),
                     t.get("config"))
            t = tuple(t)
            name, partitions, rf, config = t + (None, 1, 1, None)[len(t):]
            specs.append({"name": _check_name(name), "num_partitions": int(partitions),
                          "replication_factor": int(rf),
                          "configs": {str(k): str(v) for k, v in (config or {}).items()}})
        payload = await self._request(ApiKey.CREATE_TOPICS, {
            "topics": specs, "timeout_ms": self._timeout_ms, "validate_only": validate_only})
        check_error(payload, "create topics")
        _raise_for(payload["topics"])

    async def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1,
                           config: dict | None = None) -> None:
        """Create one topic. Raises TopicAlreadyExistsError, InvalidPartitionsError, ..."""
        await self.create_topics([(name, partitions, replication_factor, config)])

    async def delete_topics(self, names: list[str]) -> None:
        payload = await self._request(ApiKey.DELETE_TOPICS, {
            "topics": [_check_name(n) for n in names], "timeout_ms": self._timeout_ms})
        check_error(payload, "delete topics")
        _raise_for(payload["topics"])
        for n in names:
            self._cluster.forget(n)

    async def delete_topic(self, name: str) -> None:
        """Delete a topic. Raises UnknownTopicOrPartitionError when it does not exist."""
        await self.delete_topics([name])

    async def list_topics(self, internal: bool = False) -> list[str]:
        """Names of the topics, sorted (internal `__*` topics only when asked)."""
        payload = await self._cluster.metadata_all()
        return sorted(t["topic"] for t in payload["topics"]
                      if internal or not t["topic"].startswith("__"))

    async def describe_topic(self, name: str) -> TopicDescription:
        """Partitions (leader, replicas, ISR, offsets, size) and the topic's config.

        A broker answers with the offsets and size of its own replicas, so in a
        cluster each partition's offsets and size come from its leader (one more
        request per leader that did not answer the first; a leader that cannot be
        reached leaves the first answer's figures, which are its follower's)."""
        payload = await self._request(ApiKey.DESCRIBE_TOPIC_PARTITIONS,
                                      {"topics": [_check_name(name)]})
        check_error(payload, "describe topic")
        parts = {p.partition: p for p in self._described(payload, name)}
        leaders = sorted({p.leader for p in parts.values() if p.leader >= 0})
        if len(self._cluster.brokers) > 1:
            for leader in leaders:
                try:
                    answer = (await self._cluster.request(leader, ApiKey.DESCRIBE_TOPIC_PARTITIONS,
                                                          {"topics": [name]})).payload
                    check_error(answer, "describe topic")
                    for p in self._described(answer, name):
                        if p.leader == leader and p.partition in parts:
                            parts[p.partition] = p
                except (MinilogError, OSError):
                    continue  # keep the first answer's figures for its partitions
        return TopicDescription(name, [parts[i] for i in sorted(parts)], await self.describe_configs(name))

    @staticmethod
    def _described(payload: dict, name: str) -> list[PartitionInfo]:
        topics = [t for t in payload["topics"] if t["topic"] == name]
        if not topics:
            raise UnknownTopicOrPartitionError(message=f"unknown topic {name!r}")
        t = topics[0]
        if t["error_code"]:
            raise error_for_code(t["error_code"], f"topic {name!r}: "
                                 f"{error_for_code(t['error_code']).message}")
        return [PartitionInfo(p["partition"], p["leader"], p["leader_epoch"], list(p["replicas"]),
                              list(p["isr"]), p["log_start_offset"], p["log_end_offset"],
                              p["high_watermark"], p["size_bytes"], p.get("cleanable_ratio"))
                for p in sorted(t["partitions"], key=lambda p: p["partition"])]

    async def describe_configs(self, topic: str, *, verbose: bool = False) -> dict:
        """The topic's effective config {key: value}; verbose adds source and flags."""
        payload = await self._request(ApiKey.DESCRIBE_CONFIGS, {"resources": [
            {"resource_type": RESOURCE_TOPIC, "resource_name": _check_name(topic),
             "config_names": None}]})
        check_error(payload, "describe configs")
        _raise_for(payload["results"], "resource_name")
        out = {}
        for r in payload["results"]:
            for c in r["configs"]:
                out[c["name"]] = ({"value": c["value"], "source": c["source"],
                                   "is_default": c["is_default"], "read_only": c["read_only"]}
                                  if verbose else c["value"])
        return out

    async def alter_configs(self, topic: str, changes: dict, *, validate_only: bool = False) -> None:
        """Set keys (value) or reset them to the default (None): incremental, like Kafka's."""
        configs = [{"name": str(k), "op": CONFIG_OP_DELETE if v is None else CONFIG_OP_SET,
                    "value": None if v is None else str(v)} for k, v in changes.items()]
        payload = await self._request(ApiKey.INCREMENTAL_ALTER_CONFIGS, {
            "resources": [{"resource_type": RESOURCE_TOPIC, "resource_name": _check_name(topic),
                           "configs": configs}], "validate_only": validate_only})
        check_error(payload, "alter configs")
        _raise_for(payload["results"], "resource_name")

    async def create_partitions(self, topic: str, count: int, *, validate_only: bool = False) -> None:
        """Grow `topic` to `count` partitions in total. Raises InvalidPartitionsError."""
        payload = await self._request(ApiKey.CREATE_PARTITIONS, {
            "topics": [{"name": _check_name(topic), "count": int(count)}],
            "timeout_ms": self._timeout_ms, "validate_only": validate_only})
        check_error(payload, "create partitions")
        _raise_for(payload["results"])
        self._cluster.forget(topic)

    async def list_offsets(self, query: dict) -> dict:
        """{(topic, partition): "earliest" | "latest" | ts_ms} -> {(topic, partition): offset}.

        For a timestamp, the offset of the first record at or after it (-1 if none).
        """
        topics: dict[str, list] = {}
        for (topic, partition), spec in query.items():
            ts = _SENTINELS.get(spec, spec) if isinstance(spec, str) else spec
            if type(ts) is not int or (ts < 0 and ts not in _SENTINELS.values()):
                raise ValueError(f"{topic}-{partition}: expected 'earliest', 'latest' or ms")
            topics.setdefault(topic, []).append({"partition": partition, "timestamp": ts})
        if self._state != "running":
            raise ClosedError(f"admin client is {self._state}")
        found = await self._cluster.list_offsets(
            {(topic, p["partition"]): p["timestamp"] for topic, ps in topics.items() for p in ps})
        return {tp: offset for tp, (offset, _) in found.items()}

    async def metadata(self) -> ClusterMetadata:
        """Brokers, controller and topics (name -> partition count), and each partition's
        leader, replicas and ISR (`partitions`), as one broker's Metadata answer has them."""
        payload = await self._cluster.metadata_all()
        partitions = {t["topic"]: [PartitionInfo(p["partition"], p["leader"], p.get("leader_epoch", -1),
                                                 list(p.get("replicas", ())), list(p.get("isr", ())))
                                   for p in sorted(t["partitions"], key=lambda p: p["partition"])]
                      for t in payload["topics"]}
        return ClusterMetadata(payload.get("cluster_id"), payload.get("controller_id", -1),
                               {b["node_id"]: (b["host"], b["port"]) for b in payload["brokers"]},
                               {t["topic"]: len(t["partitions"]) for t in payload["topics"]},
                               partitions)
