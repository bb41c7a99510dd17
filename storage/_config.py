"""Configuration from Kafka's key names: a declarative key table and a parser.

Theory of operation: a config is described by a tuple of `ConfigKey` rows
(Kafka key, Python field, type, default, validator, unit, doc). One generic
function, `parse_config(table, mapping)`, turns a mapping of Kafka keys to
values (ints, or strings as they come from a CLI `--config K=V` or a TOML
file) into a dict of Python field names to typed, validated values. The
broker reuses the same two pieces for its own keys (min.insync.replicas,
compression.type, log.retention.check.interval.ms, ...).

`LogConfig` is the partition log's config, built from `LOG_CONFIG_KEYS`
with `LogConfig.from_kafka(mapping)`. Its defaults are Kafka's.

Error handling: `parse_config` and `LogConfig.from_kafka` raise only
`ConfigError`, whose message and `key` attribute name the offending key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Iterable, Mapping

from ._errors import ConfigError

__all__ = [
    "ConfigKey",
    "parse_config",
    "LogConfig",
    "LOG_CONFIG_KEYS",
    "at_least",
    "between",
    "one_of",
    "KiB",
    "MiB",
    "GiB",
    "LONG_MAX",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
LONG_MAX = 2**63 - 1                     # Kafka's Long.MAX_VALUE: "never"
INT_MAX = 2**31 - 1
_DAY_MS = 24 * 60 * 60 * 1000

Validator = Callable[[Any], "str | None"]   # returns an error message, or None when fine


@dataclass(frozen=True)
class ConfigKey:
    """One row of a config table."""

    name: str                  # Kafka key, e.g. "segment.bytes"
    field: str                 # Python field, e.g. "segment_bytes"
    type: type                 # int, float, str or bool
    default: Any
    validator: Validator | None = None
    unit: str = ""             # "bytes", "ms", "messages", "" for enums
    doc: str = ""


def at_least(low: int) -> Validator:
    return lambda v: None if v >= low else f"must be at least {low}, got {v}"


def between(low: int, high: int) -> Validator:
    return lambda v: None if low <= v <= high else f"must be in [{low}, {high}], got {v}"


def one_of(*choices: str) -> Validator:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, got {v!r}"


def _cleanup_policy(value: str) -> str | None:
    parts = [p.strip() for p in value.split(",")]
    if parts and len(set(parts)) == len(parts) and set(parts) <= {"delete", "compact"}:
        return None
    return f"must be delete, compact or compact,delete, got {value!r}"


def _ratio(value: float) -> str | None:
    return None if 0.0 <= value <= 1.0 else f"must be in [0, 1], got {value}"


def _minus_one_or_at_least(low: int) -> Validator:
    return lambda v: None if v == -1 or v >= low else f"must be -1 or at least {low}, got {v}"


def _coerce(key: ConfigKey, value: Any) -> Any:
    """Turn a raw value (typed or string) into `key.type`, or raise ConfigError."""
    if key.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ConfigError(key.name, f"expected true or false, got {value!r}")
    if key.type is int:
        if isinstance(value, bool):
            raise ConfigError(key.name, f"expected an integer ({key.unit or 'count'}), got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(key.name, f"expected an integer ({key.unit or 'count'}), got {value!r}")
    if key.type is str:
        if isinstance(value, str):
            return value.strip()
        raise ConfigError(key.name, f"expected a string, got {value!r}")
    if key.type is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(key.name, f"expected a number, got {value!r}")
    raise AssertionError(f"unsupported config type {key.type!r} for {key.name}")


def parse_config(
    table: Iterable[ConfigKey], mapping: Mapping[str, Any], *, strict: bool = True
) -> dict[str, Any]:
    """Parse Kafka-keyed `mapping` against `table`.

    Args:
        table: the ConfigKey rows; keys absent from `mapping` get their default.
        mapping: Kafka key -> value (typed, or a string to be parsed).
        strict: raise ConfigError for keys not in the table; otherwise ignore them
            (a topic's config holds keys for several layers).

    Returns:
        Python field name -> typed, validated value, for every row of the table.

    Raises:
        ConfigError: naming the first bad key.
    """
    rows = {key.name: key for key in table}
    if strict:
        for name in mapping:
            if name not in rows:
                raise ConfigError(str(name), "unknown config key")
    out: dict[str, Any] = {}
    for name, key in rows.items():
        value = _coerce(key, mapping[name]) if name in mapping else key.default
        if key.validator is not None:
            problem = key.validator(value)
            if problem is not None:
                raise ConfigError(name, problem)
        out[key.field] = value
    return out


LOG_CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("segment.bytes", "segment_bytes", int, 1 * GiB, between(61, INT_MAX), "bytes",
              "roll the active segment before it grows past this size"),
    ConfigKey("segment.ms", "segment_ms", int, 7 * _DAY_MS, at_least(1), "ms",
              "roll the active segment when its first batch is this old"),
    ConfigKey("retention.ms", "retention_ms", int, 7 * _DAY_MS, _minus_one_or_at_least(0), "ms",
              "delete closed segments whose newest timestamp is older; -1 keeps forever"),
    ConfigKey("retention.bytes", "retention_bytes", int, -1, _minus_one_or_at_least(0), "bytes",
              "delete oldest segments while the log is larger; -1 means no limit"),
    ConfigKey("index.interval.bytes", "index_interval_bytes", int, 4096, at_least(0), "bytes",
              "log bytes between two sparse index entries"),
    ConfigKey("segment.index.bytes", "segment_index_bytes", int, 10 * MiB, between(12, INT_MAX),
              "bytes", "index file size limit; a full index rolls the segment"),
    ConfigKey("max.message.bytes", "max_message_bytes", int, 1048588, between(61, INT_MAX),
              "bytes", "largest batch accepted by append"),
    ConfigKey("flush.messages", "flush_messages", int, LONG_MAX, at_least(1), "messages",
              "fsync after this many appended records; default never (page cache)"),
    ConfigKey("flush.ms", "flush_ms", int, LONG_MAX, at_least(0), "ms",
              "fsync when the last flush is this old (checked on append); default never"),
    ConfigKey("file.delete.delay.ms", "file_delete_delay_ms", int, 60_000, at_least(0), "ms",
              "keep deleted segment files renamed to *.deleted this long"),
    ConfigKey("cleanup.policy", "cleanup_policy", str, "delete", _cleanup_policy, "",
              "delete (time/size retention), compact (keep the latest record per key) "
              "or compact,delete (both)"),
    ConfigKey("delete.retention.ms", "delete_retention_ms", int, _DAY_MS, at_least(0), "ms",
              "compacted topics: keep a tombstone this long after its segment was first cleaned"),
    ConfigKey("min.cleanable.dirty.ratio", "min_cleanable_dirty_ratio", float, 0.5,
              _ratio, "ratio", "compacted topics: clean when dirty bytes / log bytes reaches this"),
    ConfigKey("min.compaction.lag.ms", "min_compaction_lag_ms", int, 0, at_least(0), "ms",
              "compacted topics: records younger than this are not compacted"),
    ConfigKey("max.compaction.lag.ms", "max_compaction_lag_ms", int, LONG_MAX, at_least(1), "ms",
              "compacted topics: records older than this are compacted regardless of the ratio"),
    ConfigKey("message.timestamp.type", "message_timestamp_type", str, "CreateTime",
              one_of("CreateTime", "LogAppendTime"), "",
              "keep the producer's timestamps or stamp the broker's clock"),
)


@dataclass(frozen=True)
class LogConfig:
    """The partition log's settings. Defaults are Kafka's."""

    segment_bytes: int = 1 * GiB                 # bytes, roll threshold
    segment_ms: int = 7 * _DAY_MS                # ms, roll when the first batch is older
    retention_ms: int = 7 * _DAY_MS              # ms, -1 = keep forever
    retention_bytes: int = -1                    # bytes, -1 = no size limit
    index_interval_bytes: int = 4096             # bytes of log between index entries
    segment_index_bytes: int = 10 * MiB          # bytes, index size limit per segment
    max_message_bytes: int = 1048588             # bytes, largest batch (Kafka's default)
    flush_messages: int = LONG_MAX               # records between fsyncs; never by default
    flush_ms: int = LONG_MAX                     # ms between fsyncs; never by default
    file_delete_delay_ms: int = 60_000           # ms a deleted segment lingers as *.deleted
    cleanup_policy: str = "delete"               # "delete", "compact" or "compact,delete"
    message_timestamp_type: str = "CreateTime"   # or "LogAppendTime"
    delete_retention_ms: int = _DAY_MS           # ms a cleaned tombstone is kept (compact)
    min_cleanable_dirty_ratio: float = 0.5       # dirty share of the log that triggers a clean
    min_compaction_lag_ms: int = 0               # ms before a record may be compacted
    max_compaction_lag_ms: int = LONG_MAX        # ms after which a record must be compacted

    def __post_init__(self) -> None:
        # Validate direct construction too, through the same table.
        parse_config(LOG_CONFIG_KEYS, self.to_kafka())

    @classmethod
    def from_kafka(cls, mapping: Mapping[str, Any] | None = None, *, strict: bool = False) -> LogConfig:
        """Build from Kafka keys. Keys of other layers are ignored unless `strict`."""
        return cls(**parse_config(LOG_CONFIG_KEYS, mapping or {}, strict=strict))

    def to_kafka(self) -> dict[str, Any]:
        """The config as Kafka key -> value (every key, defaults included)."""
        return {key.name: getattr(self, key.field) for key in LOG_CONFIG_KEYS}

    def replace(self, **changes: Any) -> LogConfig:
        return dataclasses.replace(self, **changes)

    @property
    def compact(self) -> bool:
        """cleanup.policy includes compact: the log cleaner keeps the latest record per key."""
        return "compact" in {p.strip() for p in self.cleanup_policy.split(",")}

    @property
    def delete(self) -> bool:
        """cleanup.policy includes delete: retention.ms / retention.bytes apply."""
        return "delete" in {p.strip() for p in self.cleanup_policy.split(",")}

    @property
    def offset_index_entries_max(self) -> int:
        return self.segment_index_bytes // 8

    @property
    def time_index_entries_max(self) -> int:
        return self.segment_index_bytes // 12
