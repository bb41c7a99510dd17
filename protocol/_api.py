"""The APIs: keys (Kafka's numbers) and the constants every codec shares.

The request model (`_messages.py`) names each API by these keys; the native
codec's payload schemas and versions live in `native/_schemas.py`, the
Kafka codec's in `kafka/`.

Shared conventions:
- Offsets and timestamps are ints (ms since the epoch for timestamps).
  ListOffsets uses Kafka's sentinels: -1 latest, -2 earliest.
- Produce with acks=0 gets no response at all, as in Kafka.
"""

from __future__ import annotations

import enum
__all__ = [
    "ApiKey",
    "LATEST_TIMESTAMP",
    "EARLIEST_TIMESTAMP",
    "RESOURCE_TOPIC",
    "RESOURCE_BROKER",
    "CONFIG_OP_SET",
    "CONFIG_OP_DELETE",
]

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
CONFIG_OP_SET = 0
CONFIG_OP_DELETE = 1


class ApiKey(enum.IntEnum):
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    LIST_GROUPS = 16
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    DESCRIBE_CONFIGS = 32
    CREATE_PARTITIONS = 37
    DELETE_GROUPS = 42
    INCREMENTAL_ALTER_CONFIGS = 44
    CONSUMER_GROUP_HEARTBEAT = 68
    CONSUMER_GROUP_DESCRIBE = 69
    DESCRIBE_TOPIC_PARTITIONS = 75
