"""Where a group lives, and the coordinator's settings.

Rules:
- A group belongs to partition `group_partition(group_id, n)` of
  `__consumer_offsets`: a stable hash (Java's String.hashCode, as Kafka,
  never Python's randomized `hash()`), so every broker and every restart
  agrees on it. The coordinator of a group is the leader of that partition.
- `__consumer_offsets` is an ordinary topic with the configs
  `offsets_topic_configs` gives it (no compaction yet: every commit is
  kept until retention, which is off).
- `CoordinatorConfig` holds the group.* and offsets.* broker settings the
  coordinator uses, each with its Kafka default; `from_broker_config` reads
  them from the broker's settings by their Kafka names.

Pure: no trio, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._assignors import ASSIGNORS
from ._offsets import METADATA_BYTES_MAX

__all__ = ["OFFSETS_TOPIC", "CoordinatorConfig", "group_partition", "java_string_hash",
           "offsets_topic_configs"]

OFFSETS_TOPIC = "__consumer_offsets"


def java_string_hash(s: str) -> int:
    """Java's String.hashCode (UTF-16 code units, int32 wrap-around), as Kafka uses."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def group_partition(group_id: str, num_partitions: int) -> int:
    """The `__consumer_offsets` partition holding `group_id` (Kafka's rule,
    including Utils.abs mapping Integer.MIN_VALUE to 0)."""
    h = java_string_hash(group_id)
    return (0 if h == -(1 << 31) else abs(h)) % num_partitions


@dataclass(frozen=True)
class CoordinatorConfig:
    offsets_topic_num_partitions: int = 50          # partitions of __consumer_offsets
    offsets_topic_segment_bytes: int = 100 * 1024 * 1024
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000   # offsets of an empty group live this long
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = METADATA_BYTES_MAX
    session_timeout_min_ms: int = 6_000
    session_timeout_max_ms: int = 1_800_000
    session_timeout_ms: int = 45_000                # default when the member sends none
    heartbeat_interval_ms: int = 5_000
    group_max_size: int = 2**31 - 1                 # members per group
    assignors: tuple[str, ...] = ("sticky", "range", "roundrobin")

    @classmethod
    def from_broker_config(cls, c: Any) -> CoordinatorConfig:
        assignors = tuple(a.strip() for a in str(c.group_consumer_assignors).split(",")
                          if a.strip() in ASSIGNORS) or cls.assignors
        return cls(
            offsets_topic_num_partitions=c.offsets_topic_num_partitions,
            offsets_topic_segment_bytes=c.offsets_topic_segment_bytes,
            offsets_retention_ms=c.offsets_retention_minutes * 60_000,
            offsets_retention_check_interval_ms=c.offsets_retention_check_interval_ms,
            offset_metadata_max_bytes=c.offset_metadata_max_bytes,
            session_timeout_min_ms=c.group_min_session_timeout_ms,
            session_timeout_max_ms=c.group_max_session_timeout_ms,
            session_timeout_ms=c.group_consumer_session_timeout_ms,
            heartbeat_interval_ms=c.group_consumer_heartbeat_interval_ms,
            group_max_size=c.group_consumer_max_size,
            assignors=assignors,
        )


def offsets_topic_configs(config: CoordinatorConfig) -> dict[str, str]:
    """Topic configs of `__consumer_offsets` (no compaction yet: keep every commit)."""
    return {"retention.ms": "-1", "retention.bytes": "-1",
            "segment.bytes": str(config.offsets_topic_segment_bytes)}
