"""Broker and topic settings by Kafka's key names, as declarative tables.

Rules:
- Every key has a type, a unit and a default on one row (`ConfigKey`, from
  `minilog.storage`); parsing goes through storage's `parse_config`, so the
  broker, the topics and the partition log share one mechanism and one
  error type (`ConfigError`, naming the key).
- Broker `log.*` keys (and `message.max.bytes`, `min.insync.replicas`,
  `compression.type`) are the *defaults* of the matching topic keys, as in
  Kafka: `log.retention.ms` -> `retention.ms`. `TOPIC_DEFAULT_FROM_BROKER`
  is that mapping.
- A topic stores only its overrides; its effective config is the broker's
  defaults overlaid with them (`BrokerConfig.topic_config(overrides)`).

Theory of operation: `BrokerConfig.from_sources(file_mapping, set_mapping)`
merges a TOML file's table and `--set K=V` pairs (the latter win), rejects
unknown keys, and validates every value. The result is immutable; read a
value by attribute (`config.num_partitions`) or by Kafka key
(`config["num.partitions"]`).

Error handling: everything here raises only `ConfigError`.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping

from minilog.broker.kafka.spec import listeners_problem
from minilog.storage import (
    LOG_CONFIG_KEYS,
    ConfigError,
    ConfigKey,
    LogConfig,
    at_least,
    between,
    one_of,
    parse_config,
)

__all__ = [
    "BROKER_CONFIG_KEYS",
    "TOPIC_CONFIG_KEYS",
    "TOPIC_DEFAULT_FROM_BROKER",
    "BrokerConfig",
    "ConfigError",
    "COMPRESSION_TYPES",
]

_MIN_MS = 60 * 1000
_INT_MAX = 2**31 - 1
COMPRESSION_TYPES = ("producer", "none", "gzip", "lz4", "zstd", "snappy")

# Topic-level keys beyond the partition log's own (storage.LOG_CONFIG_KEYS).
_TOPIC_ONLY_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("min.insync.replicas", "min_insync_replicas", int, 1, between(1, _INT_MAX), "replicas",
              "acks=all produce fails with NOT_ENOUGH_REPLICAS when the ISR is smaller"),
    ConfigKey("compression.type", "compression_type", str, "producer", one_of(*COMPRESSION_TYPES), "",
              "batches are stored as the producer sent them (no recompression, see docs)"),
)
TOPIC_CONFIG_KEYS: tuple[ConfigKey, ...] = LOG_CONFIG_KEYS + _TOPIC_ONLY_KEYS

# broker key -> topic key it supplies the default for (Kafka's names).
TOPIC_DEFAULT_FROM_BROKER: dict[str, str] = {
    "log.segment.bytes": "segment.bytes",
    "log.segment.ms": "segment.ms",
    "log.retention.ms": "retention.ms",
    "log.retention.bytes": "retention.bytes",
    "log.index.interval.bytes": "index.interval.bytes",
    "log.index.size.max.bytes": "segment.index.bytes",
    "message.max.bytes": "max.message.bytes",
    "log.flush.interval.messages": "flush.messages",
    "log.flush.interval.ms": "flush.ms",
    "log.segment.delete.delay.ms": "file.delete.delay.ms",
    "log.cleanup.policy": "cleanup.policy",
    "log.message.timestamp.type": "message.timestamp.type",
    "log.cleaner.delete.retention.ms": "delete.retention.ms",
    "log.cleaner.min.cleanable.ratio": "min.cleanable.dirty.ratio",
    "log.cleaner.min.compaction.lag.ms": "min.compaction.lag.ms",
    "log.cleaner.max.compaction.lag.ms": "max.compaction.lag.ms",
    "min.insync.replicas": "min.insync.replicas",
    "compression.type": "compression.type",
}
# Kafka spellings accepted as synonyms of the row names above.
_ALIASES = {"log.roll.ms": "log.segment.ms"}


def _derived_rows() -> tuple[ConfigKey, ...]:
    """Broker rows for topic defaults, copied from the topic rows (same type/default/unit)."""
    by_name = {key.name: key for key in TOPIC_CONFIG_KEYS}
    rows = []
    for broker_key, topic_key in TOPIC_DEFAULT_FROM_BROKER.items():
        t = by_name[topic_key]
        rows.append(ConfigKey(broker_key, broker_key.replace(".", "_"), t.type, t.default,
                              t.validator, t.unit, f"default for topic key {topic_key}: {t.doc}"))
    return tuple(rows)


BROKER_CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("broker.id", "broker_id", int, 0, between(0, _INT_MAX), "",
              "this broker's id (the --broker-id flag wins)"),
    ConfigKey("num.partitions", "num_partitions", int, 1, between(1, 10_000), "partitions",
              "partitions of a topic created with num_partitions=-1 or auto-created"),
    ConfigKey("default.replication.factor", "default_replication_factor", int, 1, between(1, 32),
              "replicas", "replicas of a new topic (a single broker supports only 1)"),
    ConfigKey("auto.create.topics.enable", "auto_create_topics_enable", bool, True, None, "",
              "create an unknown topic when a client asks for its metadata"),
    ConfigKey("log.retention.check.interval.ms", "log_retention_check_interval_ms", int, 300_000,
              at_least(1), "ms", "how often retention runs over every partition"),
    # The log cleaner (compaction, minilog.broker.log_cleaner).
    ConfigKey("log.cleaner.enable", "log_cleaner_enable", bool, True, None, "",
              "run the log cleaner (compacts topics whose cleanup.policy includes compact)"),
    ConfigKey("log.cleaner.threads", "log_cleaner_threads", int, 1, between(1, 64), "threads",
              "cleaner threads; each cleans one partition at a time, off the event loop"),
    ConfigKey("log.cleaner.io.max.bytes.per.second", "log_cleaner_io_max_bytes_per_second", float,
              float("inf"), lambda v: None if v > 0 else f"must be positive, got {v}", "bytes/s",
              "bound on the bytes all cleaner threads read and write per second (default: none)"),
    ConfigKey("log.cleaner.dedupe.buffer.size", "log_cleaner_dedupe_buffer_size", int, 128 * 1024 * 1024,
              at_least(1024 * 1024), "bytes",
              "memory of the cleaners' key -> offset maps, shared by the threads; a log with more "
              "keys than fit is cleaned in several passes"),
    ConfigKey("log.cleaner.backoff.ms", "log_cleaner_backoff_ms", int, 15_000, at_least(1), "ms",
              "how long a cleaner thread sleeps when no log is due for cleaning"),
    ConfigKey("max.connections", "max_connections", int, 10_000, at_least(1), "connections",
              "at the limit a new connection takes the slot of the longest-idle one, "
              "or is closed when none is idle"),
    ConfigKey("max.connections.per.ip", "max_connections_per_ip", int, 2_000, at_least(1),
              "connections", "connections from one client address; beyond, closed at once"),
    ConfigKey("connections.max.idle.ms", "connections_max_idle_ms", int, 600_000, at_least(1), "ms",
              "close a connection that sent nothing for this long"),
    ConfigKey("request.arrival.timeout.ms", "request_arrival_timeout_ms", int, 60_000, at_least(1),
              "ms", "minilog: a request whose first byte came must arrive whole within this "
              "(slowloris); else the connection is closed"),
    ConfigKey("request.timeout.ms", "request_timeout_ms", int, 30_000, at_least(1), "ms",
              "bound on handling one request and on sending one response"),
    ConfigKey("queued.max.requests", "queued_max_requests", int, 100, between(1, 100_000), "requests",
              "requests read ahead per connection before the broker stops reading"),
    ConfigKey("queued.max.request.bytes", "queued_max_request_bytes", int, 256 * 1024 * 1024,
              at_least(1), "bytes", "memory of requests read and responses not yet sent, all "
              "connections together; when spent, only connections holding under 2 MiB are read "
              "and fetch answers shrink (see docs/operations.md)"),
    ConfigKey("queued.max.request.bytes.per.connection", "queued_max_request_bytes_per_connection",
              int, 64 * 1024 * 1024, at_least(1), "bytes", "minilog: a connection whose queued "
              "requests and unsent responses reach this is not read from; a fetch answer is "
              "clamped to what is left of it (one batch always fits)"),
    ConfigKey("socket.request.max.bytes", "socket_request_max_bytes", int, 100 * 1024 * 1024,
              between(1024, _INT_MAX), "bytes", "largest request frame; larger closes the connection"),
    ConfigKey("fetch.max.bytes", "fetch_max_bytes", int, 55 * 1024 * 1024, at_least(1024), "bytes",
              "cap on the record bytes of one fetch response"),
    ConfigKey("fetch.max.wait.ms", "fetch_max_wait_ms", int, 30_000, at_least(0), "ms",
              "cap on a fetch's max_wait_ms (long poll)"),
    ConfigKey("kafka.port", "kafka_port", int, -1, between(-1, 65535), "",
              "port of the Kafka-protocol listener (0: a free port; -1: none)"),
    ConfigKey("listeners", "listeners", str, "", listeners_problem, "",
              "KIND://HOST:PORT,... with KIND native or kafka (empty: --host/--port and kafka.port)"),
    ConfigKey("advertised.listeners", "advertised_listeners", str, "", listeners_problem, "",
              "KIND://HOST:PORT,... clients are told to use (registration and METADATA); "
              "empty: the bound address"),
    # The cluster's control plane (minilog.broker.cluster; only with --metadata etcd://...).
    ConfigKey("broker.session.timeout.ms", "broker_session_timeout_ms", int, 6_000,
              between(1_000, 3_600_000), "ms", "the broker's etcd lease TTL (rounded up to a second): "
              "a broker silent this long is dead and its leaderships move"),
    ConfigKey("controlled.shutdown.enable", "controlled_shutdown_enable", bool, True, None, "",
              "on SIGTERM, move this broker's leaderships to other in-sync replicas before stopping"),
    ConfigKey("controlled.shutdown.timeout.ms", "controlled_shutdown_timeout_ms", int, 30_000,
              at_least(0), "ms", "minilog: how long a controlled shutdown waits for its "
              "leaderships to move"),
    ConfigKey("unclean.leader.election.enable", "unclean_leader_election_enable", bool, False, None,
              "", "elect an out-of-sync replica when no in-sync one is alive (may lose "
              "acknowledged writes)"),
    ConfigKey("auto.leader.rebalance.enable", "auto_leader_rebalance_enable", bool, True, None, "",
              "move leadership back to the preferred replica once it is in sync again"),
    ConfigKey("shutdown.timeout.ms", "shutdown_timeout_ms", int, 5_000, at_least(0), "ms",
              "minilog: on SIGTERM, how long in-flight requests may still run"),
    # Replication (read by minilog.broker.replica_manager, replication, replica_fetcher).
    ConfigKey("replica.lag.time.max.ms", "replica_lag_time_max_ms", int, 30_000, at_least(1), "ms",
              "a follower not caught up with the leader for this long leaves the ISR"),
    ConfigKey("replica.fetch.wait.max.ms", "replica_fetch_wait_max_ms", int, 500, at_least(0), "ms",
              "long poll of a follower's fetch (keep below replica.lag.time.max.ms)"),
    ConfigKey("replica.fetch.max.bytes", "replica_fetch_max_bytes", int, 1024 * 1024, at_least(1),
              "bytes", "record bytes a follower asks per partition per fetch (one batch at least)"),
    ConfigKey("replica.fetch.response.max.bytes", "replica_fetch_response_max_bytes", int,
              10 * 1024 * 1024, at_least(1024), "bytes", "record bytes of one follower fetch"),
    ConfigKey("replica.fetch.backoff.ms", "replica_fetch_backoff_ms", int, 1_000, at_least(1), "ms",
              "a follower's pause after a fetch error or a lost connection"),
    ConfigKey("replica.socket.timeout.ms", "replica_socket_timeout_ms", int, 30_000, at_least(1), "ms",
              "bound on a follower's connect and on each of its requests"),
    ConfigKey("replica.high.watermark.checkpoint.interval.ms",
              "replica_high_watermark_checkpoint_interval_ms", int, 5_000, at_least(1), "ms",
              "how often high watermarks are written to replication-offset-checkpoint"),
    # Consumer groups (read by minilog.broker.groups).
    ConfigKey("offsets.topic.num.partitions", "offsets_topic_num_partitions", int, 50,
              between(1, 10_000), "partitions", "partitions of __consumer_offsets"),
    ConfigKey("offsets.topic.replication.factor", "offsets_topic_replication_factor", int, 1,
              between(1, 32), "replicas", "replicas of __consumer_offsets (in a cluster: at most "
              "the live brokers when it is created; a single broker: 1)"),
    ConfigKey("offsets.topic.segment.bytes", "offsets_topic_segment_bytes", int, 100 * 1024 * 1024,
              at_least(1024), "bytes", "segment.bytes of __consumer_offsets"),
    ConfigKey("offsets.retention.minutes", "offsets_retention_minutes", int, 10_080, at_least(1),
              "minutes", "drop committed offsets of an empty group after this long"),
    ConfigKey("offsets.retention.check.interval.ms", "offsets_retention_check_interval_ms", int,
              600_000, at_least(1), "ms", "how often expired committed offsets are dropped"),
    ConfigKey("offset.metadata.max.bytes", "offset_metadata_max_bytes", int, 4096, at_least(0),
              "bytes", "largest metadata string of a committed offset"),
    ConfigKey("group.min.session.timeout.ms", "group_min_session_timeout_ms", int, 6_000,
              at_least(1), "ms", "smallest session timeout a member may use"),
    ConfigKey("group.max.session.timeout.ms", "group_max_session_timeout_ms", int, 1_800_000,
              at_least(1), "ms", "largest session timeout a member may use"),
    ConfigKey("group.consumer.session.timeout.ms", "group_consumer_session_timeout_ms", int, 45_000,
              at_least(1), "ms", "a member that does not heartbeat this long is removed"),
    ConfigKey("group.consumer.heartbeat.interval.ms", "group_consumer_heartbeat_interval_ms", int,
              5_000, at_least(1), "ms", "heartbeat interval the coordinator tells members"),
    ConfigKey("group.consumer.max.size", "group_consumer_max_size", int, _INT_MAX, at_least(1),
              "members", "members per group; more get GROUP_MAX_SIZE_REACHED"),
    ConfigKey("group.consumer.assignors", "group_consumer_assignors", str, "sticky,range,roundrobin",
              None, "", "server-side assignors, the first is the default"),
) + _derived_rows()

_ROWS = {key.name: key for key in BROKER_CONFIG_KEYS}


class BrokerConfig:
    """The broker's validated, immutable settings.

    Read by attribute (`config.num_partitions`) or Kafka key
    (`config["num.partitions"]`). Task-safe: never mutated after creation.
    """

    __slots__ = ("_values", "_explicit")

    def __init__(self, values: Mapping[str, Any], explicit: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))        # field -> value
        object.__setattr__(self, "_explicit", dict(explicit))    # Kafka key -> raw value

    @classmethod
    def from_sources(cls, *mappings: Mapping[str, Any]) -> BrokerConfig:
        """Merge mappings of Kafka key -> value (later ones win) and validate.

        Raises:
            ConfigError: an unknown key or a bad value, naming the key.
        """
        merged: dict[str, Any] = {}
        for mapping in mappings:
            for name, value in mapping.items():
                merged[_ALIASES.get(name, name)] = value
        return cls(parse_config(BROKER_CONFIG_KEYS, merged, strict=True), merged)

    def __getattr__(self, field: str) -> Any:
        try:
            return self._values[field]
        except KeyError:
            raise AttributeError(field) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("BrokerConfig is immutable; build a new one")

    def __getitem__(self, kafka_key: str) -> Any:
        key = _ROWS[_ALIASES.get(kafka_key, kafka_key)]
        return self._values[key.field]

    def is_default(self, kafka_key: str) -> bool:
        return kafka_key not in self._explicit

    def with_overrides(self, **fields: Any) -> BrokerConfig:
        values = dict(self._values)
        values.update(fields)
        return BrokerConfig(values, self._explicit)

    def topic_defaults(self) -> dict[str, Any]:
        """Topic key -> default value, from the broker's log.* settings."""
        return {topic_key: self[broker_key] for broker_key, topic_key in TOPIC_DEFAULT_FROM_BROKER.items()}

    def topic_config(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Effective topic config (Kafka key -> typed value): defaults plus `overrides`.

        Raises:
            ConfigError: an unknown topic key or a bad value.
        """
        merged = self.topic_defaults()
        merged.update(overrides)
        fields = parse_config(TOPIC_CONFIG_KEYS, merged, strict=True)
        return {key.name: fields[key.field] for key in TOPIC_CONFIG_KEYS}

    def log_config(self, overrides: Mapping[str, Any]) -> LogConfig:
        """The partition log's config for a topic with `overrides`."""
        return LogConfig.from_kafka(self.topic_config(overrides))


def normalize_topic_overrides(overrides: Mapping[str, Any]) -> dict[str, str]:
    """Topic overrides as Kafka key -> string (how they persist and are described).

    Raises:
        ConfigError: an unknown key or a value that does not parse.
    """
    rows = {key.name: key for key in TOPIC_CONFIG_KEYS}
    out = {}
    for name, value in overrides.items():
        if name not in rows:
            raise ConfigError(str(name), "unknown topic config key")
        if value is None:
            raise ConfigError(name, "a value is required")
        typed = parse_config((rows[name],), {name: value})[rows[name].field]
        out[name] = str(typed).lower() if isinstance(typed, bool) else str(typed)
    return out


def _fmt_default(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value == 2**63 - 1:
        return "9223372036854775807 (never)"
    return str(value)


def config_markdown(table: tuple[ConfigKey, ...]) -> str:
    """A Markdown table of `table` (docs/configuration.md is generated from it)."""
    lines = ["| Key | Unit | Default | Meaning |", "|---|---|---|---|"]
    for key in table:
        lines.append(f"| `{key.name}` | {key.unit or '-'} | `{_fmt_default(key.default)}` | {key.doc} |")
    return "\n".join(lines)


if __name__ == "__main__":       # python -m minilog.broker.config: print both tables
    print("Broker settings\n\n" + config_markdown(BROKER_CONFIG_KEYS))
    print("\nTopic settings\n\n" + config_markdown(TOPIC_CONFIG_KEYS))
