"""The request model: one typed request and response class per API, codec-neutral.

Rules:
- Handlers take and return these objects and never see which codec (native
  msgpack frames, Kafka's binary protocol) a request came through. A codec
  turns bytes into a request object and a response object into bytes.
- Field names are the native schemas' names (`native/_schemas.py`), so the
  native codec converts by name; a second codec maps its own fields onto
  these and may add fields with defaults at the end of a class.
- Record batches are `memoryview`s (requests: slices of the received frame,
  writable so offsets can be stamped in place; responses: file bytes as
  read). `None` means no records.
- Every request class names its API (`API_KEY`); `ErrorResponse` answers any
  API when the request failed as a whole (each codec encodes it in that
  API's response shape).
- Classes are mutable `slots` dataclasses: cheap to build on the hot path
  (no frozen `__setattr__` detour). Treat received objects as read-only.

Layout: this module holds the envelope (`RequestHeader`, `BadRequest`,
`ErrorResponse`), the data-path APIs and the codecs' tables;
`_messages_admin.py` the topic-administration APIs; `_messages_groups.py`
the consumer-group APIs.

Theory of operation: `native/` converts a msgpack payload to the request
class of its API key (`REQUEST_TYPES`) and a response object back to a map;
`minilog.broker.handlers` routes on the request's class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from . import _messages_admin as _admin
from . import _messages_groups as _groups
from ._api import ApiKey

__all__ = [
    "Records",
    "RequestHeader",
    "BadRequest",
    "ErrorResponse",
    "ApiVersionsRequest",
    "ApiVersionsResponse",
    "MetadataRequest",
    "MetadataBroker",
    "PartitionMetadata",
    "MetadataTopic",
    "MetadataResponse",
    "ProducePartition",
    "ProduceTopic",
    "ProduceRequest",
    "ProducePartitionResponse",
    "ProduceTopicResponse",
    "ProduceResponse",
    "FetchPartition",
    "FetchTopic",
    "FetchRequest",
    "FetchPartitionResponse",
    "FetchTopicResponse",
    "FetchResponse",
    "OffsetForLeaderPartition",
    "OffsetForLeaderTopic",
    "OffsetForLeaderEpochRequest",
    "EpochEndOffset",
    "OffsetForLeaderTopicResult",
    "OffsetForLeaderEpochResponse",
    "ListOffsetsPartition",
    "ListOffsetsTopic",
    "ListOffsetsRequest",
    "ListOffsetsPartitionResponse",
    "ListOffsetsTopicResponse",
    "ListOffsetsResponse",
    "REQUEST_TYPES",
    "RESPONSE_TYPES",
]

Records = memoryview          # record batch bytes, back to back (one or more batches)


@dataclass(slots=True)
class RequestHeader:
    """What every request carries besides its body."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str
    size_bytes: int = 0                  # memory the request holds (for read-ahead limits)


@dataclass(slots=True)
class BadRequest:
    """A well-framed request a codec could not turn into a request object.

    The broker answers it with `ErrorResponse(error_code, message)` (unless
    `respond` is False, as for a produce with acks=0) and the connection
    stays usable. A frame that cannot be parsed at all is a codec error
    (`FrameError`) instead, and closes the connection.
    """

    error_code: int
    message: str
    respond: bool = True


@dataclass(slots=True)
class ErrorResponse:
    """The answer to any API when the request failed as a whole."""

    error_code: int
    error_message: str | None = None


# -- ApiVersions, Metadata -------------------------------------------------------------------

@dataclass(slots=True)
class ApiVersionsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.API_VERSIONS
    client_software_name: str = ""
    client_software_version: str = ""


@dataclass(slots=True)
class ApiVersionsResponse:
    error_code: int
    api_versions: list[list[int]]        # [api_key, min_version, max_version]
    broker_version: str
    broker_id: int


@dataclass(slots=True)
class MetadataRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.METADATA
    topics: list[str] | None = None      # None: every topic
    allow_auto_topic_creation: bool = False


@dataclass(slots=True)
class MetadataBroker:
    node_id: int
    host: str
    port: int


@dataclass(slots=True)
class PartitionMetadata:
    partition: int
    error_code: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]


@dataclass(slots=True)
class MetadataTopic:
    topic: str
    error_code: int
    partitions: list[PartitionMetadata]
    is_internal: bool = False


