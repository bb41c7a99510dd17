"""Error codes carried in responses: Kafka's numbers, names and retriable flags.

Every response payload may carry a top-level `error_code` (the request failed
as a whole, e.g. INVALID_REQUEST) and per-topic / per-partition `error_code`
fields. Codes use Kafka's numbering so Kafka users recognise them; the
`retriable` flag tells a client whether retrying the same request may succeed.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorCode", "RETRIABLE", "error_message", "is_retriable"]


class ErrorCode(enum.IntEnum):
    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_FETCH_SIZE = 4
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    BROKER_NOT_AVAILABLE = 8
    REPLICA_NOT_AVAILABLE = 9
    MESSAGE_TOO_LARGE = 10
    OFFSET_METADATA_TOO_LARGE = 12
    NETWORK_EXCEPTION = 13
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    RECORD_LIST_TOO_LARGE = 18
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_SESSION_TIMEOUT = 26
    UNKNOWN_MEMBER_ID = 25
    REBALANCE_IN_PROGRESS = 27
    INVALID_COMMIT_OFFSET_SIZE = 28
    INVALID_TIMESTAMP = 32
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_REPLICA_ASSIGNMENT = 39
    INVALID_CONFIG = 40
    INVALID_REQUEST = 42
    UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
    POLICY_VIOLATION = 44
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    KAFKA_STORAGE_ERROR = 56
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    FENCED_LEADER_EPOCH = 74
    UNKNOWN_LEADER_EPOCH = 75
    UNSUPPORTED_COMPRESSION_TYPE = 76
    INVALID_RECORD = 87
    UNKNOWN_PRODUCER_ID = 59
    GROUP_MAX_SIZE_REACHED = 81
    FENCED_MEMBER_EPOCH = 110
    UNRELEASED_INSTANCE_ID = 111
    UNSUPPORTED_ASSIGNOR = 112
    STALE_MEMBER_EPOCH = 113
    RESOURCE_LIMIT_EXCEEDED = 1000   # minilog: a per-connection or per-broker limit was hit


RETRIABLE = frozenset(
    {
        ErrorCode.CORRUPT_MESSAGE,  # retriable in Kafka: the bytes may have been damaged in transit
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.REQUEST_TIMED_OUT,
        ErrorCode.REPLICA_NOT_AVAILABLE,
        ErrorCode.NETWORK_EXCEPTION,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
        ErrorCode.NOT_COORDINATOR,
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ErrorCode.REBALANCE_IN_PROGRESS,
        ErrorCode.KAFKA_STORAGE_ERROR,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
        ErrorCode.RESOURCE_LIMIT_EXCEEDED,
    }
)

_MESSAGES = {
    ErrorCode.UNKNOWN_SERVER_ERROR: "unexpected error on the broker",
    ErrorCode.OFFSET_OUT_OF_RANGE: "offset is outside the partition's log",
    ErrorCode.CORRUPT_MESSAGE: "record batch failed its CRC or format check",
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: "unknown topic or partition",
    ErrorCode.NOT_LEADER_OR_FOLLOWER: "this broker is not the partition's leader",
    ErrorCode.REQUEST_TIMED_OUT: "request timed out",
    ErrorCode.MESSAGE_TOO_LARGE: "record batch is larger than max.message.bytes",
    ErrorCode.NOT_ENOUGH_REPLICAS: "fewer in-sync replicas than min.insync.replicas",
    ErrorCode.INVALID_REQUIRED_ACKS: "acks must be -1 (all), 0 or 1",
    ErrorCode.TOPIC_ALREADY_EXISTS: "topic already exists",
    ErrorCode.INVALID_PARTITIONS: "invalid partition count",
    ErrorCode.INVALID_REPLICATION_FACTOR: "invalid replication factor",
    ErrorCode.INVALID_CONFIG: "invalid configuration",
    ErrorCode.INVALID_REQUEST: "malformed request",
    ErrorCode.UNSUPPORTED_VERSION: "unsupported API version",
    ErrorCode.INVALID_TOPIC_EXCEPTION: "invalid topic name",
    ErrorCode.NON_EMPTY_GROUP: "the group has active members",
    ErrorCode.GROUP_ID_NOT_FOUND: "unknown group",
    ErrorCode.FENCED_MEMBER_EPOCH: "member epoch is fenced; rejoin the group",
    ErrorCode.STALE_MEMBER_EPOCH: "member epoch is stale",
    ErrorCode.UNKNOWN_MEMBER_ID: "unknown member id",
    ErrorCode.RESOURCE_LIMIT_EXCEEDED: "a broker resource limit was reached",
}


def error_message(code: int) -> str:
    """A human-readable default message for `code`."""
    try:
        member = ErrorCode(code)
    except ValueError:
        return f"unknown error code {code}"
    return _MESSAGES.get(member, member.name.lower().replace("_", " "))


def is_retriable(code: int) -> bool:
    return code in RETRIABLE
