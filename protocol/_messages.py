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

Theory of operation: `native/` converts a msgpack payload to the request
class of its API key (`REQUEST_TYPES`) and a response object back to a map;
`minilog.broker.handlers` routes on the request's class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._api import ApiKey

__all__ = [
    "Records",
    "RequestHeader",
    "BadRequest",
    "ErrorResponse",
    "TopicPartitions",
    "TopicResult",
    "ApiVersionsRequest", "ApiVersionsResponse",
    "MetadataRequest", "MetadataResponse", "MetadataBroker", "MetadataTopic", "PartitionMetadata",
    "ProduceRequest", "ProduceTopic", "ProducePartition",
    "ProduceResponse", "ProduceTopicResponse", "ProducePartitionResponse",
    "FetchRequest", "FetchTopic", "FetchPartition",
    "FetchResponse", "FetchTopicResponse", "FetchPartitionResponse",
    "ListOffsetsRequest", "ListOffsetsTopic", "ListOffsetsPartition",
    "ListOffsetsResponse", "ListOffsetsTopicResponse", "ListOffsetsPartitionResponse",
    "CreateTopicsRequest", "CreatableTopic", "CreateTopicsResponse",
    "DeleteTopicsRequest", "DeleteTopicsResponse",
    "CreatePartitionsRequest", "CreatePartitionsTopic", "CreatePartitionsResponse",
    "DescribeConfigsRequest", "DescribeConfigsResource", "DescribeConfigsResponse",
    "DescribeConfigsResult", "DescribeConfigsEntry",
    "IncrementalAlterConfigsRequest", "AlterConfigsResource", "AlterableConfig",
    "IncrementalAlterConfigsResponse", "AlterConfigsResult",
    "DescribeTopicPartitionsRequest", "DescribeTopicPartitionsResponse",
    "DescribedTopic", "DescribedPartition",
    "InitProducerIdRequest", "InitProducerIdResponse",
    "FindCoordinatorRequest", "FindCoordinatorResponse", "Coordinator",
    "ConsumerGroupHeartbeatRequest", "ConsumerGroupHeartbeatResponse",
    "ConsumerGroupDescribeRequest", "ConsumerGroupDescribeResponse", "DescribedGroup",
    "DescribedGroupMember",
    "OffsetCommitRequest", "OffsetCommitTopic", "OffsetCommitPartition",
    "OffsetCommitResponse", "OffsetCommitTopicResponse", "OffsetCommitPartitionResponse",
    "OffsetFetchRequest", "OffsetFetchResponse", "OffsetFetchTopicResponse",
    "OffsetFetchPartitionResponse",
    "ListGroupsRequest", "ListGroupsResponse", "ListedGroup",
    "DeleteGroupsRequest", "DeleteGroupsResponse", "DeleteGroupsResult",
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


# -- shared shapes ---------------------------------------------------------------------------

@dataclass(slots=True)
class TopicPartitions:
    topic: str
    partitions: list[int]


@dataclass(slots=True)
class TopicResult:
    name: str
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


@dataclass(slots=True)
class FetchTopicResponse:
    topic: str
    partitions: list[FetchPartitionResponse]


@dataclass(slots=True)
class FetchResponse:
    error_code: int
    topics: list[FetchTopicResponse]


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


# -- topic administration --------------------------------------------------------------------

@dataclass(slots=True)
class CreatableTopic:
    name: str
    num_partitions: int                  # -1: the broker's num.partitions
    replication_factor: int              # -1: the broker's default.replication.factor
    configs: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CreateTopicsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.CREATE_TOPICS
    topics: list[CreatableTopic]
    timeout_ms: int
    validate_only: bool = False


@dataclass(slots=True)
class CreateTopicsResponse:
    topics: list[TopicResult]


@dataclass(slots=True)
class DeleteTopicsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.DELETE_TOPICS
    topics: list[str]
    timeout_ms: int


@dataclass(slots=True)
class DeleteTopicsResponse:
    topics: list[TopicResult]


@dataclass(slots=True)
class CreatePartitionsTopic:
    name: str
    count: int


@dataclass(slots=True)
class CreatePartitionsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.CREATE_PARTITIONS
    topics: list[CreatePartitionsTopic]
    timeout_ms: int
    validate_only: bool = False


@dataclass(slots=True)
class CreatePartitionsResponse:
    results: list[TopicResult]


@dataclass(slots=True)
class DescribeConfigsResource:
    resource_type: int                   # RESOURCE_TOPIC or RESOURCE_BROKER
    resource_name: str
    config_names: list[str] | None = None


@dataclass(slots=True)
class DescribeConfigsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.DESCRIBE_CONFIGS
    resources: list[DescribeConfigsResource]


@dataclass(slots=True)
class DescribeConfigsEntry:
    name: str
    value: str | None
    read_only: bool
    is_default: bool
    source: str                          # TOPIC_CONFIG | STATIC_BROKER_CONFIG | DEFAULT_CONFIG


@dataclass(slots=True)
class DescribeConfigsResult:
    resource_type: int
    resource_name: str
    error_code: int = 0
    error_message: str | None = None
    configs: list[DescribeConfigsEntry] = field(default_factory=list)


@dataclass(slots=True)
class DescribeConfigsResponse:
    results: list[DescribeConfigsResult]


@dataclass(slots=True)
class AlterableConfig:
    name: str
    op: int                              # CONFIG_OP_SET or CONFIG_OP_DELETE
    value: str | None = None


@dataclass(slots=True)
class AlterConfigsResource:
    resource_type: int
    resource_name: str
    configs: list[AlterableConfig]


@dataclass(slots=True)
class IncrementalAlterConfigsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.INCREMENTAL_ALTER_CONFIGS
    resources: list[AlterConfigsResource]
    validate_only: bool = False


@dataclass(slots=True)
class AlterConfigsResult:
    resource_type: int
    resource_name: str
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True)
class IncrementalAlterConfigsResponse:
    results: list[AlterConfigsResult]