@dataclass(slots=True)
class MetadataResponse:
    brokers: list[MetadataBroker]
    cluster_id: str
    controller_id: int
    topics: list[MetadataTopic]


# -- Produce ---------------------------------------------------------------------------------

@dataclass(slots=True)
class ProducePartition:
    partition: int
    records: Records | None              # one or more record batches


@dataclass(slots=True)
class ProduceTopic:
    topic: str
    partitions: list[ProducePartition]


@dataclass(slots=True)
class ProduceRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.PRODUCE
    acks: int
    timeout_ms: int
    topics: list[ProduceTopic]


@dataclass(slots=True)
class ProducePartitionResponse:
    partition: int
    error_code: int = 0
    error_message: str | None = None
    base_offset: int = -1
    log_append_time: int = -1
    log_start_offset: int = -1


@dataclass(slots=True)
class ProduceTopicResponse:
    topic: str
    partitions: list[ProducePartitionResponse]


@dataclass(slots=True)
class ProduceResponse:
    topics: list[ProduceTopicResponse]


# -- Fetch -----------------------------------------------------------------------------------

@dataclass(slots=True)
class FetchPartition:
    partition: int
    fetch_offset: int
    partition_max_bytes: int
    current_leader_epoch: int = -1
    last_fetched_epoch: int | None = None   # followers: epoch of their last batch (KIP-595's check)


@dataclass(slots=True)
class FetchTopic:
    topic: str
    partitions: list[FetchPartition]


@dataclass(slots=True)
class FetchRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.FETCH
    replica_id: int                      # -1 for consumers; the broker id for followers
    max_wait_ms: int
    min_bytes: int
    max_bytes: int
    isolation_level: int
    topics: list[FetchTopic]


@dataclass(slots=True)
class FetchPartitionResponse:
    partition: int
    error_code: int = 0
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    records: Records | bytes | None = None
    diverging_epoch: int = -1            # followers: the log diverges from the leader's ...
    diverging_end_offset: int = -1       # ... at this epoch's end offset (truncate, then fetch)


@dataclass(slots=True)
class FetchTopicResponse:
    topic: str
    partitions: list[FetchPartitionResponse]


@dataclass(slots=True)
class FetchResponse:
    error_code: int
    topics: list[FetchTopicResponse]


# -- OffsetForLeaderEpoch (followers after a leader change, KIP-101/KIP-279) ----------------

@dataclass(slots=True)
class OffsetForLeaderPartition:
    partition: int
    current_leader_epoch: int            # the asker's view of the leader's epoch (-1: none)
    leader_epoch: int                    # the epoch whose end offset is wanted


@dataclass(slots=True)
class OffsetForLeaderTopic:
    topic: str
    partitions: list[OffsetForLeaderPartition]


@dataclass(slots=True)
class OffsetForLeaderEpochRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.OFFSET_FOR_LEADER_EPOCH
    replica_id: int                      # the asking follower's broker id
    topics: list[OffsetForLeaderTopic]


@dataclass(slots=True)
class EpochEndOffset:
    partition: int
    error_code: int = 0
    leader_epoch: int = -1               # largest epoch <= the one asked for (-1: none)
    end_offset: int = -1                 # where that epoch ends on the leader's log


@dataclass(slots=True)
class OffsetForLeaderTopicResult:
    topic: str
    partitions: list[EpochEndOffset]


@dataclass(slots=True)
class OffsetForLeaderEpochResponse:
    topics: list[OffsetForLeaderTopicResult]


# -- ListOffsets -----------------------------------------------------------------------------

@dataclass(slots=True)
class ListOffsetsPartition:
    partition: int
    timestamp: int                       # ms, or LATEST_TIMESTAMP / EARLIEST_TIMESTAMP


@dataclass(slots=True)
class ListOffsetsTopic:
    topic: str
    partitions: list[ListOffsetsPartition]


@dataclass(slots=True)
class ListOffsetsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.LIST_OFFSETS
    replica_id: int
    isolation_level: int
    topics: list[ListOffsetsTopic]


@dataclass(slots=True)
class ListOffsetsPartitionResponse:
    partition: int
    error_code: int = 0
    timestamp: int = -1
    offset: int = -1
    leader_epoch: int = -1