@dataclass(slots=True)
class DescribeTopicPartitionsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.DESCRIBE_TOPIC_PARTITIONS
    topics: list[str] | None = None


@dataclass(slots=True)
class DescribedPartition:
    partition: int
    error_code: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    log_start_offset: int = -1
    log_end_offset: int = -1
    high_watermark: int = -1
    size_bytes: int = -1


@dataclass(slots=True)
class DescribedTopic:
    topic: str
    error_code: int
    partitions: list[DescribedPartition]
    is_internal: bool = False


@dataclass(slots=True)
class DescribeTopicPartitionsResponse:
    topics: list[DescribedTopic]


@dataclass(slots=True)
class InitProducerIdRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.INIT_PRODUCER_ID
    transactional_id: str | None
    transaction_timeout_ms: int
    producer_id: int = -1
    producer_epoch: int = -1


@dataclass(slots=True)
class InitProducerIdResponse:
    error_code: int
    producer_id: int
    producer_epoch: int
    error_message: str | None = None


# -- consumer groups -------------------------------------------------------------------------

@dataclass(slots=True)
class FindCoordinatorRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.FIND_COORDINATOR
    key_type: int                        # 0: group
    keys: list[str]


@dataclass(slots=True)
class Coordinator:
    key: str
    node_id: int = -1
    host: str = ""
    port: int = -1
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True)
class FindCoordinatorResponse:
    coordinators: list[Coordinator]


@dataclass(slots=True)
class ConsumerGroupHeartbeatRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.CONSUMER_GROUP_HEARTBEAT
    group_id: str
    member_id: str                       # "" to join; the coordinator assigns one
    member_epoch: int                    # 0 to join, -1 to leave, else the current epoch
    rebalance_timeout_ms: int
    subscribed_topic_names: list[str] | None     # None: unchanged since the last heartbeat
    server_assignor: str | None
    topic_partitions: list[TopicPartitions] | None   # partitions the member owns now
    client_id: str
    session_timeout_ms: int | None = None        # None: the broker's default


@dataclass(slots=True)
class ConsumerGroupHeartbeatResponse:
    error_code: int
    error_message: str | None
    member_id: str | None
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: list[TopicPartitions] | None     # None: unchanged


@dataclass(slots=True)
class ConsumerGroupDescribeRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.CONSUMER_GROUP_DESCRIBE
    group_ids: list[str]


@dataclass(slots=True)
class DescribedGroupMember:
    member_id: str
    client_id: str
    client_host: str
    member_epoch: int
    subscribed_topic_names: list[str]
    assignment: list[TopicPartitions]


@dataclass(slots=True)
class DescribedGroup:
    group_id: str
    error_code: int = 0
    error_message: str | None = None
    group_state: str = "empty"          # empty | assigning | reconciling | stable | dead
    group_epoch: int = 0
    assignment_epoch: int = 0
    assignor_name: str = ""
    members: list[DescribedGroupMember] = field(default_factory=list)


@dataclass(slots=True)
class ConsumerGroupDescribeResponse:
    groups: list[DescribedGroup]


@dataclass(slots=True)
class OffsetCommitPartition:
    partition: int
    committed_offset: int
    committed_leader_epoch: int = -1
    committed_metadata: str | None = None


@dataclass(slots=True)
class OffsetCommitTopic:
    topic: str
    partitions: list[OffsetCommitPartition]


@dataclass(slots=True)
class OffsetCommitRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.OFFSET_COMMIT
    group_id: str
    member_id: str
    member_epoch: int                    # -1 for a commit outside group membership
    topics: list[OffsetCommitTopic]


@dataclass(slots=True)
class OffsetCommitPartitionResponse:
    partition: int
    error_code: int


@dataclass(slots=True)
class OffsetCommitTopicResponse:
    topic: str
    partitions: list[OffsetCommitPartitionResponse]


@dataclass(slots=True)
class OffsetCommitResponse:
    topics: list[OffsetCommitTopicResponse]


@dataclass(slots=True)
class OffsetFetchRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.OFFSET_FETCH
    group_id: str
    member_id: str | None
    member_epoch: int
    topics: list[TopicPartitions] | None     # None: every partition the group committed


@dataclass(slots=True)
class OffsetFetchPartitionResponse:
    partition: int
    committed_offset: int
    committed_leader_epoch: int
    metadata: str | None
    error_code: int = 0


@dataclass(slots=True)
class OffsetFetchTopicResponse:
    topic: str
    partitions: list[OffsetFetchPartitionResponse]


@dataclass(slots=True)
class OffsetFetchResponse:
    error_code: int
    topics: list[OffsetFetchTopicResponse]


@dataclass(slots=True)
class ListGroupsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.LIST_GROUPS
    states_filter: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ListedGroup:
    group_id: str
    protocol_type: str
    group_state: str


@dataclass(slots=True)
class ListGroupsResponse:
    error_code: int
    groups: list[ListedGroup]


@dataclass(slots=True)
class DeleteGroupsRequest:
    API_KEY: ClassVar[ApiKey] = ApiKey.DELETE_GROUPS
    group_ids: list[str]


@dataclass(slots=True)
class DeleteGroupsResult:
    group_id: str
    error_code: int


@dataclass(slots=True)
class DeleteGroupsResponse:
    results: list[DeleteGroupsResult]


# -- the tables codecs use -------------------------------------------------------------------

REQUEST_TYPES: dict[int, type] = {cls.API_KEY: cls for cls in (
    ApiVersionsRequest, MetadataRequest, ProduceRequest, FetchRequest, ListOffsetsRequest,
    CreateTopicsRequest, DeleteTopicsRequest, CreatePartitionsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, DescribeTopicPartitionsRequest, InitProducerIdRequest,
    FindCoordinatorRequest, ConsumerGroupHeartbeatRequest, ConsumerGroupDescribeRequest,
    OffsetCommitRequest, OffsetFetchRequest, ListGroupsRequest, DeleteGroupsRequest)}

RESPONSE_TYPES: dict[int, type] = {
    ApiKey.API_VERSIONS: ApiVersionsResponse,
    ApiKey.METADATA: MetadataResponse,
    ApiKey.PRODUCE: ProduceResponse,
    ApiKey.FETCH: FetchResponse,
    ApiKey.LIST_OFFSETS: ListOffsetsResponse,
    ApiKey.CREATE_TOPICS: CreateTopicsResponse,
    ApiKey.DELETE_TOPICS: DeleteTopicsResponse,
    ApiKey.CREATE_PARTITIONS: CreatePartitionsResponse,
    ApiKey.DESCRIBE_CONFIGS: DescribeConfigsResponse,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: IncrementalAlterConfigsResponse,
    ApiKey.DESCRIBE_TOPIC_PARTITIONS: DescribeTopicPartitionsResponse,
    ApiKey.INIT_PRODUCER_ID: InitProducerIdResponse,
    ApiKey.FIND_COORDINATOR: FindCoordinatorResponse,
    ApiKey.CONSUMER_GROUP_HEARTBEAT: ConsumerGroupHeartbeatResponse,
    ApiKey.CONSUMER_GROUP_DESCRIBE: ConsumerGroupDescribeResponse,
    ApiKey.OFFSET_COMMIT: OffsetCommitResponse,
    ApiKey.OFFSET_FETCH: OffsetFetchResponse,
    ApiKey.LIST_GROUPS: ListGroupsResponse,
    ApiKey.DELETE_GROUPS: DeleteGroupsResponse,
}

assert set(REQUEST_TYPES) == set(RESPONSE_TYPES) == set(ApiKey)