@dataclass(slots=True)
class ListOffsetsTopicResponse:
    topic: str
    partitions: list[ListOffsetsPartitionResponse]


@dataclass(slots=True)
class ListOffsetsResponse:
    topics: list[ListOffsetsTopicResponse]


# -- the tables codecs use -------------------------------------------------------------------

REQUEST_TYPES: dict[int, type] = {
    ApiKey.API_VERSIONS: ApiVersionsRequest,
    ApiKey.METADATA: MetadataRequest,
    ApiKey.PRODUCE: ProduceRequest,
    ApiKey.FETCH: FetchRequest,
    ApiKey.LIST_OFFSETS: ListOffsetsRequest,
    ApiKey.CREATE_TOPICS: _admin.CreateTopicsRequest,
    ApiKey.DELETE_TOPICS: _admin.DeleteTopicsRequest,
    ApiKey.CREATE_PARTITIONS: _admin.CreatePartitionsRequest,
    ApiKey.DESCRIBE_CONFIGS: _admin.DescribeConfigsRequest,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: _admin.IncrementalAlterConfigsRequest,
    ApiKey.DESCRIBE_TOPIC_PARTITIONS: _admin.DescribeTopicPartitionsRequest,
    ApiKey.INIT_PRODUCER_ID: _admin.InitProducerIdRequest,
    ApiKey.OFFSET_FOR_LEADER_EPOCH: OffsetForLeaderEpochRequest,
    ApiKey.FIND_COORDINATOR: _groups.FindCoordinatorRequest,
    ApiKey.CONSUMER_GROUP_HEARTBEAT: _groups.ConsumerGroupHeartbeatRequest,
    ApiKey.CONSUMER_GROUP_DESCRIBE: _groups.ConsumerGroupDescribeRequest,
    ApiKey.OFFSET_COMMIT: _groups.OffsetCommitRequest,
    ApiKey.OFFSET_FETCH: _groups.OffsetFetchRequest,
    ApiKey.LIST_GROUPS: _groups.ListGroupsRequest,
    ApiKey.DELETE_GROUPS: _groups.DeleteGroupsRequest,
}

RESPONSE_TYPES: dict[int, type] = {
    ApiKey.API_VERSIONS: ApiVersionsResponse,
    ApiKey.METADATA: MetadataResponse,
    ApiKey.PRODUCE: ProduceResponse,
    ApiKey.FETCH: FetchResponse,
    ApiKey.LIST_OFFSETS: ListOffsetsResponse,
    ApiKey.CREATE_TOPICS: _admin.CreateTopicsResponse,
    ApiKey.DELETE_TOPICS: _admin.DeleteTopicsResponse,
    ApiKey.CREATE_PARTITIONS: _admin.CreatePartitionsResponse,
    ApiKey.DESCRIBE_CONFIGS: _admin.DescribeConfigsResponse,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: _admin.IncrementalAlterConfigsResponse,
    ApiKey.DESCRIBE_TOPIC_PARTITIONS: _admin.DescribeTopicPartitionsResponse,
    ApiKey.INIT_PRODUCER_ID: _admin.InitProducerIdResponse,
    ApiKey.OFFSET_FOR_LEADER_EPOCH: OffsetForLeaderEpochResponse,
    ApiKey.FIND_COORDINATOR: _groups.FindCoordinatorResponse,
    ApiKey.CONSUMER_GROUP_HEARTBEAT: _groups.ConsumerGroupHeartbeatResponse,
    ApiKey.CONSUMER_GROUP_DESCRIBE: _groups.ConsumerGroupDescribeResponse,
    ApiKey.OFFSET_COMMIT: _groups.OffsetCommitResponse,
    ApiKey.OFFSET_FETCH: _groups.OffsetFetchResponse,
    ApiKey.LIST_GROUPS: _groups.ListGroupsResponse,
    ApiKey.DELETE_GROUPS: _groups.DeleteGroupsResponse,
}

# Every API has both; an API only one codec speaks (Kafka's classic groups) is in these
# tables too, and a codec serves the subset it has schemas for.
assert set(REQUEST_TYPES) == set(RESPONSE_TYPES) <= set(ApiKey)
assert all(cls.API_KEY == key for key, cls in REQUEST_TYPES.items())  # type: ignore[attr-defined]
